"""Instructions per message on the publish hot path, counted by callgrind.

`python -m bench.cpu_guard` prints the count; `--write` stores it as the baseline that
tests/test_cpu_guard.py holds the code to.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

BASELINE = Path(__file__).with_name("cpu_baseline.json")
ITERATIONS = 500
_COLLECTED = re.compile(r"Collected : (\d+)")


class ValgrindMissing(Exception):
    pass


def _instructions(iterations: int) -> int:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise ValgrindMissing("valgrind is needed to count instructions: apt-get install valgrind")
    result = subprocess.run(
        [
            valgrind,
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "bench.hotpath",
            str(iterations),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        cwd=Path(__file__).resolve().parent.parent,
        check=True,
    )
    match = _COLLECTED.search(result.stderr)
    if match is None:
        raise RuntimeError(f"callgrind printed no total:\n{result.stderr[-2000:]}")
    return int(match.group(1))


def instructions_per_message() -> float:
    """The difference of two runs, so interpreter start and imports cancel out."""
    return (_instructions(ITERATIONS) - _instructions(0)) / ITERATIONS


def main() -> None:
    per_message = instructions_per_message()
    print(f"{per_message:,.0f} instructions per message")
    if "--write" in sys.argv:
        BASELINE.write_text(json.dumps({"instructions_per_message": round(per_message)}) + "\n")
        print(f"baseline written to {BASELINE}")


if __name__ == "__main__":
    main()
