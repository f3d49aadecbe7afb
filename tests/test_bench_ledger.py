"""The ledger's load balancer probe closes its connection however the probe ends: a writer
left to the garbage collector keeps its socket open until a collection happens to find it,
then warns (an unraisable ResourceWarning, an error under this suite's filterwarnings),
in whichever test is running by then."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bench.ledger import _Gateway
from tests.support.tcp_server import listening

pytestmark = pytest.mark.timeout(30)


class SilentServer:
    """Accepts connections and never answers; notes each client's end of the connection."""

    def __init__(self) -> None:
        self.accepted = asyncio.Event()
        self.closed = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted.set()
        await reader.read()  # until the client closes
        self.closed.set()
        writer.close()


@pytest.fixture
async def silent() -> AsyncIterator[tuple[SilentServer, str]]:
    server = SilentServer()
    async with listening(server.handle) as port:
        yield server, f"http://127.0.0.1:{port}"


async def test_a_probe_cancelled_mid_read_closes_its_connection(
    silent: tuple[SilentServer, str],
) -> None:
    server, url = silent
    probe = asyncio.create_task(_Gateway(url, {}, 5).ready())
    await asyncio.wait_for(server.accepted.wait(), 5)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    await asyncio.wait_for(server.closed.wait(), 2)


async def test_a_probe_that_times_out_closes_its_connection(
    silent: tuple[SilentServer, str],
) -> None:
    server, url = silent
    assert await _Gateway(url, {}, 5).ready() is False
    await asyncio.wait_for(server.closed.wait(), 2)
