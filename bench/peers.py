"""The peers phase (issue 16): what a Python user would pick instead of hareway, measured
in the same run under the same load, each as a ratio to hareway's own row.

- a FastStream gateway (bench/faststream_gateway.py) against hareway's single-message
  publish: same body, 64 connections, same duration; req/s and gateway CPU per request;
- a FastStream subscriber inserting into SQLite and acking per message
  (bench/faststream_consumer.py) against `python -m consumers` on SQLite, same count;
- RabbitMQ's management plugin's HTTP publish, only where the broker has the plugin
  enabled (never enabled by the bench): against hareway's single publish again.

The peers' packages are the `bench` extra (`pip install -e '.[bench]'`, done by
`make bench`): a user of the gateway never installs them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import sys
import time
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

import httpx

from bench import bare
from bench.common import Row, stop

if TYPE_CHECKING:
    from bench.__main__ import Bench

CONNECTIONS = 64
MANAGEMENT_PORT = 15672


async def peers_phase(bench: Bench, single_body: str) -> list[Row]:
    """`single_body`: the envelope hareway's single publish row sends."""
    rows: list[Row] = []
    sqlite = f"sqlite+aiosqlite:///{bench.work / 'peers-gateway.db'}"
    if bench.hareway_single is None:
        # A partial run without the gateways phase: hareway's row measured here.
        hareway = ["-m", "gateway", "--port", "{port}"]
        async with bench.server(hareway, bench.gateway_env(sqlite), "hareway-peers") as base:
            bench.hareway_single = await bench.measure(base, single_body, CONNECTIONS)
        await bench.purge()
    reference = bench.hareway_single
    rows.append(_reference_row(reference))

    faststream = [
        "-m",
        "uvicorn",
        "bench.faststream_gateway:app",
        "--port",
        "{port}",
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    async with bench.server(faststream, bench.gateway_env(sqlite), "faststream-gateway") as base:
        peer = await bench.measure(base, single_body, CONNECTIONS)
    await bench.purge()
    rows += _publish_rows("FastStream gateway (FastAPI + RabbitRouter, confirms)", peer, reference)

    management = await management_url(bench.url)
    if management is None:
        print(
            f"peers: no management plugin answers on 127.0.0.1:{MANAGEMENT_PORT} "
            "(guest/guest): its HTTP publish row is skipped",
            file=sys.stderr,
        )
    else:
        peer = await _management_publish(bench, management)
        await bench.purge()
        rows += _publish_rows("RabbitMQ management HTTP publish", peer, reference)

    rows += await _consumer_rows(bench)
    return rows


def _reference_row(reference: dict[str, float]) -> Row:
    return Row(
        f"hareway single (64 conns; p50 {reference['p50_ms']:.1f} ms, p99 "
        f"{reference['p99_ms']:.1f} ms; gateway {reference['gateway_us']:,.0f} µs CPU/req)",
        reference["ok_rps"],
        "req/s",
    )


def _publish_rows(label: str, peer: dict[str, float], reference: dict[str, float]) -> list[Row]:
    rows = [
        Row(
            f"{label}, 64 conns (p50 {peer['p50_ms']:.1f} ms, p99 {peer['p99_ms']:.1f} ms, "
            f"{int(peer['errors'])} errors)",
            peer["ok_rps"],
            "req/s",
            "hareway single",
            peer["ok_rps"] / reference["ok_rps"],
        )
    ]
    if peer.get("gateway_us") and reference.get("gateway_us"):
        # Its server's CPU per request against hareway's: the ratio says how many times
        # the CPU hareway spends the peer needs.
        rows.append(
            Row(
                f"{label}: server CPU per request",
                peer["gateway_us"],
                "µs",
                "hareway single",
                peer["gateway_us"] / reference["gateway_us"],
            )
        )
    return rows


async def management_url(amqp_url: str, port: int = MANAGEMENT_PORT) -> str | None:
    """The management API's base URL if the plugin answers (guest/guest) beside this
    machine's broker; None for a broker elsewhere, the load staying on loopback."""
    host = urlsplit(amqp_url).hostname or "127.0.0.1"
    if host not in ("127.0.0.1", "localhost"):
        return None
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(auth=("guest", "guest"), timeout=3) as client:
            answer = await client.get(f"{base}/api/overview")
    except httpx.HTTPError:
        return None
    return base if answer.status_code == 200 else None


async def _management_publish(bench: Bench, base: str) -> dict[str, float]:
    body = json.dumps(
        {
            "properties": {"delivery_mode": 2, "content_type": "application/json"},
            "routing_key": "order.created",
            "payload": bare.BODY.decode(),
            "payload_encoding": "string",
        }
    )
    url = f"{base}/api/exchanges/{quote('/', safe='')}/{bench.exchange}/publish"
    auth = base64.b64encode(b"guest:guest").decode()
    # The broker serves the plugin: its CPU is the broker's, there is no server process.
    broker = bench.broker or 0
    bench.serving = broker
    result = await bench.measure(
        "", body, CONNECTIONS, url=url, headers={"Authorization": f"Basic {auth}"}, expect=200
    )
    result.pop("gateway_us", None)
    return result


async def _consumer_rows(bench: Bench) -> list[Row]:
    count = bench.consume_count
    if bench.hareway_sqlite_rate is None:
        database_url = f"sqlite+aiosqlite:///{bench.work / 'peers-consume.db'}"
        await bare.fill(bench.url, bench.exchange, "order.created", count)
        bench.hareway_sqlite_rate = await bench.hareway_consumer_rate(database_url, count)
    reference = bench.hareway_sqlite_rate
    await bare.fill(bench.url, bench.exchange, "order.created", count)
    rate = await faststream_consumer_rate(bench, count)
    return [
        Row("hareway consumer, SQLite", reference, "msg/s"),
        Row(
            "FastStream subscriber, SQLite insert + ack per message",
            rate,
            "msg/s",
            "hareway consumer",
            rate / reference,
        ),
    ]


async def faststream_consumer_rate(bench: Bench, count: int) -> float:
    database = bench.work / "faststream-consume.db"
    argv = ["-m", "bench.faststream_consumer", "--queue", bench.queue, "--database", str(database)]
    process = await bench.spawn(argv, bench.gateway_env(""), "faststream-consumer")
    try:
        deadline = time.monotonic() + 300
        while (span := await asyncio.to_thread(_stored, database))[0] < count:
            if time.monotonic() > deadline or process.returncode is not None:
                raise SystemExit(
                    f"FastStream subscriber stalled: see {bench.work / 'faststream-consumer.log'}"
                )
            await asyncio.sleep(0.2)
    finally:
        await stop(process)
    await bench.purge()
    stored, first, last = span
    return stored / (last - first) if last > first else float("inf")


def _stored(database: object) -> tuple[int, float, float]:
    try:
        with sqlite3.connect(str(database), timeout=5) as db:
            row = db.execute(
                "SELECT count(*), coalesce(min(stored_at), 0), coalesce(max(stored_at), 0) "
                "FROM messages"
            ).fetchone()
    except sqlite3.OperationalError:
        return 0, 0.0, 0.0  # not created yet
    return int(row[0]), float(row[1]), float(row[2])
