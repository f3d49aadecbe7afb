"""Publishes answered inside the HTTP protocol (gateway/direct.py), on a real uvicorn server
and the real broker: the same answers as through the app, in order, with uvicorn's
keep-alive, `100-continue` and failure handling."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import uvicorn
from aio_pika.abc import AbstractConnection
from starlette.responses import Response

from gateway.app import create_app
from gateway.direct import GatewayHttpProtocol
from gateway.fastpath import Gateway
from gateway.settings import GatewaySettings
from tests.conftest import Names
from tests.support.broker import ready_count
from tests.support.uvicorn_server import serving_config

pytestmark = pytest.mark.timeout(60)


@dataclass
class Served:
    app: Gateway
    port: int
    # How many publishes the protocol handed to `Gateway.answer` itself.
    answered_directly: list[str]
    # Whether uvicorn writes an access log, as it decides for each new connection. The
    # gateway never lets it; pytest's log capture would, each test anew.
    uvicorn_access_log: bool = False

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if not self.uvicorn_access_log:
            logging.getLogger("uvicorn.access").handlers.clear()
        return await asyncio.open_connection("127.0.0.1", self.port)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@pytest.fixture
async def served(gateway_settings: GatewaySettings) -> AsyncIterator[Served]:
    async with serving(gateway_settings) as served:
        yield served


@contextlib.asynccontextmanager
async def serving(settings: GatewaySettings) -> AsyncIterator[Served]:
    """The gateway on uvicorn with its protocol, in this process; publishes counted."""
    app = create_app(settings)
    assert isinstance(app, Gateway)
    answered: list[str] = []
    answer = app.answer

    async def counting(scope: Any, receive: Any, match: re.Match[str]) -> Response:
        answered.append(scope["path"])
        return await answer(scope, receive, match)

    app.answer = counting  # type: ignore[method-assign]
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        http=GatewayHttpProtocol,
        lifespan="on",
        log_level="warning",
        access_log=False,
    )
    async with serving_config(config) as port:
        yield Served(app, port, answered)


def publish(exchange: str, message_id: str, headers: str = "") -> bytes:
    body = orjson.dumps(
        {"routing_key": "order.created", "message_id": message_id, "payload": {"n": 1}}
    )
    return (
        f"POST /v1/exchanges/{exchange}/messages HTTP/1.1\r\nHost: gateway\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
    ).encode() + body


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode("latin-1")
    status_line, *lines = head.split("\r\n")[:-2]
    fields = (line.split(":", 1) for line in lines)
    headers = {name.strip().lower(): value.strip() for name, value in fields}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Answer(int(status_line.split()[1]), headers, body)


async def closed(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), 10) == b""
    except ConnectionResetError:
        return True


async def test_a_publish_is_answered_by_the_protocol_as_the_app_answers_it(
    served: Served, names: Names, amqp: AbstractConnection
) -> None:
    reader, writer = await served.connect()
    writer.write(publish(names.exchange, "direct-1"))
    direct = await read_answer(reader)
    # Proxy headers need uvicorn's middleware, in front of the app: this one goes there.
    writer.write(publish(names.exchange, "through-app-1", "X-Forwarded-For: 10.1.2.3\r\n"))
    through_app = await read_answer(reader)
    writer.close()

    assert served.answered_directly == [f"/v1/exchanges/{names.exchange}/messages"]
    for answer, message_id in ((direct, "direct-1"), (through_app, "through-app-1")):
        assert answer.status == 202, answer
        assert orjson.loads(answer.body) == {
            "message_id": message_id,
            "exchange": names.exchange,
            "routing_key": "order.created",
            "status": "confirmed",
        }
        assert answer.headers["location"] == f"/v1/messages/{message_id}"
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["server-timing"].startswith("validate;dur=")
        assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["x-request-id"])
        assert "connection" not in answer.headers  # kept alive
    assert set(direct.headers) == set(through_app.headers)
    assert await ready_count(amqp, names.queue) == 2


async def test_pipelined_requests_are_answered_in_the_order_they_came(
    served: Served, names: Names, amqp: AbstractConnection
) -> None:
    reader, writer = await served.connect()
    # One write: the second and third arrive while the first waits for its confirm.
    writer.write(
        publish(names.exchange, "piped-1")
        + b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n"
        + publish(names.exchange, "piped-2")
        + publish("no.such.exchange", "piped-3")
    )
    answers = [await read_answer(reader) for _ in range(4)]
    writer.close()

    assert [answer.status for answer in answers] == [202, 200, 202, 404]
    assert orjson.loads(answers[0].body)["message_id"] == "piped-1"
    assert orjson.loads(answers[2].body)["message_id"] == "piped-2"
    assert answers[3].headers["content-type"] == "application/problem+json"
    assert len(served.answered_directly) == 3
    assert await ready_count(amqp, names.queue) == 2


async def test_expect_100_continue_is_answered_before_the_body_is_sent(
    served: Served, names: Names
) -> None:
    request = publish(names.exchange, "continued-1", "Expect: 100-continue\r\n")
    head, body = request.split(b"\r\n\r\n", 1)
    reader, writer = await served.connect()
    writer.write(head + b"\r\n\r\n")
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert interim.startswith(b"HTTP/1.1 100 ")
    writer.write(body)
    answer = await read_answer(reader)
    writer.close()
    assert answer.status == 202
    assert served.answered_directly


async def test_while_draining_a_direct_answer_closes_its_connection(
    served: Served, names: Names
) -> None:
    assert served.app.drain is not None
    served.app.drain.draining = True
    reader, writer = await served.connect()
    writer.write(publish(names.exchange, "drained-1"))
    answer = await read_answer(reader)
    assert answer.status == 202
    assert answer.headers["connection"] == "close"
    assert await closed(reader)
    writer.close()
    assert served.answered_directly


async def test_an_answer_that_raises_is_a_500_that_closes_only_its_connection(
    served: Served, names: Names, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer: Callable[..., Awaitable[Response]] = served.app.answer

    async def failing(scope: Any, receive: Any, match: re.Match[str]) -> Response:
        if scope["headers"][-1] == (b"x-fail", b"yes"):
            raise RuntimeError("a bug in the answer")
        return await answer(scope, receive, match)

    monkeypatch.setattr(served.app, "answer", failing)
    other_reader, other_writer = await served.connect()
    reader, writer = await served.connect()
    writer.write(publish(names.exchange, "failed-1", "X-Fail: yes\r\n"))
    failed = await read_answer(reader)
    assert failed.status == 500
    assert failed.headers["connection"] == "close"
    assert await closed(reader)
    writer.close()
    # Any other connection is served as before.
    other_writer.write(publish(names.exchange, "served-1"))
    assert (await read_answer(other_reader)).status == 202
    other_writer.close()


async def test_with_uvicorn_writing_an_access_log_every_request_goes_through_the_app(
    served: Served, names: Names, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "uvicorn.access")
    served.uvicorn_access_log = True
    reader, writer = await served.connect()
    writer.write(publish(names.exchange, "logged-1"))
    assert (await read_answer(reader)).status == 202
    writer.close()
    assert served.answered_directly == []
    assert any(
        f"POST /v1/exchanges/{names.exchange}/messages" in record.getMessage()
        for record in caplog.records
    )
