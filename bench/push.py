"""The push row (issue 14): a real `python -m consumers` delivering a queue to a push
subscription, against a bare httpx client POSTing the same bodies to the same receiver.

The receiver (`bench/receiver.py`, its own process) answers 204 at once and notes when it
answered each `webhook-id`, so both rates are counted the same way: answers from the
first to the last. The bare client (`python -m bench.push`, its own process, uvloop as
the consumer has) uses the pool and concurrency the subscription has.

The latency is from each message's `persisted_at` (stamped as its batch goes into the
store, so the commit's own write counts) to the receiver's answer, with messages
published at a fixed rate while the consumer runs; the bare client's round trip at the
same rate is shown beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiormq
import httpx
from pamqp import commands as spec
from sqlalchemy import select

from bench import bare, cpu_time
from bench.common import Row, free_port, stop
from hareway.store import open_store
from hareway.store.schema import messages

if TYPE_CHECKING:
    from bench.__main__ import Bench

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = 16
RATE = 1000  # msg/s offered in the latency run
RATE_SECONDS = 5
SHAPES = {
    "pool": "one AsyncClient with a pool of 16",
    "clients": "an AsyncClient per connection, as the consumer",
}
SECRET = "whsec_" + base64.b64encode(b"hareway-bench-push-secret-32byte").decode()


async def push_phase(bench: Bench) -> list[Row]:
    rows: list[Row] = []
    port = free_port()
    argv = ["-m", "bench.receiver", "--port", str(port)]
    receiver = await bench.spawn(argv, {"PYTHONPATH": str(ROOT)}, "receiver")
    url = f"http://127.0.0.1:{port}/hooks"
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as control:
            await _wait_listening(control, receiver)
            rows += await _throughput(bench, control, url)
            rows += await _latency(bench, control, url)
    finally:
        await stop(receiver)
    return rows


async def _wait_listening(control: httpx.AsyncClient, process: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise SystemExit("the push receiver exited: see receiver.log")
        with contextlib.suppress(httpx.TransportError):
            (await control.get("/count")).raise_for_status()
            return
        await asyncio.sleep(0.2)
    raise SystemExit("the push receiver did not listen in 30 s")


async def _dump(control: httpx.AsyncClient) -> list[tuple[str, float]]:
    return [(id_, at) for id_, at in (await control.get("/dump")).json()]


def _rate(answers: list[tuple[str, float]]) -> float:
    times = sorted(at for _, at in answers)
    span = times[-1] - times[0]
    return (len(times) - 1) / span if span > 0 else float("inf")


def _percentiles(values: list[float]) -> tuple[float, float]:
    values = sorted(values)
    return values[len(values) // 2], values[int(len(values) * 0.99)]


async def _throughput(bench: Bench, control: httpx.AsyncClient, url: str) -> list[Row]:
    """Rates and CPU per message, best of two each, the bare clients and the SQLite
    consumer alternating (a neighbour's burst then hits both alike); PostgreSQL once."""
    count = bench.consume_count
    best: dict[str, tuple[float, float]] = {}  # rate, CPU µs per message

    def keep(what: str, rate: float, cpu_us: float) -> None:
        if rate > best.get(what, (0.0, 0.0))[0]:
            best[what] = (rate, cpu_us)

    databases = {"SQLite": f"sqlite+aiosqlite:///{bench.work / 'push.db'}"}
    async with bench.postgres_database() as postgres:
        for round_ in range(2):
            for shape in SHAPES:
                cpu_us = (await _bare(url, count=count, shape=shape))["cpu_us"]
                answers = await _dump(control)
                if len(answers) != count:
                    raise SystemExit(f"bare client: {len(answers)} of {count} answered")
                keep(shape, _rate(answers), cpu_us)
            if postgres and round_ == 1:
                databases["PostgreSQL"] = postgres
            for label, database_url in databases.items():
                keep(label, *await _consumer_rate(bench, control, database_url, url, count))
    rows = [
        Row(
            f"bare httpx client, {SHAPES[shape]} ({CONCURRENCY} in flight, best of 2; "
            f"{best[shape][1]:,.0f} CPU µs/msg)",
            best[shape][0],
            "msg/s",
        )
        for shape in SHAPES
    ]
    reference = max(best[shape][0] for shape in SHAPES)
    fastest = max(SHAPES, key=lambda shape: best[shape][0])
    for label in databases:
        rate, cpu_us = best[label]
        ratio = rate / reference
        rows.append(
            Row(
                f"push: `python -m consumers`, {label}, to the receiver (concurrency "
                f"{CONCURRENCY}, {count:,} msgs queued{', best of 2' if label == 'SQLite' else ''}"
                f"; {cpu_us:,.0f} CPU µs/msg, the client's {best[fastest][1]:,.0f})",
                rate,
                "msg/s",
                "the faster bare client",
                ratio,
                ">= 0.80",
                ratio >= 0.80,
            )
        )
    return rows


async def _consumer_rate(
    bench: Bench, control: httpx.AsyncClient, database_url: str, url: str, count: int
) -> tuple[float, float]:
    """A consumer draining `count` queued messages to the receiver: msg/s from the first
    answer to the last, and its CPU µs per message over the same span (near enough)."""
    await bare.fill(bench.url, bench.exchange, "order.created", count)
    async with _consumer(bench, database_url, url) as pid:
        deadline = time.monotonic() + 120
        while (first := int((await control.get("/count")).text)) == 0:
            if time.monotonic() > deadline:
                raise SystemExit(f"push consumer stalled: see {bench.work}/push.log")
            await asyncio.sleep(0.005)
        cpu_before = cpu_time.tree_cpu_s(pid)
        while int((await control.get("/count")).text) < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"push consumer stalled: see {bench.work}/push.log")
            await asyncio.sleep(0.05)
        cpu_us = (cpu_time.tree_cpu_s(pid) - cpu_before) / (count - first) * 1e6
    return _rate(await _dump(control)), cpu_us


async def _latency(bench: Bench, control: httpx.AsyncClient, url: str) -> list[Row]:
    """The target's rate, and a quarter of it: what the pipeline adds when the consumer's
    core is not busy, beside what it adds when it is."""
    rows = []
    for rate in (RATE, RATE // 4):
        count = rate * RATE_SECONDS
        bare_ms = (await _bare(url, count=count, shape="clients", rate=rate))["ms"]
        await _dump(control)
        bare_p50, bare_p99 = _percentiles(bare_ms)
        p50, p99, cpu = await _added_latency(bench, control, url, rate, count)
        target = rate == RATE
        rows += [
            Row(
                f"bare httpx client ({SHAPES['clients']}) at {rate} msg/s, POST round trip: "
                f"p50 {bare_p50:.1f} ms",
                bare_p99,
                "ms p99",
            ),
            Row(
                f"push at {rate} msg/s, SQLite, stored → receiver's answer: p50 {p50:.1f} ms "
                f"(the consumer {cpu:.0%} of a core)",
                p99,
                "ms p99",
                "bare round trip",
                p99 / bare_p99 if bare_p99 else None,
                "<= 20 ms" if target else "",
                p99 <= 20 if target else None,
            ),
        ]
    return rows


async def _added_latency(
    bench: Bench, control: httpx.AsyncClient, url: str, rate: int, count: int
) -> tuple[float, float, float]:
    """p50 and p99 ms from `persisted_at` to the receiver's answer, messages published
    at `rate`; and the consumer's CPU meanwhile, in cores."""
    database_url = f"sqlite+aiosqlite:///{bench.work / f'push-latency-{rate}.db'}"
    async with _consumer(bench, database_url, url) as pid:
        # Warm: the process up, its connections open, the first batch's costs paid.
        await _publish(bench, "warm", 50, rate)
        await _until(control, 50)
        await _dump(control)
        cpu_before, began = cpu_time.tree_cpu_s(pid), time.perf_counter()
        await _publish(bench, "lat", count, rate)
        await _until(control, count)
        cpu = (cpu_time.tree_cpu_s(pid) - cpu_before) / (time.perf_counter() - began)
    answered = dict(await _dump(control))
    store = await open_store(database_url)
    try:
        async with store.engine.connect() as connection:
            stored = dict(
                (
                    await connection.execute(
                        select(messages.c.message_id, messages.c.persisted_at).where(
                            messages.c.queue == bench.queue, messages.c.message_id.like("lat-%")
                        )
                    )
                ).all()
            )
    finally:
        await store.close()
    added = [
        (answered[id_] - persisted.replace(tzinfo=UTC).timestamp()) * 1000
        for id_, persisted in stored.items()
    ]
    p50, p99 = _percentiles(added)
    return p50, p99, cpu


async def _until(control: httpx.AsyncClient, count: int) -> None:
    deadline = time.monotonic() + 60
    while int((await control.get("/count")).text) < count:
        if time.monotonic() > deadline:
            raise SystemExit("push: not everything reached the receiver")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def _consumer(bench: Bench, database_url: str, url: str) -> AsyncIterator[int]:
    topology = bench.work / "push-topology.yaml"
    topology.write_text(
        f"exchanges: [{{name: {bench.exchange}, type: topic}}]\n"
        f"queues: [{{name: {bench.queue}}}]\n"
        f"bindings: [{{exchange: {bench.exchange}, queue: {bench.queue}, routing_key: '#'}}]\n"
        f"subscriptions: [{{queue: {bench.queue}, url: '{url}', secret_env: PUSH_SECRET,"
        f" concurrency: {CONCURRENCY}}}]\n"
    )
    env = {**bench.gateway_env(database_url), "TOPOLOGY_FILE": str(topology)}
    process = await bench.spawn(
        ["-m", "consumers", "--queue", bench.queue], {**env, "PUSH_SECRET": SECRET}, "push"
    )
    try:
        yield process.pid
        if process.returncode is not None:
            raise SystemExit(f"push consumer exited: see {bench.work}/push.log")
    finally:
        await stop(process)


async def _publish(bench: Bench, prefix: str, count: int, rate: int) -> None:
    """Publish `count` messages at `rate` msg/s, open loop (confirms awaited at the end)."""
    connection = await aiormq.connect(bench.url)
    channel = await connection.channel(publisher_confirms=True)
    sent: list[Any] = []
    started = time.perf_counter()
    for index in range(count):
        wait = started + index / rate - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        properties = spec.Basic.Properties(
            content_type="application/json", delivery_mode=2, message_id=f"{prefix}-{index}"
        )
        sent.append(
            asyncio.ensure_future(
                channel.basic_publish(
                    bare.BODY,
                    exchange=bench.exchange,
                    routing_key="order.created",
                    properties=properties,
                )
            )
        )
    await asyncio.gather(*sent)
    await connection.close()


async def _bare(url: str, *, count: int, shape: str, rate: int = 0) -> dict[str, Any]:
    """Run the bare client in its own process: its CPU µs per request (`cpu_us`), and
    each request's ms when open loop (`ms`)."""
    argv = [sys.executable, "-m", "bench.push", "--url", url, "--count", str(count)]
    argv += ["--shape", shape]
    if rate:
        argv += ["--rate", str(rate)]
    process = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, cwd=ROOT)
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise SystemExit("the bare push client failed")
    result: dict[str, Any] = json.loads(out)
    return result


# -- the bare client (`python -m bench.push`) ------------------------------------------------
async def bare_client(url: str, count: int, rate: int, shape: str) -> list[float]:
    """POST `count` bodies, `CONCURRENCY` in flight (closed loop), or at `rate` msg/s (open
    loop, at most `CONCURRENCY` in flight; per-request ms returned). `shape`: "pool", one
    client with a pool of `CONCURRENCY` connections, or "clients", a client per connection
    as the consumer has (consumers/push.py says why)."""
    pool = shape == "pool"
    size = CONCURRENCY if pool else 1
    limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
    clients = [
        httpx.AsyncClient(limits=limits, timeout=5) for _ in range(1 if pool else CONCURRENCY)
    ]
    idle = list(clients)
    slots = asyncio.Semaphore(CONCURRENCY)
    took: list[float] = []

    async def post(index: int) -> None:
        headers = {"content-type": "application/json", "webhook-id": f"bare-{index}"}
        async with slots:
            client = idle[0] if pool else idle.pop()
            began = time.perf_counter()
            try:
                response = await client.post(url, content=bare.BODY, headers=headers)
            finally:
                if not pool:
                    idle.append(client)
            response.raise_for_status()
            took.append((time.perf_counter() - began) * 1000)

    try:
        if rate:
            tasks = []
            started = time.perf_counter()
            for index in range(count):
                wait = started + index / rate - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                tasks.append(asyncio.ensure_future(post(index)))
            await asyncio.gather(*tasks)
            return took
        indexes = iter(range(count))

        async def lane() -> None:
            for index in indexes:
                await post(index)

        await asyncio.gather(*(lane() for _ in range(CONCURRENCY)))
        return []
    finally:
        for client in clients:
            await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description="the push phase's bare httpx client")
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=int, default=0)
    parser.add_argument("--shape", choices=("pool", "clients"), default="pool")
    args = parser.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    began = time.process_time()
    took = asyncio.run(bare_client(args.url, args.count, args.rate, args.shape))
    cpu_us = (time.process_time() - began) / args.count * 1e6  # its start-up not counted
    print(json.dumps({"ms": took, "cpu_us": cpu_us}))


if __name__ == "__main__":
    main()
