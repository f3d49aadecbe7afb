"""A consumer service for process tests: `python -m consumers --app tests.consumers.flaky_app`.

Message n: n % 3 == 0 always fails, n % 3 == 1 fails on its first attempt, the rest succeed.
The queue comes from HAREWAY_TEST_QUEUE, read when the consumer imports this module.
"""

from __future__ import annotations

import asyncio
import os

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers import Consumer, Message

app = Consumer()


async def flaky(message: Message, tx: AsyncConnection) -> None:
    n = orjson.loads(message.body)["n"]
    await asyncio.sleep(0.001)  # some work, so a kill lands mid-batch
    if n % 3 == 0:
        raise RuntimeError(f"message {n} never works")
    if n % 3 == 1 and message.attempts == 1:
        raise RuntimeError(f"message {n} works on its second attempt")


app.handler(os.environ.get("HAREWAY_TEST_QUEUE", "orders.persist"))(flaky)
