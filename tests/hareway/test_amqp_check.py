"""A missing internal of the AMQP libraries stops each process at start with one line naming
the installed and the supported versions, not a traceback and not an override that
silently never runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hareway.amqp import SUPPORTED

# What an aio-pika minor that renamed the connect attempt hareway overrides would look like.
SABOTAGE = (
    "from aio_pika.robust_connection import RobustConnection\n"
    "del RobustConnection._RobustConnection__connect_transport\n"
)


@pytest.mark.parametrize(
    ("entry", "args", "prefix"),
    [
        ("from gateway.__main__ import cli", ["--port", "1"], "gateway: "),
        ("from consumers.__main__ import cli", ["--queue", "q"], "consumers: "),
    ],
)
def test_a_missing_shape_stops_the_process_with_one_line(
    entry: str, args: list[str], prefix: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"{SABOTAGE}{entry}\ncli()", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:1/", "PATH": "/usr/bin:/bin"},
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert len(lines) == 1, done.stderr
    [line] = lines
    assert line.startswith(prefix)
    assert "RobustConnection.__connect_transport" in line
    assert "aio-pika 10." in line  # the installed version
    assert SUPPORTED in line
