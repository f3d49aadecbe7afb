"""The reference gateway people write from tutorials: FastAPI + aio-pika, kept as written.

One confirm awaited per request on one shared channel, batch messages awaited one by one,
pydantic models in and out. `make bench` runs it under the same load as hareway.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
from fastapi import FastAPI
from pydantic import BaseModel


class Envelope(BaseModel):
    routing_key: str
    payload: Any
    headers: dict[str, Any] = {}


class Batch(BaseModel):
    messages: list[Envelope]


state: dict[str, Any] = {}


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    connection = await aio_pika.connect_robust(os.environ["RABBITMQ_URL"])
    state["channel"] = await connection.channel(publisher_confirms=True)
    yield
    await connection.close()


app = FastAPI(lifespan=lifespan)


@app.post("/v1/exchanges/{exchange}/messages", status_code=202)
async def publish(exchange: str, envelope: Envelope) -> dict[str, str]:
    target = await state["channel"].get_exchange(exchange)
    message = aio_pika.Message(
        body=json.dumps(envelope.payload).encode(),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        headers=envelope.headers,
    )
    await target.publish(message, routing_key=envelope.routing_key, mandatory=True)
    return {"status": "confirmed"}


@app.post("/v1/exchanges/{exchange}/batch", status_code=202)
async def publish_batch(exchange: str, batch: Batch) -> dict[str, int]:
    target = await state["channel"].get_exchange(exchange)
    for envelope in batch.messages:
        message = aio_pika.Message(
            body=json.dumps(envelope.payload).encode(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await target.publish(message, routing_key=envelope.routing_key, mandatory=True)
    return {"published": len(batch.messages)}
