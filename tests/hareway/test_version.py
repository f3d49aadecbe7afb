"""One version, shown by every command."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

import hareway

ROOT = Path(__file__).resolve().parents[2]


def test_the_package_metadata_has_the_one_version() -> None:
    assert version("hareway") == hareway.__version__


@pytest.mark.parametrize(
    "command",
    [
        ["-m", "gateway", "--version"],
        ["-m", "consumers", "--version"],
        ["-c", "from hareway.cli import app; app()", "--version"],
    ],
)
def test_every_command_shows_it(command: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, *command], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout) == (0, f"hareway {hareway.__version__}\n")


def test_each_package_says_it_is_typed() -> None:
    for package in ("gateway", "consumers", "hareway"):
        assert (ROOT / package / "py.typed").exists(), package
