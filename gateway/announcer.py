"""Waiting for a queue's next commit: long polls and streams, fanned out from one feed.

One `Announcer` per gateway process runs the store's commit feed (hareway/store/commits.py:
LISTEN on PostgreSQL, a shared poller on SQLite) and wakes the waiters of the queues it
names. A waiter holds no database connection while it waits: it arms (takes its queue's
current event) *before* it reads, so a commit between the read and the wait still wakes
it, reads again, and waits again if that found nothing new.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from hareway.store.commits import CommitFeed

log = logging.getLogger(__name__)


class Watch:
    """One waiter's view of its queue."""

    __slots__ = ("_announcer", "_event", "queue")

    def __init__(self, announcer: Announcer, queue: str) -> None:
        self._announcer = announcer
        self.queue = queue
        self._event = announcer.event(queue)

    def arm(self) -> None:
        """Call before reading: what commits from now on wakes the next `wait`."""
        self._event = self._announcer.event(self.queue)

    async def wait(self, timeout_s: float | None) -> bool:
        """True once a commit of the queue was announced since `arm`; False when the time
        ran out or the gateway is stopping."""
        if self._announcer.closed:
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._event.wait()
        return self._event.is_set() and not self._announcer.closed


class Announcer:
    def __init__(self, feed: CommitFeed | None) -> None:
        self._feed = feed
        self._events: dict[str, asyncio.Event] = {}
        self._watchers: dict[str, int] = {}
        # Set while anyone waits: a polling feed rests otherwise.
        self._waiting = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.closed = False

    def start(self) -> None:
        if self._feed is not None:
            self._task = asyncio.create_task(self._run(self._feed), name="commit feed")

    async def _run(self, feed: CommitFeed) -> None:
        while True:
            try:
                await feed.run(self.announce, self._waiting)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug, not an outage (feeds retry those): keep the waiters served.
                log.exception("the commit feed failed; starting it again")
                self.announce(None)
                await asyncio.sleep(1)

    @property
    def waiters(self) -> int:
        return sum(self._watchers.values())

    def event(self, queue: str) -> asyncio.Event:
        event = self._events.get(queue)
        if event is None:
            event = self._events[queue] = asyncio.Event()
        return event

    def announce(self, queue: str | None) -> None:
        """Wake the waiters of `queue` (of every queue for None)."""
        if queue is None:
            events = list(self._events.values())
            self._events.clear()
        else:
            found = self._events.pop(queue, None)
            events = [] if found is None else [found]
        for event in events:
            event.set()

    @contextlib.asynccontextmanager
    async def watching(self, queue: str) -> AsyncIterator[Watch]:
        self._watchers[queue] = self._watchers.get(queue, 0) + 1
        self._waiting.set()
        try:
            yield Watch(self, queue)
        finally:
            left = self._watchers[queue] - 1
            if left:
                self._watchers[queue] = left
            else:
                del self._watchers[queue]
                self._events.pop(queue, None)
            if not self._watchers:
                self._waiting.clear()

    def close(self) -> None:
        """The gateway stops serving: every waiter answers now, none waits again."""
        self.closed = True
        self.announce(None)

    async def stop(self) -> None:
        self.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
