"""How a reader learns that a consumer committed, without holding a database connection.

The gateway's long polls and streams wait for news of their queue (gateway/announcer.py);
one feed per gateway process brings it:

- PostgreSQL: every consumer transaction that stores rows NOTIFYs `hareway_commits` with
  each queue's name, inside the transaction (so at its commit, and never for a rollback);
  the feed LISTENs on one dedicated asyncpg connection, reconnecting after an outage.
- SQLite (and the memory store): no notifications between processes, so the feed polls
  the store's last cursor every `poll_s` while anyone waits (an index lookup of the
  primary key's end), and asks which queues got rows since only when it moved.

A feed says `None` when commits may have been missed (it just (re)connected, or it starts
polling after a rest): every waiter then looks again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

import asyncpg
from sqlalchemy.engine import make_url

from hareway.store.errors import StoreError
from hareway.store.protocol import Messages

log = logging.getLogger(__name__)

CHANNEL = "hareway_commits"

# A queue with new rows, or None: any queue may have some.
Announce = Callable[[str | None], None]


class CommitFeed(Protocol):
    async def run(self, announce: Announce, waiting: asyncio.Event) -> None:
        """Announce commits until cancelled; `waiting` is set while anyone waits (a poller
        rests while it is clear). Never raises for an outage: it retries."""
        ...


class PolledCommits:
    def __init__(self, store: Messages, every_s: float, backoff_max_s: float = 5.0) -> None:
        self._store = store
        self._every_s = every_s
        self._backoff_max_s = backoff_max_s

    async def run(self, announce: Announce, waiting: asyncio.Event) -> None:
        last: int | None = None
        backoff = self._every_s
        while True:
            if not waiting.is_set():
                last = None
                await waiting.wait()
            try:
                cursor, queues = await self._store.commits_since(last)
            except StoreError as exc:
                log.warning("looking for new commits failed, again in %.1fs: %s", backoff, exc)
                last = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._backoff_max_s)
                continue
            backoff = self._every_s
            if last is None or cursor < last:
                # After a rest (or rows gone from the end): the waiters look for themselves.
                announce(None)
            else:
                for queue in queues:
                    announce(queue)
            last = cursor
            await asyncio.sleep(self._every_s)


class PgCommitListener:
    def __init__(
        self,
        database_url: str,
        *,
        check_every_s: float = 10.0,
        backoff_max_s: float = 5.0,
    ) -> None:
        url = make_url(database_url).set(drivername="postgresql")
        self._dsn = url.render_as_string(hide_password=False)
        self._check_every_s = check_every_s
        self._backoff_max_s = backoff_max_s
        self.connected = asyncio.Event()

    async def run(self, announce: Announce, waiting: asyncio.Event) -> None:
        backoff = 0.1
        while True:
            try:
                await self._listen(announce)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "listening for commits on PostgreSQL failed, again in %.1fs: %r",
                    backoff,
                    exc,
                )
            else:
                backoff = 0.1  # it had worked: try again at once
            self.connected.clear()
            # Waiters answer at their deadlines meanwhile; they look again when it is back.
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._backoff_max_s)

    async def _listen(self, announce: Announce) -> None:
        connection = await asyncpg.connect(self._dsn, timeout=10)
        lost = asyncio.Event()

        def on_notification(_connection: Any, _pid: int, _channel: str, payload: str) -> None:
            announce(payload)

        try:
            connection.add_termination_listener(lambda _connection: lost.set())
            await connection.add_listener(CHANNEL, on_notification)
            self.connected.set()
            announce(None)  # what committed before LISTEN took hold
            log.info("listening for commits on PostgreSQL")
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), self._check_every_s)
                if not lost.is_set():
                    # A server that vanished without a word (a cut network) shows here.
                    await connection.fetchval("SELECT 1", timeout=self._check_every_s)
            log.warning("the commit listener's connection to PostgreSQL was lost")
        finally:
            connection.terminate()


def commit_feed(store: Messages, poll_s: float) -> CommitFeed:
    """LISTEN for a PostgreSQL store, a poller for the others."""
    engine = getattr(store, "engine", None)
    if engine is not None and engine.dialect.name == "postgresql":
        return PgCommitListener(engine.url.render_as_string(hide_password=False))
    return PolledCommits(store, poll_s)
