"""A CPU regression guard: the publish hot path may not grow much past its committed baseline.

Counted in instructions (callgrind), not seconds, so a busy machine cannot fail it and a
quiet one cannot hide a regression. Update the baseline on purpose with
`python -m bench.cpu_guard --write` and say why in the commit.
"""

from __future__ import annotations

import json

import pytest

from bench.cpu_guard import BASELINE, ValgrindMissing, instructions_per_message

# Generous: interpreter and library updates move the count by some percent; a regression
# worth catching (an extra JSON round trip, a per-request compile) moves it by far more.
MARGIN = 1.5


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_publish_hot_path_stays_within_its_instruction_budget() -> None:
    baseline = json.loads(BASELINE.read_text())["instructions_per_message"]
    try:
        measured = instructions_per_message()
    except ValgrindMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    assert measured <= baseline * MARGIN, (
        f"{measured:,.0f} instructions per message, baseline {baseline:,}: "
        f"over {MARGIN}x; profile with `python -m bench.hotpath` before raising the baseline"
    )
