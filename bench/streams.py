"""What idle Server-Sent Event streams cost a gateway: `python -m bench.streams`.

Starts a `python -m gateway` (SQLite, or `--database-url`), opens `--streams` streams of one
queue that sit idle (heartbeats only), and reads the gateway's RSS before, with them open,
and after they closed; with the streams open it times `--publishes` publishes one after
another. Declares a topology of its own on RABBITMQ_URL and deletes it afterwards. The
numbers are recorded by hand in docs/performance.md ("Idle streams").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import asyncpg
import httpx
import yaml
from sqlalchemy.engine import make_url

from bench.common import free_port, stop


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


async def run(args: argparse.Namespace, work: Path) -> None:
    async with database(args.database_url, work) as database_url:
        await measure(args, work, database_url)


async def measure(args: argparse.Namespace, work: Path, database_url: str) -> None:
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    exchange, queue = f"{prefix}.orders", f"{prefix}.orders.persist"
    topology = work / "topology.yaml"
    topology.write_text(
        yaml.safe_dump(
            {
                "exchanges": [{"name": exchange, "type": "topic"}],
                "queues": [{"name": queue}],
                "bindings": [{"exchange": exchange, "queue": queue, "routing_key": "#"}],
            }
        )
    )
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "TOPOLOGY_FILE": str(topology),
        "MAX_CONNECTIONS": str(args.streams + 100),
        "LOG_LEVEL": "WARNING",
        "DRAIN_DELAY_S": "0",
    }
    gateway = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "--port", str(port), env=env
    )
    base_url = f"http://127.0.0.1:{port}"
    limits = httpx.Limits(max_connections=args.streams + 20, max_keepalive_connections=20)
    try:
        async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:
            for _ in range(200):
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
            # Warm up what the first stream and publish import and build.
            async with client.stream("GET", f"/v1/queues/{queue}/stream") as response:
                assert response.status_code == 200, response.status_code
            await publish(client, exchange)
            await asyncio.sleep(1)
            before = rss_kib(gateway.pid)
            async with contextlib.AsyncExitStack() as streams:
                opening = asyncio.Semaphore(50)

                async def open_one() -> None:
                    async with opening:
                        response = await streams.enter_async_context(
                            client.stream("GET", f"/v1/queues/{queue}/stream")
                        )
                        assert response.status_code == 200, response.status_code

                began = time.monotonic()
                await asyncio.gather(*(open_one() for _ in range(args.streams)))
                opened_s = time.monotonic() - began
                await asyncio.sleep(3)
                with_streams = rss_kib(gateway.pid)
                latencies = [await publish(client, exchange) for _ in range(args.publishes)]
            await asyncio.sleep(3)
            after = rss_kib(gateway.pid)
    finally:
        await stop(gateway)
        connection = await aio_pika.connect(os.environ.get("RABBITMQ_URL", "amqp://localhost/"))
        channel = await connection.channel()
        await channel.queue_delete(queue)
        await channel.exchange_delete(exchange)
        await connection.close()
    latencies.sort()
    grown = with_streams - before
    print(f"streams: {args.streams} opened in {opened_s:.1f}s")
    print(f"gateway RSS: {before / 1024:.1f} MiB before, {with_streams / 1024:.1f} MiB with the")
    print(f"  streams open (+{grown / 1024:.1f} MiB, {grown / args.streams:.1f} KiB a stream),")
    print(f"  {after / 1024:.1f} MiB after they closed")
    print(
        f"{args.publishes} publishes beside them, one at a time: "
        f"p50 {statistics.median(latencies) * 1000:.2f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99) - 1] * 1000:.2f} ms"
    )


async def publish(client: httpx.AsyncClient, exchange: str) -> float:
    began = time.perf_counter()
    answer = await client.post(
        f"/v1/exchanges/{exchange}/messages",
        json={"routing_key": "order.created", "payload": {"n": 1}},
    )
    assert answer.status_code == 202, answer.text
    return time.perf_counter() - began


@contextlib.asynccontextmanager
async def database(server_url: str, work: Path) -> AsyncIterator[str]:
    """A SQLite file of its own, or a database of its own on that PostgreSQL, dropped after
    (never the server's own databases: the store migrates what it is given)."""
    if not server_url:
        yield f"sqlite+aiosqlite:///{work / 'hareway.db'}"
        return
    url = make_url(server_url)
    admin = await asyncpg.connect(
        url.set(drivername="postgresql").render_as_string(hide_password=False)
    )
    name = f"hareway_streams_{uuid.uuid4().hex[:8]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--publishes", type=int, default=500)
    parser.add_argument(
        "--database-url",
        default="",
        help="a PostgreSQL server (postgresql+asyncpg://...): the bench makes a database of "
        "its own there and drops it; default: a SQLite file of its own",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hareway-streams-") as work:
        asyncio.run(run(args, Path(work)))


if __name__ == "__main__":
    main()
