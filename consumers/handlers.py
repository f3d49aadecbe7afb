"""What runs a user handler: the registration of one function for one queue, and the
transaction a sync handler gets in its worker thread (see `consumers.app` for the API).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

from pydantic import BaseModel, ValidationError
from sqlalchemy import CursorResult, Executable
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers.errors import DeadLetter
from consumers.message import Message
from consumers.settings import ConsumerSettings

AsyncHandler = Callable[[Message, AsyncConnection], Awaitable[None]]
SyncHandler = Callable[[Message, "SyncTransaction"], None]
H = TypeVar("H", AsyncHandler, SyncHandler)


class Handlers(Protocol):
    """What the runner needs of an app: its handlers by queue, and its settings if any."""

    @property
    def handlers(self) -> Mapping[str, Registration]: ...

    @property
    def settings(self) -> ConsumerSettings | None: ...


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
