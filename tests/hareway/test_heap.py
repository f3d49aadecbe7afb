"""`freeze_startup_heap`: once per process, with the garbage collected first."""

from __future__ import annotations

import gc
import weakref

import pytest

from hareway.heap import freeze_startup_heap


class _Cycle:
    partner: _Cycle | None = None


@pytest.mark.timeout(30)
def test_the_heap_is_frozen_once_and_its_garbage_is_not_pinned() -> None:
    first_freeze = gc.get_freeze_count() == 0
    garbage = _Cycle()
    garbage.partner = _Cycle()
    garbage.partner.partner = garbage
    alive = weakref.ref(garbage)
    del garbage
    freeze_startup_heap()
    frozen = gc.get_freeze_count()
    assert frozen > 0
    if first_freeze:
        # Collected before the freeze: frozen, a cycle would never be collected.
        assert alive() is None
    freeze_startup_heap()  # a second app in the same process freezes nothing more
    assert gc.get_freeze_count() == frozen
