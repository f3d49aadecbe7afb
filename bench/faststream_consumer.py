"""A FastStream subscriber as its documentation writes one: each message inserted into
SQLite with aiosqlite, committed, then acked (`AckPolicy.ACK`), one message at a time.

`python -m bench.faststream_consumer --queue Q --database FILE` consumes until stopped;
each row carries the time it was committed, so the bench counts its rate from the first
commit to the last, as it does for hareway's consumer. The subscriber is registered
without a decorator so mypy strict passes where the `bench` extra is absent.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
from typing import Any

import aiosqlite
from faststream import AckPolicy
from faststream.rabbit import RabbitBroker, RabbitQueue

SCHEMA = "CREATE TABLE IF NOT EXISTS messages (body TEXT NOT NULL, stored_at REAL NOT NULL)"


async def consume(url: str, queue: str, database: str) -> None:
    async with aiosqlite.connect(database) as db:
        await db.execute(SCHEMA)
        await db.commit()

        async def handle(body: Any) -> None:
            await db.execute(
                "INSERT INTO messages (body, stored_at) VALUES (?, ?)", (str(body), time.time())
            )
            await db.commit()

        broker = RabbitBroker(url)
        # The bench declared the queue and its binding: subscribe to it as it is.
        subscriber = broker.subscriber(
            RabbitQueue(queue, durable=True, declare=False), ack_policy=AckPolicy.ACK
        )
        subscriber(handle)
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopped.set)
        await broker.start()
        try:
            await stopped.wait()
        finally:
            await broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queue", required=True)
    parser.add_argument("--database", required=True)
    args = parser.parse_args()
    url = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
    asyncio.run(consume(url, args.queue, args.database))


if __name__ == "__main__":
    main()
