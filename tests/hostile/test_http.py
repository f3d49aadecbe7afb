"""What one client can hold at the HTTP layer, with no API key: slow headers on hundreds of
connections, header lines of megabytes. Bounded by gateway/http_bounds.py, answered with
408 or 431 problems, and the good caller keeps being served."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from tests.hostile.conftest import Stack

pytestmark = [pytest.mark.hostile, pytest.mark.slow, pytest.mark.timeout(120)]


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, object]]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = int(
        next(
            line.split(b":")[1]
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
    )
    body: dict[str, object] = orjson.loads(await reader.readexactly(length))
    return status, body


def _resident_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_hundreds_of_slow_header_connections_are_408_and_others_are_served(
    stack: Stack,
) -> None:
    host, port = _host_port(stack.gateway_url)
    started = time.monotonic()
    slow = [await asyncio.open_connection(host, port) for _ in range(400)]
    try:
        async with stack.unhurt(overlap_s=3):
            for _, writer in slow:
                writer.write(b"POST /v1/exchanges/x/messages HTTP/1.1\r\nHost: g\r\nX-Slow: ")
            answers = await asyncio.gather(
                *(asyncio.wait_for(_answer(reader), 10) for reader, _ in slow)
            )
        took = time.monotonic() - started
    finally:
        for _, writer in slow:
            writer.close()
    assert {status for status, _ in answers} == {408}
    assert {body["type"] for _, body in answers} == {"/problems/request-timeout"}
    # HEADER_TIMEOUT_S is 2 in this stack: all of them were let go in about that.
    assert took < 8, took


async def test_a_header_line_of_megabytes_is_a_quick_431_and_leaves_no_memory_behind(
    stack: Stack,
) -> None:
    host, port = _host_port(stack.gateway_url)
    before = _resident_kib(stack.gateway.pid)
    async with stack.unhurt():
        for _ in range(3):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: g\r\nX-Huge: ")
            sent = time.monotonic()
            try:
                for _ in range(32):
                    writer.write(b"a" * (1024 * 1024))
                    await writer.drain()
            except ConnectionError:
                pass  # refused mid-line: the answer is already waiting to be read
            status, body = await asyncio.wait_for(_answer(reader), 10)
            writer.close()
            assert status == 431
            assert body["type"] == "/problems/request-header-too-large"
            assert time.monotonic() - sent < 5
    grown_kib = _resident_kib(stack.gateway.pid) - before
    assert grown_kib < 16 * 1024, f"the gateway kept {grown_kib} KiB"
