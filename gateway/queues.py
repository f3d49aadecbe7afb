"""Which queues the gateway knows, so a read of a misspelt one answers 404, not an empty 200.

A queue is known when the topology declares it (its retry and dead-letter queues too), the
store holds a row of it (a queue since deleted from the broker still has its history), or
the broker has it (a passive declare on a lookup channel of the publisher, gateway/
exchanges.py: a missing queue closes that channel, never a shared one). A known queue is
trusted for `ttl_s`; a missing one is answered 404 for `missing_ttl_s` without asking again
(at most `_REMEMBERED` names). A broker that cannot be asked does not turn reads into
errors: the queue is taken as known, and not remembered.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

from gateway.errors import BrokerError, QueueNotFound
from gateway.publisher import Publisher
from hareway.store import Messages
from hareway.topology import Topology
from hareway.wire import short_string_problem

_REMEMBERED = 10_000


class KnownQueues:
    def __init__(
        self,
        topology: Topology,
        store: Messages,
        publisher: Publisher,
        *,
        ttl_s: float,
        missing_ttl_s: float,
    ) -> None:
        self._declared = {queue.name for queue in topology.expanded().queues}
        self._store = store
        self._publisher = publisher
        self._ttl_s = ttl_s
        self._missing_ttl_s = missing_ttl_s
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._missing: OrderedDict[str, float] = OrderedDict()
        self._lookups: dict[str, asyncio.Future[bool]] = {}

    async def ensure(self, queue: str) -> None:
        """Return if `queue` is known; raise `QueueNotFound` (or `StoreUnavailable`)."""
        if queue in self._declared:
            return
        now = time.monotonic()
        seen = self._seen.get(queue)
        if seen is not None and now < seen:
            return
        missing = self._missing.get(queue)
        if missing is not None and now < missing:
            raise QueueNotFound(f"no queue {queue!r} on the broker or in the store")
        lookup = self._lookups.get(queue)
        if lookup is None:
            # Concurrent reads of the same unknown queue share one lookup.
            lookup = asyncio.ensure_future(self._look_up(queue))
            self._lookups[queue] = lookup
            lookup.add_done_callback(lambda _: self._lookups.pop(queue, None))
        if not await asyncio.shield(lookup):
            raise QueueNotFound(f"no queue {queue!r} on the broker or in the store")

    async def _look_up(self, queue: str) -> bool:
        # No AMQP queue can have a name that is not a short string: no need to ask.
        if short_string_problem(queue) is not None:
            found = False
        elif await self._store.holds(queue):
            found = True
        else:
            try:
                found = await self._publisher.queue_exists(queue)
            except BrokerError:
                return True
        if found:
            _remember(self._seen, queue, self._ttl_s)
        else:
            _remember(self._missing, queue, self._missing_ttl_s)
        return found


def _remember(names: OrderedDict[str, float], name: str, ttl_s: float) -> None:
    names[name] = time.monotonic() + ttl_s
    names.move_to_end(name)
    while len(names) > _REMEMBERED:
        names.popitem(last=False)
