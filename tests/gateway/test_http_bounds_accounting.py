"""How `BoundedHttpToolsProtocol` counts a request's head, fed bytes as a socket would be."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.server import ServerState

from gateway.http_bounds import BoundedHttpToolsProtocol, HttpBounds, check_uvicorn

LIMIT = 1024
MAX_HEADERS = 5
# Timers far away: these tests are about counting, and end before any deadline.
BOUNDS = HttpBounds(
    max_header_bytes=LIMIT,
    max_headers=MAX_HEADERS,
    header_timeout_s=60,
    body_timeout_s=60,
    max_connections=10,
    retry_after_s=1,
)


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.wrote = asyncio.Event()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data
        self.wrote.set()

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )


async def read_all_then_204(scope: Scope, receive: Receive, send: Send) -> None:
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@pytest.fixture(scope="module")
def config() -> Config:
    loaded = Config(app=read_all_then_204, log_config=None, lifespan="off")
    loaded.load()
    return loaded


@pytest.fixture
async def connection(
    config: Config,
) -> AsyncIterator[tuple[BoundedHttpToolsProtocol, RecordingTransport]]:
    loop = asyncio.get_running_loop()
    protocol = BoundedHttpToolsProtocol(config, ServerState(), {}, loop, bounds=BOUNDS)
    transport = RecordingTransport()
    protocol.connection_made(transport)
    yield protocol, transport
    protocol.connection_lost(None)


def head(size: int, fields: int = 1, body: bytes = b"") -> bytes:
    """A request whose request line and headers are exactly `size` bytes on the wire."""
    lines = [b"POST /x HTTP/1.1", b"Content-Length: %d" % len(body)]
    lines += [b"X-%d: v" % index for index in range(fields)]
    request = b"\r\n".join(lines) + b"\r\n\r\n"
    # Pad the last field to the size asked for.
    request = request[:-4] + b"v" * (size - len(request)) + b"\r\n\r\n"
    assert len(request) == size
    return request + body


async def answer_status(transport: RecordingTransport) -> int:
    await asyncio.wait_for(transport.wrote.wait(), 5)
    return int(transport.written.split(b" ", 2)[1])


Connection = tuple[BoundedHttpToolsProtocol, RecordingTransport]


async def test_a_head_within_the_limit_is_served_with_a_large_body_in_the_same_read(
    connection: Connection,
) -> None:
    protocol, transport = connection
    protocol.data_received(head(LIMIT, body=b"b" * (100 * LIMIT)))
    assert await answer_status(transport) == 204


async def test_a_head_over_the_limit_in_one_read_is_431(connection: Connection) -> None:
    protocol, transport = connection
    protocol.data_received(head(LIMIT + 16))
    assert await answer_status(transport) == 431
    problem = orjson.loads(transport.written.split(b"\r\n\r\n", 1)[1])
    assert problem["type"] == "/problems/request-header-too-large"


async def test_an_unfinished_header_line_is_431_once_its_bytes_pass_the_limit(
    connection: Connection,
) -> None:
    protocol, transport = connection
    protocol.data_received(b"GET / HTTP/1.1\r\nX-Long: ")
    sent = 24
    # httptools keeps this line to itself until it ends; it never ends.
    while sent + 100 <= LIMIT:
        protocol.data_received(b"a" * 100)
        sent += 100
        assert not transport.written
    protocol.data_received(b"a" * 100)
    assert await answer_status(transport) == 431
    # What comes after the answer is dropped, not parsed or kept.
    protocol.data_received(b"a" * 10 * LIMIT)
    assert transport.written.count(b"HTTP/1.1") == 1


@pytest.mark.parametrize(("fields", "status"), [(MAX_HEADERS, 204), (MAX_HEADERS + 1, 431)])
async def test_header_fields_are_counted(connection: Connection, fields: int, status: int) -> None:
    protocol, transport = connection
    # Content-Length is a field too.
    protocol.data_received(head(300, fields=fields - 1))
    assert await answer_status(transport) == status


async def test_each_request_on_a_keep_alive_connection_is_counted_from_zero(
    connection: Connection,
) -> None:
    protocol, transport = connection
    # Two heads, each within the limit, together over it, in one read.
    protocol.data_received(head(LIMIT - 100) + head(LIMIT - 100))
    await asyncio.wait_for(_answered(transport, b"HTTP/1.1 204", times=2), 5)
    assert b"431" not in transport.written


async def test_a_head_that_begins_inside_a_read_after_another_request_is_measured_too(
    connection: Connection,
) -> None:
    protocol, transport = connection
    protocol.data_received(head(200) + head(LIMIT + 16))
    await asyncio.wait_for(_answered(transport, b"HTTP/1.1 431"), 5)
    assert transport.written.startswith(b"HTTP/1.1 204")


async def _answered(transport: RecordingTransport, status_line: bytes, times: int = 1) -> None:
    while transport.written.count(status_line) < times:
        transport.wrote.clear()
        await transport.wrote.wait()


async def test_a_connection_reset_after_an_answer_leaves_nothing_of_it_behind(
    config: Config,
) -> None:
    loop = asyncio.get_running_loop()
    protocol = BoundedHttpToolsProtocol(config, ServerState(), {}, loop, bounds=BOUNDS)
    transport = RecordingTransport()
    protocol.connection_made(transport)
    protocol.data_received(head(200))
    assert await answer_status(transport) == 204
    # Answered and idle: the keep-alive timer runs. Then the client resets.
    protocol.connection_lost(ConnectionResetError(104, "Connection reset by peer"))
    left = weakref.ref(protocol)
    del protocol
    gc.collect()
    assert left() is None, "a timer still holds the protocol of a connection that is gone"


def test_the_installed_uvicorn_has_what_the_bounds_rely_on() -> None:
    check_uvicorn()
