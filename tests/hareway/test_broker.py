"""`python -m hareway.broker`, the check `make run` starts with."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hareway.broker import redact
from tests.support.processes import free_port


def check(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hareway.broker"],
        env={"RABBITMQ_URL": url, "PATH": ""},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.timeout(60)
def test_no_broker_stops_and_names_both_ways_to_get_one() -> None:
    result = check(f"amqp://guest:secret@127.0.0.1:{free_port()}/")

    assert result.returncode == 1
    assert "docker compose -f infra/compose.yaml" in result.stderr
    assert "rabbitmq-server" in result.stderr
    assert "secret" not in result.stderr  # the password is not printed


@pytest.mark.timeout(60)
def test_a_broker_that_answers_passes(rabbitmq_url: str) -> None:
    result = check(rabbitmq_url)
    assert result.returncode == 0, result.stderr
    assert "RabbitMQ answers" in result.stdout


def test_redact_hides_only_the_password() -> None:
    assert redact("amqp://user:pw@host:5672/v") == "amqp://user:***@host:5672/v"
    assert redact("amqp://host/") == "amqp://host/"
