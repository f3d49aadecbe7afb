"""Whether the broker has blocked a connection (a memory or disk alarm)."""

from __future__ import annotations

import asyncio

import aiormq

# aiormq's private event: set while the connection is not blocked.
UNBLOCKED_EVENT = "_Connection__connection_unblocked"


def is_blocked(connection: aiormq.abc.AbstractConnection) -> bool:
    """Whether the broker sent `connection.blocked` (a memory or disk alarm) and no unblock.

    aiormq tracks the Blocked/Unblocked frames only in a private event (its writer and
    `ready()` wait on it) and aio-pika exposes nothing. A blocked connection accepts
    publishes into the socket and never confirms them, so without this every request
    would hang until its timeout.
    """
    unblocked = getattr(connection, UNBLOCKED_EVENT, None)
    # `is_opened` last: aiormq's costs more than the rest together, on every publish.
    return isinstance(unblocked, asyncio.Event) and not unblocked.is_set() and connection.is_opened
