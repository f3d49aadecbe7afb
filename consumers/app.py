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

from collections.abc import Callable, Mapping, Sequence

from pydantic import BaseModel

from consumers.errors import HandlerError
from consumers.handlers import H, Registration, SyncTransaction
from consumers.settings import ConsumerSettings

__all__ = ["Consumer", "Registration", "SyncTransaction"]


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
        # Imported here: `import consumers` stays light for code that only registers.
        from consumers.process import serve

        serve(list(queues) or list(self._handlers), self)
