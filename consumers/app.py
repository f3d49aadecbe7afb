"""The handler API: a consumer service registers its own code per queue.

    from consumers import Consumer, Message
    from sqlalchemy.ext.asyncio import AsyncConnection

    app = Consumer()

    @app.handler("orders.persist")
    async def on_order(message: Message, tx: AsyncConnection) -> None:
        await tx.execute(orders.insert().values(id=message.payload["order_id"]))

`tx` is the transaction that stores the message row, so the handler's writes commit
atomically with it: each message's effects land exactly once (an inbox). A handler that
raises sends the message down the queue's retry ladder; `raise DeadLetter(...)` (or a
payload that fails the handler's pydantic `model`) dead-letters it at once. A plain `def`
handler runs in a worker thread and gets a `SyncTransaction` with the same statements.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from pydantic import BaseModel, ValidationError
from sqlalchemy import CursorResult, Executable
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers.errors import DeadLetter, HandlerError
from consumers.message import Message
from consumers.settings import ConsumerSettings

AsyncHandler = Callable[[Message, AsyncConnection], Awaitable[None]]
SyncHandler = Callable[[Message, "SyncTransaction"], None]
H = TypeVar("H", AsyncHandler, SyncHandler)


class SyncTransaction:
    """The store transaction for a handler running in a worker thread.

    Each statement runs on the event loop (which owns the connection); the thread waits.
    """

    def __init__(self, tx: AsyncConnection, loop: asyncio.AbstractEventLoop) -> None:
        self._tx = tx
        self._loop = loop

    def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[Any]:
        done: Future[CursorResult[Any]] = asyncio.run_coroutine_threadsafe(
            self._tx.execute(statement, parameters), self._loop
        )
        return done.result()


@dataclass(frozen=True, slots=True)
class Registration:
    queue: str
    function: AsyncHandler | SyncHandler
    model: type[BaseModel] | None = None

    async def __call__(self, message: Message, tx: AsyncConnection) -> None:
        if self.model is not None:
            message = _validated(message, self.model)
        if inspect.iscoroutinefunction(self.function):
            await cast(AsyncHandler, self.function)(message, tx)
            return
        # Sync code may block (time.sleep, requests): never on the event loop.
        sync = SyncTransaction(tx, asyncio.get_running_loop())
        await asyncio.to_thread(cast(SyncHandler, self.function), message, sync)


def _validated(message: Message, model: type[BaseModel]) -> Message:
    try:
        payload = model.model_validate_json(message.body)
    except ValidationError as exc:
        raise DeadLetter(f"fails the schema {model.__name__}: {exc}") from None
    return dataclasses.replace(message, payload=payload)


class Consumer:
    """A registry of handlers, one per queue, and the entry point that runs them."""

    def __init__(self, settings: ConsumerSettings | None = None) -> None:
        self.settings = settings
        self._handlers: dict[str, Registration] = {}

    def handler(self, queue: str, *, model: type[BaseModel] | None = None) -> Callable[[H], H]:
        """Register the decorated function (async or sync) as `queue`'s handler."""

        def register(function: H) -> H:
            if queue in self._handlers:
                raise HandlerError(f"queue {queue!r} already has a handler")
            self._handlers[queue] = Registration(queue, function, model)
            return function

        return register

    @property
    def handlers(self) -> Mapping[str, Registration]:
        return dict(self._handlers)

    def run(self, queues: Sequence[str] = ()) -> None:
        """Consume `queues` (default: every queue with a handler) until SIGTERM."""
        # Imported here: the entry point imports this module for `--app`.
        from consumers.__main__ import serve

        serve(list(queues) or list(self._handlers), self)
