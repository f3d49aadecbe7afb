"""Durations as people write them in the topology file: "500ms", "1s", "10s", "2m", "1h", "7d"."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def parse_ms(value: object) -> int:
    """Milliseconds from "1s" / "500ms" / "2m" / "1h", or from a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        milliseconds = round(value * 1000)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        milliseconds = round(float(match[1]) * _UNITS_MS[match[2]])
    else:
        raise ValueError(f"not a duration: {value!r} (write e.g. 500ms, 1s, 10s, 2m, 1h, 7d)")
    if milliseconds <= 0:
        raise ValueError(f"a duration must be positive: {value!r}")
    return milliseconds


def label(milliseconds: int) -> str:
    """The shortest exact name up to hours: 200ms, 1s, 90s, 2m, 1h, 24h; used in queue
    names, which must not change under a running topology (so no days here)."""
    for unit in ("h", "m", "s"):
        if milliseconds % _UNITS_MS[unit] == 0:
            return f"{milliseconds // _UNITS_MS[unit]}{unit}"
    return f"{milliseconds}ms"


# A duration field: accepts the written forms, holds milliseconds, writes back the label.
Milliseconds = Annotated[int, BeforeValidator(parse_ms), PlainSerializer(label, return_type=str)]


def long_label(milliseconds: int) -> str:
    """Like `label`, with days: 7d, 36h; for retention periods, never in a name."""
    day = _UNITS_MS["d"]
    return f"{milliseconds // day}d" if milliseconds % day == 0 else label(milliseconds)


# A retention period: the written forms, days included; writes back the long label.
LongMilliseconds = Annotated[
    int, BeforeValidator(parse_ms), PlainSerializer(long_label, return_type=str)
]
