"""`hareway topology export --retention` and the validation of `retention` (no broker)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

TOPOLOGY = """
retention: {max_age: 3d, dedupe_window: 10d}
queues:
  - name: orders.persist
    retention: {max_rows: 1000, dead_letters_max_age: 30d}
  - name: orders.audit
"""


def hareway(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "from hareway.cli import app; app()", *args]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def test_export_writes_each_queues_retention_over_the_defaults(tmp_path: Path) -> None:
    topology = tmp_path / "topology.yaml"
    topology.write_text(TOPOLOGY)
    done = hareway("topology", "export", "--retention", "-f", str(topology))
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["queues"]["orders.persist"] == {
        "max_age": "3d",
        "max_rows": 1000,
        "dedupe_window": "10d",
        "dead_letters_max_age": "30d",
    }
    assert document["queues"]["orders.audit"] == document["default"]
    assert document["default"]["max_age"] == "3d"


@pytest.mark.parametrize(
    "retention",
    ["{max_age: soon}", "{max_rows: 0}", "{dedupe_window: null}", "{keep: 7d}"],
)
def test_a_bad_retention_is_refused_naming_it(tmp_path: Path, retention: str) -> None:
    topology = tmp_path / "topology.yaml"
    topology.write_text(f"queues: [{{name: q, retention: {retention}}}]\n")
    done = hareway("topology", "export", "--retention", "-f", str(topology))
    assert done.returncode != 0
    assert "retention" in done.stdout + done.stderr
