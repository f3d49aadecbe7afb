"""The process heap after start-up, kept out of the garbage collector's full collections."""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Put what start-up built (modules, app, schemas, engine, channels) out of the
    collector's sight.

    It lives as long as the process, yet every full collection walked all of it: under
    load one came about every second in the gateway, a 100 ms pause each (the single
    endpoint's p99 at 64 connections was that pause), and every few thousand messages in
    the consumer, 50 ms each. Once per process: a second app or runner in the same
    process (the tests) must not pin the garbage of the first.
    """
    if gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()
