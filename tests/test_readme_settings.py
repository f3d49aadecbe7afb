"""The README's settings table names every setting of both settings classes."""

from __future__ import annotations

import re
from pathlib import Path

from consumers.settings import ConsumerSettings
from gateway.settings import GatewaySettings
from hareway.config import EVERY_SETTING, setting_names

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_setting_is_in_the_readme_table() -> None:
    rows = [line for line in README.read_text().splitlines() if line.startswith("| `")]
    documented = {
        name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])
    }
    for cls in (GatewaySettings, ConsumerSettings):
        missing = {field.upper() for field in cls.model_fields} - documented
        assert not missing, f"README's settings table misses {sorted(missing)} ({cls.__name__})"


def test_every_setting_is_known_to_both_processes_warnings() -> None:
    # Each process warns about variables no setting reads, the other process's excepted.
    assert setting_names(GatewaySettings, ConsumerSettings) == EVERY_SETTING
