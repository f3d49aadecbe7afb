"""The hostile suite's consumer service: `python -m consumers --app tests.hostile.handlers:app`.

One queue's handler writes to a table that does not exist: its own SQL fails on every
message, which must send each down the retry ladder, never stall the queue or look like a
store outage. The queue comes from HAREWAY_HOSTILE_HANDLED_QUEUE, read when the consumer
imports this module.
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers import Consumer, Message

app = Consumer()

_missing = sa.Table("hareway_hostile_no_such_table", sa.MetaData(), sa.Column("id", sa.String(255)))


async def write_to_a_missing_table(message: Message, tx: AsyncConnection) -> None:
    await tx.execute(_missing.insert().values(id=message.message_id))


app.handler(os.environ.get("HAREWAY_HOSTILE_HANDLED_QUEUE", "hostile.handled"))(
    write_to_a_missing_table
)
