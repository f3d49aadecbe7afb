"""SIGTERM stops both processes promptly while their broker cannot be reached: an address
that accepts TCP and never answers AMQP, the connect attempt hanging."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.processes import start

pytestmark = [pytest.mark.slow]


@contextlib.asynccontextmanager
async def silent_broker() -> AsyncIterator[int]:
    """A port that accepts connections and never says a word: a broker that hangs."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("module", "args"),
    [("consumers", ["--queue", "q"]), ("gateway", ["--port", "1"])],
)
async def test_sigterm_stops_a_process_that_is_still_connecting(
    module: str, args: list[str], sqlite_url: str, tmp_path: Path
) -> None:
    async with silent_broker() as port:
        env = {
            "RABBITMQ_URL": f"amqp://guest:guest@127.0.0.1:{port}/",
            "DATABASE_URL": sqlite_url,
        }
        process = await start(module, args, env, tmp_path / f"{module}.log")
        await asyncio.sleep(3)  # well into its connect attempt (which waits 10 s)
        assert process.proc.returncode is None, process.output()
        began = time.monotonic()
        process.signal(signal.SIGTERM)
        code = await process.wait(15)
        took = time.monotonic() - began
    assert took < 5, f"{module} took {took:.1f}s to stop:\n{process.output()}"
    assert code in (0, -signal.SIGTERM), process.output()
    assert "Traceback" not in process.output()


@pytest.mark.timeout(150)
async def test_sigterm_stops_both_processes_while_they_reconnect(
    sqlite_url: str, tmp_path: Path
) -> None:
    from tests.support.processes import start_consumer, start_gateway
    from tests.support.rabbit_node import RabbitNode

    node = await RabbitNode.start(tmp_path / "node")
    try:
        topology = tmp_path / "topology.yaml"
        topology.write_text("queues: [{name: signals.q}]\n")
        env = {
            "RABBITMQ_URL": node.url,
            "DATABASE_URL": sqlite_url,
            "TOPOLOGY_FILE": str(topology),
            "DRAIN_TIMEOUT_S": "5",
        }
        consumer = await start_consumer(["signals.q"], env, tmp_path / "consumer.log")
        gateway, _ = await start_gateway(env, tmp_path / "gateway.log")
        await node.kill()
        await asyncio.sleep(2)  # both are in aio-pika's reconnect loop now
        began = time.monotonic()
        consumer.signal(signal.SIGTERM)
        gateway.signal(signal.SIGTERM)
        codes = await asyncio.gather(consumer.wait(30), gateway.wait(30))
        took = time.monotonic() - began
    finally:
        await node.kill()
        node.remove()
    assert took < 15, f"took {took:.1f}s:\n{consumer.output()}\n{gateway.output()}"
    assert codes[0] == 0, consumer.output()
    assert codes[1] in (0, -signal.SIGTERM), gateway.output()
