"""`python -m bench` (`make bench`): one run, one machine, one broker; prints and records a table.

Every figure is set against a reference measured in the same run, because these machines
are shared and noisy: only ratios are comparable between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import asyncpg
from sqlalchemy import func, select

from bench import bare, cpu_time, wrk
from bench.common import Row, free_port, stop
from bench.peers import peers_phase
from bench.push import push_phase
from bench.scale import scale_out
from bench.store import TARGET_ROWS, store_at_scale
from hareway.store import open_store
from hareway.store.schema import messages

ROOT = Path(__file__).resolve().parent.parent
SINGLE_BODY = json.dumps({"routing_key": "order.created", "payload": json.loads(bare.BODY)})
BATCH_SIZE = 100
BATCH_BODY = json.dumps({"messages": [json.loads(SINGLE_BODY)] * BATCH_SIZE})
E2E_BODY = json.dumps(
    {"routing_key": "order.created", "message_id": "{id}", "payload": json.loads(bare.BODY)}
)


PHASES = ("publishers", "gateways", "consumers", "peers", "e2e", "scale", "store", "push")


class Bench:
    def __init__(
        self,
        rabbitmq_url: str,
        postgres_admin: str | None,
        duration: float,
        consume_count: int,
        work: Path,
        phases: frozenset[str] = frozenset(PHASES),
        store_rows: dict[str, int] | None = None,
        which: wrk.Which = shutil.which,
    ) -> None:
        self.url = rabbitmq_url
        # The closed-loop HTTP load: wrk where installed, else the Python generator.
        self.wrk = wrk.find(which)
        self.phases = phases
        self.store_rows = store_rows or dict(TARGET_ROWS)
        self.serving = 0
        # Seen only when the broker runs on this machine under a user whose /proc we may read.
        self.broker = cpu_time.listening_pid(urlsplit(rabbitmq_url).port or 5672)
        self.postgres_admin = postgres_admin
        self.duration = duration
        self.consume_count = consume_count
        self.work = work
        self.prefix = f"bench{uuid.uuid4().hex[:6]}"
        self.exchange = self.prefix
        self.queue = f"{self.prefix}.q"
        # A non-durable queue: the broker writes nothing to disk for what it holds, so the
        # light-load rows on it show the latency that is not the disk's.
        self.transient_exchange = f"{self.prefix}.transient"
        self.transient_queue = f"{self.prefix}.tq"
        # The light-load rows' exchanges, each with the kind of queue behind it.
        self.light_kinds = {
            self.exchange: "durable queue",
            self.transient_exchange: "non-durable queue (no disk write)",
        }
        self.rows: list[Row] = []
        # The push phase's rows: a section of docs/performance.md of their own.
        self.push_rows: list[Row] = []
        # Set by the phases that measure them, so the peers phase need not measure again.
        self.hareway_single: dict[str, float] | None = None
        self.hareway_sqlite_rate: float | None = None
        # Set by the publishers phase: the references of the gateway rows.
        self.r1 = 0.0
        self.r1_cpu_us = 0.0
        self.bare_light_p99: dict[str, float] = {}
        self.topology = work / "topology.yaml"
        self.topology.write_text(
            f"exchanges: [{{name: {self.exchange}, type: topic}},"
            f" {{name: {self.transient_exchange}, type: topic}}]\n"
            f"queues: [{{name: {self.queue}}}, {{name: {self.transient_queue}, durable: false}}]\n"
            f"bindings: [{{exchange: {self.exchange}, queue: {self.queue}, routing_key: '#'}},"
            f" {{exchange: {self.transient_exchange}, queue: {self.transient_queue},"
            f" routing_key: '#'}}]\n"
        )

    # -- broker housekeeping ---------------------------------------------------------------
    async def declare(self) -> None:
        connection = await aio_pika.connect(self.url)
        channel = await connection.channel()
        exchange = await channel.declare_exchange(self.exchange, "topic", durable=True)
        queue = await channel.declare_queue(self.queue, durable=True)
        await queue.bind(exchange, "#")
        transient = await channel.declare_exchange(self.transient_exchange, "topic", durable=True)
        transient_queue = await channel.declare_queue(self.transient_queue, durable=False)
        await transient_queue.bind(transient, "#")
        await connection.close()

    async def purge(self) -> None:
        connection = await aio_pika.connect(self.url)
        channel = await connection.channel()
        for name in (self.queue, self.transient_queue):
            queue = await channel.get_queue(name)
            await queue.purge()
        await connection.close()

    async def remove(self) -> None:
        connection = await aio_pika.connect(self.url)
        channel = await connection.channel()
        for queue, exchange in (
            (self.queue, self.exchange),
            (self.transient_queue, self.transient_exchange),
        ):
            await channel.queue_delete(queue)
            await channel.exchange_delete(exchange)
        await connection.close()

    # -- processes -------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def server(self, argv: list[str], env: dict[str, str], name: str) -> AsyncIterator[str]:
        port = free_port()
        process = await self.spawn([arg.replace("{port}", str(port)) for arg in argv], env, name)
        self.serving = process.pid
        try:
            await self._wait_http(port, process, name)
            yield f"http://127.0.0.1:{port}"
        finally:
            await stop(process)

    async def spawn(
        self, argv: list[str], env: dict[str, str], name: str
    ) -> asyncio.subprocess.Process:
        with (self.work / f"{name}.log").open("wb") as log:
            return await asyncio.create_subprocess_exec(
                sys.executable,
                *argv,
                env={**os.environ, **env},
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                cwd=self.work,
            )

    async def _wait_http(self, port: int, process: asyncio.subprocess.Process, name: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise SystemExit(f"{name} exited: see {self.work / (name + '.log')}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.2)
        raise SystemExit(f"{name} did not listen in 30 s")

    @property
    def load_generator(self) -> str:
        if self.wrk:
            return f"wrk ({self.wrk}, 1 thread) for the closed-loop HTTP rows"
        return (
            "the Python load generator (bench/loadgen.py): wrk is not installed "
            "(apt-get install wrk), so the load takes more of the cores"
        )

    async def load(
        self,
        url: str,
        body: str,
        connections: int,
        duration: float,
        headers: dict[str, str] | None = None,
        expect: int = 202,
        **extra: float,
    ) -> dict[str, float]:
        if self.wrk and not extra:
            return await wrk.run(self.wrk, url, body, connections, duration, self.work, headers)
        argv = [
            sys.executable,
            "-m",
            "bench.loadgen",
            "--url",
            url,
            "--body",
            body,
            "--connections",
            str(connections),
            "--duration",
            str(duration),
            "--expect",
            str(expect),
        ]
        for name, value in (headers or {}).items():
            argv += ["--header", f"{name}: {value}"]
        for key, number in extra.items():
            argv += [f"--{key}", str(number)]
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, cwd=ROOT
        )
        out, _ = await process.communicate()
        result: dict[str, float] = json.loads(out)
        return result

    def gateway_env(self, database_url: str) -> dict[str, str]:
        return {
            "RABBITMQ_URL": self.url,
            "TOPOLOGY_FILE": str(self.topology),
            "DATABASE_URL": database_url,
            "PYTHONPATH": str(ROOT),
            "LOG_LEVEL": "WARNING",
        }

    # -- the phases ------------------------------------------------------------------------
    async def run(self) -> list[Row]:
        await self.declare()
        try:
            # The gateway rows are ratios to R1, so they need the publishers phase.
            if self.phases & {"publishers", "gateways"}:
                await self.publishers()
            if "gateways" in self.phases:
                await self.gateways()
            if "consumers" in self.phases:
                await self.consumers()
            if "peers" in self.phases:
                self.rows += await peers_phase(self, SINGLE_BODY)
            if "e2e" in self.phases:
                await self.end_to_end()
            if "scale" in self.phases:
                await self.scale()
            if "store" in self.phases:
                self.rows += await store_at_scale(self, self.store_rows)
            if "push" in self.phases:
                self.push_rows += await push_phase(self)
        finally:
            await self.remove()
        return self.rows

    async def publishers(self) -> None:
        first = await self.bare_rate(bare.aio_pika_publisher)
        aiormq = await self.bare_rate(bare.aiormq_publisher)
        second = await self.bare_rate(bare.aio_pika_publisher)
        # The reference twice, keeping the better: a reference that a neighbour's burst
        # slowed down would flatter every ratio set against it.
        self.r1 = max(first.rate, second.rate)
        # Its CPU per message as the mean of both: the gateway's CPU row is a ratio to it.
        self.r1_cpu_us = (first.cpu_us + second.cpu_us) / 2
        self.rows.append(
            Row(
                "R1 bare aio-pika publisher (256 in flight, best of 2; "
                f"{self.r1_cpu_us:.0f} CPU µs per message)",
                self.r1,
                "msg/s",
            )
        )
        self.rows.append(
            Row(
                f"bare aiormq publisher (256 in flight; {aiormq.cpu_us:.0f} CPU µs per message)",
                aiormq.rate,
                "msg/s",
                "R1",
                aiormq.rate / self.r1,
            )
        )
        for exchange, kind in self.light_kinds.items():
            p50, p99 = await bare.aio_pika_latency(
                self.url, exchange, "order.created", self.duration
            )
            await self.purge()
            self.bare_light_p99[exchange] = p99
            self.rows.append(
                Row(
                    f"bare aio-pika publisher, 4 in flight, {kind}: p50 {p50:.2f} ms",
                    p99,
                    "ms p99",
                )
            )

    async def bare_rate(self, publisher: Any) -> bare.Published:
        published: bare.Published = await publisher(
            self.url, self.exchange, "order.created", self.duration
        )
        await self.purge()
        return published

    async def gateways(self) -> None:
        sqlite = f"sqlite+aiosqlite:///{self.work / 'gateway.db'}"
        naive = [
            "-m",
            "uvicorn",
            "bench.naive_gateway:app",
            "--port",
            "{port}",
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        async with self.server(naive, self.gateway_env(sqlite), "naive") as base:
            single = await self.measure(base, SINGLE_BODY, 64)
            batch = await self.measure(base, BATCH_BODY, 16, path="batch")
        await self.purge()
        self.rows.append(
            Row(
                "naive gateway, single (64 conns)",
                single["ok_rps"],
                "req/s",
                "R1",
                single["ok_rps"] / self.r1,
            )
        )
        self.rows.append(
            Row(
                "naive gateway, batch of 100 (16 conns)",
                batch["ok_rps"] * BATCH_SIZE,
                "msg/s",
                "R1",
                batch["ok_rps"] * BATCH_SIZE / self.r1,
            )
        )

        hareway = ["-m", "gateway", "--port", "{port}"]
        async with self.server(hareway, self.gateway_env(sqlite), "hareway") as base:
            single = await self.measure(base, SINGLE_BODY, 64)
            await self.purge()
            batch = await self.measure(base, BATCH_BODY, 16, path="batch")
            await self.purge()
            light = {
                exchange: await self.measure(base, SINGLE_BODY, 4, exchange=exchange)
                for exchange in self.light_kinds
            }
        await self.purge()
        self.hareway_single = single
        self.add_publish_rows("1 worker", single, batch, targets=True)
        self.add_cpu_row(single)
        self.add_ceiling_row("single request", single, 1)
        self.add_ceiling_row("message in a batch", batch, BATCH_SIZE)
        for exchange, result in light.items():
            kind = self.light_kinds[exchange]
            ratio = result["p99_ms"] / self.bare_light_p99[exchange]
            self.rows.append(
                Row(
                    f"hareway light load (4 conns), {kind}: p50 {result['p50_ms']:.2f} ms",
                    result["p99_ms"],
                    "ms p99",
                    f"bare, 4 in flight, {kind}",
                    ratio,
                    "<= 1.30x",
                    ratio <= 1.30,
                )
            )
        workers = os.cpu_count() or 1
        if workers > 1:
            argv = [*hareway, "--workers", str(workers)]
            async with self.server(argv, self.gateway_env(sqlite), "hareway-workers") as base:
                single = await self.measure(base, SINGLE_BODY, 64)
                await self.purge()
                batch = await self.measure(base, BATCH_BODY, 16, path="batch")
            await self.purge()
            self.add_publish_rows(f"{workers} workers", single, batch, targets=False)

    def add_publish_rows(
        self, label: str, single: dict[str, float], batch: dict[str, float], *, targets: bool
    ) -> None:
        single_ratio = single["ok_rps"] / self.r1
        batch_rate = batch["ok_rps"] * BATCH_SIZE
        batch_ratio = batch_rate / self.r1
        self.rows.append(
            Row(
                f"hareway single, {label} (64 conns; p50 {single['p50_ms']:.1f} ms, p99 "
                f"{single['p99_ms']:.1f} ms, {int(single['errors'])} errors)",
                single["ok_rps"],
                "req/s",
                "R1",
                single_ratio,
                ">= 0.80" if targets else "",
                (single_ratio >= 0.80 and single["errors"] == 0) if targets else None,
            )
        )
        self.rows.append(
            Row(
                f"hareway batch of 100, {label} (16 conns; p50 {batch['p50_ms']:.1f} ms, p99 "
                f"{batch['p99_ms']:.1f} ms, {int(batch['errors'])} errors)",
                batch_rate,
                "msg/s",
                "R1",
                batch_ratio,
                ">= 1.20" if targets else "",
                (batch_ratio >= 1.20 and batch["errors"] == 0) if targets else None,
            )
        )

    def add_cpu_row(self, single: dict[str, float]) -> None:
        """The gateway's own CPU per single request against the bare publisher's per
        message: what HTTP in front of the publish costs on the processor."""
        if "gateway_us" not in single or not self.r1_cpu_us:
            return
        ratio = single["gateway_us"] / self.r1_cpu_us
        self.rows.append(
            Row(
                "gateway CPU per single request (1 worker, 64 conns)",
                single["gateway_us"],
                "µs",
                f"bare publisher, {self.r1_cpu_us:.0f} µs per message",
                ratio,
                "<= 1.20x",
                ratio <= 1.20,
            )
        )

    def add_ceiling_row(self, what: str, result: dict[str, float], per_request: int) -> None:
        """What the cores allow: all CPU that one message costs, gateway + broker + load."""
        if "broker_us" not in result:
            return  # a broker elsewhere: its CPU is not ours to count
        parts = {
            "gateway": result["gateway_us"] / per_request,
            "broker": result["broker_us"] / per_request,
            "load generator": result["loadgen_us"] / per_request,
        }
        cores = os.cpu_count() or 1
        ceiling = cores * 1e6 / sum(parts.values())
        spent = ", ".join(f"{name} {us:,.0f} µs" for name, us in parts.items())
        self.rows.append(
            Row(
                f"CPU per {what} (1 worker): {spent}; the most {cores} cores allow",
                ceiling,
                "msg/s",
                "R1",
                ceiling / self.r1,
            )
        )

    async def measure(
        self,
        base: str,
        body: str,
        connections: int,
        path: str = "messages",
        *,
        exchange: str = "",
        url: str = "",
        headers: dict[str, str] | None = None,
        expect: int = 202,
    ) -> dict[str, float]:
        url = url or f"{base}/v1/exchanges/{exchange or self.exchange}/{path}"
        # Warm up: connections, caches, JIT-free paths.
        await self.load(url, body, connections, 1.0, headers, expect)
        await self.purge()
        gateway_before = cpu_time.tree_cpu_s(self.serving)
        broker_before = cpu_time.tree_cpu_s(self.broker) if self.broker else 0.0
        result = await self.load(url, body, connections, self.duration, headers, expect)
        requests = max(result["ok_rps"] * result["elapsed_s"], 1.0)
        result["gateway_us"] = (cpu_time.tree_cpu_s(self.serving) - gateway_before) / requests * 1e6
        if self.broker:
            broker_s = cpu_time.tree_cpu_s(self.broker) - broker_before
            result["broker_us"] = broker_s / requests * 1e6
        result["loadgen_us"] = result["cpu_s"] / requests * 1e6
        return result

    async def consumers(self) -> None:
        count = self.consume_count
        # Best of two, as for R1: a reference slowed by a neighbour flatters the ratios.
        reference = 0.0
        for _ in range(2):
            await bare.fill(self.url, self.exchange, "order.created", count)
            reference = max(reference, await bare.consume_loop(self.url, self.queue, count))
        self.rows.append(
            Row(
                "bare consume+ack loop (prefetch 500, multiple acks, best of 2)",
                reference,
                "msg/s",
            )
        )
        databases = {"SQLite": f"sqlite+aiosqlite:///{self.work / 'consume.db'}"}
        async with self.postgres_database() as postgres:
            if postgres:
                databases["PostgreSQL"] = postgres
            for label, database_url in databases.items():
                await bare.fill(self.url, self.exchange, "order.created", count)
                rate = await self.hareway_consumer_rate(database_url, count)
                if label == "SQLite":
                    self.hareway_sqlite_rate = rate
                ratio = rate / reference
                self.rows.append(
                    Row(
                        f"hareway consumer, {label}",
                        rate,
                        "msg/s",
                        "bare loop",
                        ratio,
                        ">= 1.00",
                        ratio >= 1.00,
                    )
                )
            # Consumers compete on a queue to scale out: what a second process adds.
            label = "PostgreSQL" if "PostgreSQL" in databases else "SQLite"
            await bare.fill(self.url, self.exchange, "order.created", count)
            rate = await self.hareway_consumer_rate(databases[label], count, processes=2)
            self.rows.append(
                Row(f"hareway consumer, 2 processes on one queue, {label}", rate, "msg/s",
                    "bare loop", rate / reference)
            )  # fmt: skip

    async def hareway_consumer_rate(
        self, database_url: str, count: int, processes: int = 1
    ) -> float:
        """`processes` consumers competing on the one queue, into one store."""
        env = {**self.gateway_env(database_url), "LOG_LEVEL": "WARNING"}
        labels = ["consumer"] if processes == 1 else [f"consumer-{n}" for n in range(processes)]
        running = [
            await self.spawn(["-m", "consumers", "--queue", self.queue], env, label)
            for label in labels
        ]
        store = await open_store(database_url)
        try:
            deadline = time.monotonic() + 120
            while await store.count(self.queue) < count:
                if time.monotonic() > deadline or any(p.returncode is not None for p in running):
                    raise SystemExit(f"consumer stalled: see {self.work / (labels[0] + '.log')}")
                await asyncio.sleep(0.1)
            async with store.engine.connect() as connection:
                first, last = (
                    await connection.execute(
                        select(
                            func.min(messages.c.persisted_at), func.max(messages.c.persisted_at)
                        ).where(messages.c.queue == self.queue)
                    )
                ).one()
            async with store.engine.begin() as connection:
                await connection.execute(messages.delete().where(messages.c.queue == self.queue))
        finally:
            for process in running:
                await stop(process)
            await store.close()
        # Rows commit in batches: the span from the first commit to the last misses one
        # batch's worth of time, so count the first batch out.
        span = (last - first).total_seconds()
        return count / span if span > 0 else float("inf")

    @contextlib.asynccontextmanager
    async def postgres_database(self) -> AsyncIterator[str | None]:
        if not self.postgres_admin:
            yield None
            return
        name = f"hareway_bench_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(self.postgres_admin)
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield (
                self.postgres_admin.replace("postgresql://", "postgresql+asyncpg://").rsplit(
                    "/", 1
                )[0]
                + f"/{name}"
            )
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()

    async def scale(self) -> None:
        async with self.postgres_database() as postgres:
            database_url = postgres or f"sqlite+aiosqlite:///{self.work / 'scale.db'}"
            self.rows += await scale_out(self, database_url, SINGLE_BODY)

    async def end_to_end(self, rate: int = 1000, seconds: int = 5) -> None:
        database_url = f"sqlite+aiosqlite:///{self.work / 'e2e.db'}"
        env = self.gateway_env(database_url)
        consumer = await self.spawn(["-m", "consumers", "--queue", self.queue], env, "e2e-consumer")
        try:
            async with self.server(["-m", "gateway", "--port", "{port}"], env, "e2e") as base:
                result = await self.load(
                    f"{base}/v1/exchanges/{self.exchange}/messages",
                    E2E_BODY,
                    32,
                    0,
                    rate=rate,
                    count=rate * seconds,
                )
                store = await open_store(database_url)
                deadline = time.monotonic() + 60
                while await store.count(self.queue) < rate * seconds:
                    if time.monotonic() > deadline:
                        raise SystemExit("end-to-end: not everything was stored")
                    await asyncio.sleep(0.1)
                async with store.engine.connect() as connection:
                    stored = dict(
                        (
                            await connection.execute(
                                select(messages.c.message_id, messages.c.persisted_at).where(
                                    messages.c.queue == self.queue
                                )
                            )
                        ).all()
                    )
                await store.close()
        finally:
            await stop(consumer)
        latencies = sorted(
            (stored[message_id].replace(tzinfo=UTC).timestamp() - sent) * 1000
            for message_id, sent, _ in result["records"]  # type: ignore[attr-defined]
        )
        p50 = latencies[len(latencies) // 2]
        p99 = latencies[int(len(latencies) * 0.99)]
        self.rows.append(
            Row(
                f"end to end at {rate} msg/s, sent → stored, p50 {p50:.1f} ms",
                p99,
                "ms p99",
                "",
                None,
                "<= 50 ms",
                p99 <= 50,
            )
        )


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    rabbit = "unknown"
    with contextlib.suppress(Exception):
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "rabbitmq-server"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        rabbit = out.stdout.strip() or rabbit
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "rabbitmq": rabbit,
        "packages": ", ".join(
            f"{name} {version(name)}"
            for name in ("aio-pika", "aiormq", "fastapi", "uvicorn", "SQLAlchemy")
        ),
    }


def render(rows: list[Row], info: dict[str, str]) -> str:
    lines = [
        f"Run {info['date']} on {info['cpu']}; Python {info['python']}, RabbitMQ "
        f"{info['rabbitmq']}; {info['packages']}."
        + (f" Load: {info['load']}." if "load" in info else ""),
        "",
        "| measurement | value | reference | ratio | target | met |",
        "|---|---:|---|---:|---|---|",
    ]
    for row in rows:
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else ""
        met = "" if row.ok is None else ("yes" if row.ok else "**no**")
        lines.append(
            f"| {row.name} | {row.value:,.1f} {row.unit} | {row.reference} | {ratio} "
            f"| {row.target} | {met} |"
        )
    return "\n".join(lines) + "\n"


BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
PUSH_BEGIN, PUSH_END = "<!-- bench:push:begin -->", "<!-- bench:push:end -->"


def record(table: str, document: Path, begin: str = BEGIN, end: str = END) -> None:
    """Put `table` between `begin` and `end`, leaving the rest of the document as it is
    (a section missing so far goes at the end)."""
    text = document.read_text() if document.exists() else "# Performance\n"
    if begin not in text:
        text = f"{text.rstrip()}\n\n{begin}\n{end}\n"
    head, _, rest = text.partition(begin)
    _, _, tail = rest.partition(end)
    document.write_text(f"{head}{begin}\n{table}{end}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per load phase")
    parser.add_argument("--consume-count", type=int, default=20000)
    parser.add_argument("--no-record", action="store_true", help="do not touch docs/")
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"comma-separated subset of {','.join(PHASES)}; a partial run is never recorded "
        "but for the push phase's own section",
    )
    parser.add_argument(
        "--store-rows",
        default=os.environ.get("HAREWAY_BENCH_STORE_ROWS", ""),
        metavar="POSTGRES[,SQLITE]",
        help="rows to grow the store phase's stores to (default "
        f"{TARGET_ROWS['PostgreSQL']:,},{TARGET_ROWS['SQLite']:,}; one number: both)",
    )
    args = parser.parse_args()
    phases = frozenset(args.phases.split(","))
    if not phases <= set(PHASES):
        parser.error(f"unknown phase in {args.phases!r}; choose from {','.join(PHASES)}")
    partial = phases != set(PHASES)
    store_rows = dict(TARGET_ROWS)
    if args.store_rows:
        counts = [int(count) for count in args.store_rows.replace("_", "").split(",")]
        store_rows = dict(zip(TARGET_ROWS, counts * 2 if len(counts) == 1 else counts, strict=True))
    rabbitmq_url = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
    postgres = os.environ.get("HAREWAY_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1/test")
    with tempfile.TemporaryDirectory(prefix="hareway-bench-") as work:
        bench = Bench(
            rabbitmq_url,
            postgres,
            args.duration,
            args.consume_count,
            Path(work),
            phases,
            store_rows,
        )
        print(f"load: {bench.load_generator}", file=sys.stderr)
        rows = asyncio.run(bench.run())
    info = {**machine(), "load": bench.load_generator}
    document = ROOT / "docs" / "performance.md"
    if rows:
        table = render(rows, info)
        print(table)
        if not (args.no_record or partial):
            record(table, document)
    if bench.push_rows:
        # Its own section: `--phases push` records it without touching the other phases'.
        table = render(bench.push_rows, info)
        print(table)
        if not args.no_record:
            record(table, document, PUSH_BEGIN, PUSH_END)
    missed = [row.name for row in rows + bench.push_rows if row.ok is False]
    if missed:
        print(f"targets missed: {len(missed)}", file=sys.stderr)


if __name__ == "__main__":
    main()
