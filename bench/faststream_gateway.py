"""A FastStream gateway, as its documentation builds one: FastAPI + FastStream's
`RabbitRouter`, the broker's own `publish` with publisher confirms awaited (FastStream's
channel default), `mandatory=True` and persistent messages.

The same route and envelope as the naive gateway (bench/naive_gateway.py), so the same
load hits both; `make bench` serves it with uvicorn in a process of its own. The route
is added without a decorator so mypy strict passes where the `bench` extra is absent.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI
from faststream.rabbit import ExchangeType, RabbitExchange
from faststream.rabbit.fastapi import RabbitRouter
from pydantic import BaseModel


class Envelope(BaseModel):
    routing_key: str
    payload: Any
    headers: dict[str, Any] = {}


router = RabbitRouter(os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/"))
# Declared by the bench already: a passive look-up, as for a topology owned elsewhere.
_exchanges: dict[str, Any] = {}


def _exchange(name: str) -> Any:
    if name not in _exchanges:
        _exchanges[name] = RabbitExchange(name, type=ExchangeType.TOPIC, declare=False)
    return _exchanges[name]


async def publish(exchange: str, envelope: Envelope) -> dict[str, str]:
    await router.broker.publish(
        envelope.payload,
        exchange=_exchange(exchange),
        routing_key=envelope.routing_key,
        mandatory=True,
        persist=True,
        headers=envelope.headers,
    )
    return {"status": "confirmed"}


router.add_api_route(
    "/v1/exchanges/{exchange}/messages", publish, methods=["POST"], status_code=202
)
app = FastAPI()
app.include_router(router)
