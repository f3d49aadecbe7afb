"""The store bench's plan check: a sequential scan of a big table is a miss, of a nearly
empty one (the planner's right choice) is not."""

from __future__ import annotations

import pytest

from bench.store import _big_seq_scan

pytestmark = pytest.mark.timeout(10)

SMALL = """Delete on conflicts  (cost=8.16..18.61 rows=0 width=0)
  ->  Seq Scan on conflicts  (cost=0.00..10.45 rows=8 width=6) (actual time=0.001 rows=0)"""
BIG = """Update on messages  (cost=474.72..522.81 rows=10 width=152)
  ->  Parallel Seq Scan on messages messages_1  (cost=0.00..91234.00 rows=2083333 width=6)"""
UNPARSED = "Seq Scan somewhere we cannot read"


@pytest.mark.parametrize(
    ("plan", "missed"),
    [(SMALL, False), (BIG, True), (UNPARSED, True), ("Index Scan using pk on messages", False)],
)
def test_only_a_big_sequential_scan_is_a_miss(plan: str, missed: bool) -> None:
    assert _big_seq_scan(plan) is missed
