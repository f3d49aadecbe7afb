"""Durations as written in the topology file."""

from __future__ import annotations

import pytest

from hareway.durations import label, parse_ms


@pytest.mark.parametrize(
    ("written", "ms"),
    [
        ("500ms", 500),
        ("1s", 1000),
        ("0.2s", 200),
        ("10s", 10_000),
        ("2m", 120_000),
        ("1h", 3_600_000),
        (1.5, 1500),
    ],
)
def test_written_forms_become_milliseconds(written: object, ms: int) -> None:
    assert parse_ms(written) == ms


@pytest.mark.parametrize("written", ["", "1 day", "-1s", "0s", "s", True, None])
def test_nonsense_is_refused(written: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_ms(written)


@pytest.mark.parametrize(
    ("ms", "name"),
    [(200, "200ms"), (1000, "1s"), (90_000, "90s"), (120_000, "2m"), (3_600_000, "1h")],
)
def test_labels_are_short_and_exact(ms: int, name: str) -> None:
    assert label(ms) == name
