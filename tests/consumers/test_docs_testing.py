"""The example in docs/testing.md, run as written: `TestConsumer` on the documented orders
service of docs/consumers.md, with pytest in a process of its own, no broker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).parents[2] / "docs"


def python_block(document: str, first_line: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / document).read_text(), flags=re.DOTALL)
    [found] = [block for block in blocks if block.startswith(first_line)]
    return str(found)


@pytest.mark.timeout(120)
def test_the_documented_tests_of_the_orders_service_pass(tmp_path: Path) -> None:
    (tmp_path / "orders_service.py").write_text(
        python_block("consumers.md", '"""orders_service.py')
    )
    (tmp_path / "test_orders_service.py").write_text(
        python_block("testing.md", '"""test_orders_service.py')
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{Path.cwd()}"}
    env.pop("RABBITMQ_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_orders_service.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout, done.stdout
