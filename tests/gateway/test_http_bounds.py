"""`python -m gateway` against clients that hold connections: slow, huge or too many.

Raw sockets, because an HTTP client library would neither dribble a request nor stall in
the middle of one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
from aio_pika.abc import AbstractConnection

from tests.conftest import Names
from tests.support.broker import ready_count
from tests.support.processes import Process, eventually, start_gateway

pytestmark = pytest.mark.slow

ORDER = {"routing_key": "order.created", "payload": {"order_id": 7}}
# Short, so the tests are fast; long enough for a loaded 2-core machine to meet them.
HEADER_TIMEOUT_S = 1.5
BODY_TIMEOUT_S = 1.5
# How late an answer may come after its deadline on a busy machine.
MARGIN_S = 2.5
MiB = 1024 * 1024


@dataclass
class Gateway:
    process: Process
    base_url: str

    @property
    def port(self) -> int:
        port = urlsplit(self.base_url).port
        assert port is not None
        return port

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    def reset_peak_memory(self) -> None:
        # Linux sets the peak resident size (VmHWM) back to the current one.
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")

    def memory_kib(self, field: str) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} in /proc/{self.process.pid}/status")


Serve = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def serve(
    rabbitmq_url: str, sqlite_url: str, topology_file: Path, tmp_path: Path
) -> AsyncIterator[Serve]:
    """Start a gateway process with these settings (environment variables) added."""
    started: list[Process] = []

    async def start(**settings: str) -> Gateway:
        env = {
            "RABBITMQ_URL": rabbitmq_url,
            "DATABASE_URL": sqlite_url,
            "TOPOLOGY_FILE": str(topology_file),
            "HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
            "BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
            **settings,
        }
        process, base_url = await start_gateway(env, tmp_path / f"gateway{len(started)}.log")
        started.append(process)
        return Gateway(process, base_url)

    yield start
    for process in started:
        await process.stop()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status_line, *lines = head.split("\r\n")[:-2]
    fields = (line.split(":", 1) for line in lines)
    headers = {name.strip().lower(): value.strip() for name, value in fields}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Answer(int(status_line.split()[1]), headers, body)


def assert_problem(answer: Answer, status: int, slug: str) -> dict[str, object]:
    assert answer.status == status, answer
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["connection"] == "close"
    problem: dict[str, object] = orjson.loads(answer.body)
    assert problem["type"] == f"/problems/{slug}"
    assert problem["status"] == status
    assert problem["title"]
    assert problem["detail"]
    assert isinstance(problem["retryable"], bool)
    return problem


async def closed_by_gateway(reader: asyncio.StreamReader) -> bool:
    """True once the gateway closed the connection (EOF or a reset), after its answer."""
    try:
        return await reader.read() == b""
    except ConnectionResetError:
        return True


def publish_request(exchange: str, body: bytes, content_length: int | None = None) -> bytes:
    length = len(body) if content_length is None else content_length
    return (
        f"POST /v1/exchanges/{exchange}/messages HTTP/1.1\r\nHost: gateway\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode() + body


@pytest.mark.timeout(90)
async def test_stalled_requests_get_408_while_other_clients_are_served_fast(
    serve: Serve, names: Names, amqp: AbstractConnection
) -> None:
    gateway = await serve()
    stalled = []
    for index in range(250):
        opened_at = time.monotonic()
        reader, writer = await gateway.connect()
        # Half stall in the request line, half in a header.
        partial = b"GET /healthz HT" if index % 2 else b"GET /healthz HTTP/1.1\r\nX-Slow: a"
        writer.write(partial)
        stalled.append((opened_at, reader, writer))
    last_opened_at = time.monotonic()

    async def answer_time(reader: asyncio.StreamReader) -> tuple[Answer, float]:
        answer = await read_answer(reader)
        return answer, time.monotonic()

    answers = asyncio.gather(
        *(
            asyncio.wait_for(answer_time(reader), HEADER_TIMEOUT_S + MARGIN_S + 5)
            for _, reader, _ in stalled
        )
    )
    latencies = []
    async with httpx.AsyncClient(base_url=gateway.base_url) as client:
        while not answers.done():
            started = time.monotonic()
            health = await client.get("/healthz")
            published = await client.post(f"/v1/exchanges/{names.exchange}/messages", json=ORDER)
            latencies.append(time.monotonic() - started)
            assert health.status_code == 200
            assert published.status_code == 202, published.text
            await asyncio.sleep(0.05)
    answered = await answers

    for (opened_at, reader, writer), (answer, answered_at) in zip(stalled, answered, strict=True):
        assert_problem(answer, 408, "request-timeout")
        # Not before its deadline, which starts when the gateway accepted the connection.
        assert answered_at - opened_at >= HEADER_TIMEOUT_S - 0.05
        assert await closed_by_gateway(reader)
        writer.close()
    assert max(answered_at for _, answered_at in answered) - last_opened_at < (
        HEADER_TIMEOUT_S + MARGIN_S
    )
    # Others were served all along: a probe every few tens of milliseconds, each fast.
    assert len(latencies) >= 5
    assert max(latencies) < 1.0, latencies
    assert await ready_count(amqp, names.queue) == len(latencies)


@pytest.mark.timeout(60)
async def test_a_32_mib_header_gets_431_at_once_and_is_not_kept_in_memory(
    serve: Serve,
) -> None:
    gateway = await serve()
    # So that VmHWM shows this request's peak.
    gateway.reset_peak_memory()
    resident_before = gateway.memory_kib("VmRSS")

    reader, writer = await gateway.connect()
    started = time.monotonic()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Huge: " + b"a" * (32 * MiB))
    answer = await asyncio.wait_for(read_answer(reader), 10)
    elapsed = time.monotonic() - started
    writer.transport.abort()

    assert_problem(answer, 431, "request-header-too-large")
    assert elapsed < 2.0
    peak_growth = (gateway.memory_kib("VmHWM") - resident_before) * 1024
    resident_growth = (gateway.memory_kib("VmRSS") - resident_before) * 1024
    assert peak_growth < 16 * MiB, peak_growth
    assert resident_growth < 16 * MiB, resident_growth
    async with httpx.AsyncClient(base_url=gateway.base_url) as client:
        assert (await client.get("/healthz")).status_code == 200


@pytest.mark.timeout(60)
async def test_more_header_fields_than_allowed_get_431(serve: Serve) -> None:
    gateway = await serve(MAX_REQUEST_HEADERS="20")

    async def ask(fields: int) -> Answer:
        reader, writer = await gateway.connect()
        extra = "".join(f"X-Field-{index}: {index}\r\n" for index in range(fields - 1))
        writer.write(f"GET /healthz HTTP/1.1\r\nHost: gateway\r\n{extra}\r\n".encode())
        answer = await asyncio.wait_for(read_answer(reader), 5)
        writer.close()
        return answer

    assert (await ask(20)).status == 200
    problem = assert_problem(await ask(21), 431, "request-header-too-large")
    assert problem["retryable"] is False
    assert "20 header fields" in str(problem["detail"])


@pytest.mark.timeout(60)
async def test_unparsable_request_gets_a_400_problem(serve: Serve) -> None:
    gateway = await serve()
    reader, writer = await gateway.connect()
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    answer = await asyncio.wait_for(read_answer(reader), 5)
    writer.close()
    assert_problem(answer, 400, "invalid-http-request")


@pytest.mark.timeout(60)
async def test_a_stalled_body_gets_408_publishes_nothing_and_leaves_no_traceback(
    serve: Serve, names: Names, amqp: AbstractConnection
) -> None:
    gateway = await serve()
    body = orjson.dumps(ORDER)
    reader, writer = await gateway.connect()
    writer.write(publish_request(names.exchange, body[:10], content_length=len(body)))
    sent_at = time.monotonic()
    answer = await asyncio.wait_for(read_answer(reader), BODY_TIMEOUT_S + MARGIN_S)
    waited = time.monotonic() - sent_at
    problem = assert_problem(answer, 408, "request-timeout")
    assert problem["retryable"] is True
    assert BODY_TIMEOUT_S - 0.05 <= waited < BODY_TIMEOUT_S + MARGIN_S
    assert await closed_by_gateway(reader)
    writer.close()

    # A client that gives up in the middle of its body: no one to answer.
    _, leaving = await gateway.connect()
    leaving.write(publish_request(names.exchange, body[:10], content_length=len(body)))
    await leaving.drain()
    leaving.close()

    async with httpx.AsyncClient(base_url=gateway.base_url) as client:
        published = await client.post(f"/v1/exchanges/{names.exchange}/messages", json=ORDER)
        assert published.status_code == 202, published.text
    assert await ready_count(amqp, names.queue) == 1
    await gateway.process.stop()
    log = gateway.process.output()
    for symptom in ("Traceback", "unexpected error", "Exception in ASGI application"):
        assert symptom not in log, log


@pytest.mark.timeout(60)
async def test_connections_beyond_the_limit_get_503_and_serving_resumes_once_they_close(
    serve: Serve,
) -> None:
    limit = 10
    gateway = await serve(
        MAX_CONNECTIONS=str(limit), HEADER_TIMEOUT_S="30", KEEP_ALIVE_TIMEOUT_S="30"
    )
    health = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n"
    held = []
    for _ in range(limit):
        reader, writer = await gateway.connect()
        writer.write(health)
        assert (await asyncio.wait_for(read_answer(reader), 5)).status == 200
        held.append((reader, writer))

    reader, writer = await gateway.connect()
    writer.write(health)
    refused_at = time.monotonic()
    answer = await asyncio.wait_for(read_answer(reader), 5)
    assert time.monotonic() - refused_at < 1.0
    problem = assert_problem(answer, 503, "too-many-connections")
    assert problem["retryable"] is True
    assert int(answer.headers["retry-after"]) >= 0
    assert await closed_by_gateway(reader)
    writer.close()

    # The connections it holds are still served.
    first_reader, first_writer = held[0]
    first_writer.write(health)
    assert (await asyncio.wait_for(read_answer(first_reader), 5)).status == 200

    for _, held_writer in held:
        held_writer.close()

    async def served() -> bool:
        async with httpx.AsyncClient(base_url=gateway.base_url) as client:
            return (await client.get("/healthz")).status_code == 200

    await eventually(served, 5, "the gateway to serve new connections again")


@pytest.mark.timeout(60)
async def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    serve: Serve,
) -> None:
    gateway = await serve()
    connected_at = time.monotonic()
    reader, writer = await gateway.connect()
    received = await asyncio.wait_for(reader.read(), HEADER_TIMEOUT_S + MARGIN_S)
    waited = time.monotonic() - connected_at
    writer.close()
    # Closed, without an answer: there was no request to answer.
    assert received == b""
    assert waited >= HEADER_TIMEOUT_S - 0.05


@pytest.mark.timeout(60)
async def test_keep_alive_serves_several_requests_and_times_each_head_anew(
    serve: Serve,
) -> None:
    gateway = await serve(KEEP_ALIVE_TIMEOUT_S="10")
    reader, writer = await gateway.connect()
    connected_at = time.monotonic()
    for _ in range(3):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        answer = await asyncio.wait_for(read_answer(reader), 5)
        assert answer.status == 200
        assert answer.headers.get("connection") != "close"
        # Idle between requests, longer in all than a header timeout.
        await asyncio.sleep(HEADER_TIMEOUT_S * 0.6)
    assert time.monotonic() - connected_at > HEADER_TIMEOUT_S

    writer.write(b"GET /healthz HTTP/1.1\r\nHo")
    sent_at = time.monotonic()
    answer = await asyncio.wait_for(read_answer(reader), HEADER_TIMEOUT_S + MARGIN_S)
    waited = time.monotonic() - sent_at
    writer.close()
    assert_problem(answer, 408, "request-timeout")
    # The deadline ran from this request's first byte, not from the connection.
    assert waited >= HEADER_TIMEOUT_S - 0.05


@pytest.mark.timeout(60)
async def test_by_default_a_pooled_client_drops_an_idle_connection_before_the_gateway_does(
    serve: Serve,
) -> None:
    # Were the gateway first, a request the client writes as the gateway closes would be
    # reset: neither answered nor, for a POST, safe to send again.
    client_expiry_s = httpx.Limits().keepalive_expiry
    assert client_expiry_s is not None
    gateway = await serve()
    reader, writer = await gateway.connect()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
    assert (await asyncio.wait_for(read_answer(reader), 5)).status == 200
    await asyncio.sleep(client_expiry_s + 1)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
    answer = await asyncio.wait_for(read_answer(reader), 5)
    writer.close()
    assert answer.status == 200


@pytest.mark.timeout(60)
async def test_an_idle_keep_alive_connection_closes_after_the_keep_alive_timeout(
    serve: Serve,
) -> None:
    gateway = await serve(KEEP_ALIVE_TIMEOUT_S="1")
    reader, writer = await gateway.connect()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
    assert (await asyncio.wait_for(read_answer(reader), 5)).status == 200
    answered_at = time.monotonic()
    received = await asyncio.wait_for(reader.read(), 1 + MARGIN_S)
    writer.close()
    assert received == b""
    assert time.monotonic() - answered_at >= 1 - 0.05
