"""Testing a consumer service without a broker: `TestConsumer` runs your handlers on messages
as `python -m consumers` does, in your test's event loop.

    from consumers.testing import TestConsumer

    async with TestConsumer(app, topology="topology.yaml") as consumer:
        outcome = await consumer.deliver("orders.persist", {"order_id": 42})
        assert outcome.status == "persisted"

What runs is the runtime's own code: the delivery is decoded (the topology's JSON Schemas,
content encodings, undecodable properties), committed in one transaction with the handler
in a savepoint, and a failure goes down the queue's retry ladder with its attempt count
in the headers, then to the dead letters after `max_attempts`; a handler that raises
`DeadLetter` skips the ladder. Only the broker is left out: the ladder's delays are not
waited, and the message comes straight back as the delay queue would send it.

The store is a real SQLite file in a temporary directory by default, so a handler's `tx`
is the SQLAlchemy connection it gets in production; `database_url` names another (a
PostgreSQL), `store` a `hareway.store.MemoryStore` for handlers that write no SQL.
See docs/testing.md.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar, cast

import orjson
from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp import commands as spec
from pamqp.header import ContentHeader
from sqlalchemy import Connection, Executable, Row
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers.batch import BatchProcessor, Item
from consumers.decode import decode
from consumers.handlers import Handlers
from consumers.retry import retry_properties
from consumers.settings import ConsumerSettings
from hareway.schemas import SchemaRules
from hareway.store import Store, open_store
from hareway.topology import Topology, load_topology
from hareway.wire import PERSISTENT

__all__ = ["Outcome", "TestConsumer"]

T = TypeVar("T")

_UNSET: Any = object()


@dataclass(frozen=True, slots=True)
class Outcome:
    """Where one message ended up, and how it got there."""

    message_id: str
    # persisted; dead_lettered (poison, DeadLetter, out of attempts, refused by the store);
    # conflict: its id was stored earlier with another body (kept beside the first).
    status: Literal["persisted", "dead_lettered", "conflict"]
    # Deliveries it took: 1 when the first one settled it.
    attempts: int
    # The error of each failed attempt, and the delay the ladder gave each retry.
    errors: list[str] = field(default_factory=list)
    delays_ms: list[int] = field(default_factory=list)

    @property
    def last_error(self) -> str | None:
        return self.errors[-1] if self.errors else None


class TestConsumer:
    __test__ = False  # a helper, not a test class for pytest to collect

    def __init__(
        self,
        app: Handlers | None = None,
        *,
        topology: Topology | str | Path | None = None,
        database_url: str | None = None,
        store: Store | None = None,
        settings: ConsumerSettings | None = None,
    ) -> None:
        self._app = app
        self._topology = topology
        self._database_url = database_url
        self._given_store = store
        self._settings = settings or (app.settings if app is not None else None)
        self._store: Store | None = None
        self._directory: str | None = None
        self._tags = itertools.count(1)

    async def __aenter__(self) -> Self:
        topology = self._topology
        if not isinstance(topology, Topology):
            topology = load_topology(None if topology is None else str(topology))
        self.topology = topology
        self._schemas = SchemaRules(topology.schemas)
        if self._given_store is not None:
            self._store = self._given_store
        else:
            url = self._database_url
            if url is None:
                self._directory = tempfile.mkdtemp(prefix="hareway-test-")
                url = f"sqlite+aiosqlite:///{Path(self._directory) / 'hareway.db'}"
            self._store = await open_store(url)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._store is not None and self._given_store is None:
            await self._store.close()
        self._store = None
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)

    @property
    def store(self) -> Store:
        """What the runtime stored: `page`, `dead_letters`, `deliveries`, `count`, ..."""
        if self._store is None:
            raise RuntimeError("use TestConsumer in `async with`")
        return self._store

    async def run_sync(self, work: Callable[[Connection], T]) -> T:
        """Run `work` on the store's connection in a transaction of its own, e.g.
        `metadata.create_all` for the tables a handler writes."""
        async with self.store.transaction() as tx:
            connection = cast(AsyncConnection, tx.handler_tx)
            return await connection.run_sync(work)

    async def execute(self, statement: Executable) -> Sequence[Row[Any]]:
        """Run a statement on the store (your handler's tables), committed; its rows."""
        async with self.store.transaction() as tx:
            connection = cast(AsyncConnection, tx.handler_tx)
            result = await connection.execute(statement)
            return result.all() if result.returns_rows else []

    async def deliver(
        self,
        queue: str,
        payload: Any = _UNSET,
        *,
        body: bytes | None = None,
        content_type: str | None = "application/json",
        message_id: str | None = None,
        headers: dict[str, Any] | None = None,
        exchange: str = "",
        routing_key: str | None = None,
        **properties: Any,
    ) -> Outcome:
        """Deliver one message to `queue` and follow it until it is settled: stored, or
        dead-lettered (down the ladder first, if the queue has one and the handler raises).

        `payload` is sent as its JSON; `body` as it is. `properties` are AMQP properties
        (`correlation_id`, `content_encoding`, `timestamp`, ...)."""
        if (payload is _UNSET) == (body is None):
            raise TypeError("give a payload (sent as JSON) or a body (bytes), not both")
        raw = orjson.dumps(payload) if body is None else body
        message = self._delivery(
            exchange,
            queue if routing_key is None else routing_key,
            raw,
            spec.Basic.Properties(
                content_type=content_type,
                message_id=message_id,
                headers=headers,
                delivery_mode=PERSISTENT,
                timestamp=properties.pop("timestamp", datetime.now(UTC)),
                **properties,
            ),
        )
        return await self._settle(queue, message)

    async def _settle(self, queue: str, message: DeliveredMessage) -> Outcome:
        settings = self._settings or ConsumerSettings(_env_file=None)
        spec_ = self.topology.queue(queue)
        retry = spec_.retry if spec_ is not None else None

        def delay_ms(attempts: int) -> int | None:
            return None if retry is None else retry.delay_before_next(attempts)

        handler = self._app.handlers.get(queue) if self._app is not None else None
        processor = BatchProcessor(self.store, queue, handler, delay_ms)
        errors: list[str] = []
        delays: list[int] = []
        while True:
            decoded = decode(queue, message, self._schemas, settings.max_decoded_body_bytes)
            outcome = await processor.process([Item(decoded, message)])
            record = decoded.record
            if outcome.conflicts:
                return Outcome(record.message_id, "conflict", record.attempts, errors, delays)
            if not outcome.failures:
                return Outcome(record.message_id, "persisted", record.attempts, errors, delays)
            [failure] = outcome.failures
            errors.append(failure.error)
            if failure.delay_ms is None:
                # Stored as a dead letter in the batch's own transaction.
                return Outcome(record.message_id, "dead_lettered", record.attempts, errors, delays)
            delays.append(failure.delay_ms)
            # Back from its delay queue: through the default exchange, to this queue only.
            message = self._delivery(
                "", queue, message.body, retry_properties(decoded, message, failure.error)
            )

    def _delivery(
        self, exchange: str, routing_key: str, body: bytes, properties: spec.Basic.Properties
    ) -> DeliveredMessage:
        return DeliveredMessage(
            delivery=spec.Basic.Deliver(
                consumer_tag="test",
                delivery_tag=next(self._tags),
                exchange=exchange,
                routing_key=routing_key,
            ),
            header=ContentHeader(body_size=len(body), properties=properties),
            body=body,
            # Nothing acks here: the runtime's worker does that, after the commit.
            channel=cast(AbstractChannel, None),
        )
