"""`/metrics` scraped from the real processes: the consumer's health port, and the gateway
with two workers, whose counts add up whichever worker answers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractConnection

from tests.conftest import Names
from tests.support.processes import eventually, free_port, start, start_consumer

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def sample(text: str, name: str, labels: str = "") -> float | None:
    pattern = (
        "^" + re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else "") + r" (\S+)$"
    )
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else None


@pytest.mark.timeout(120)
async def test_gateway_metrics_add_up_across_two_workers(
    rabbitmq_url: str, sqlite_url: str, topology_file: Path, names: Names, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        "RABBITMQ_URL": rabbitmq_url,
        "DATABASE_URL": sqlite_url,
        "TOPOLOGY_FILE": str(topology_file),
        "LOG_FORMAT": "json",
    }
    args = ["--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    gateway = await start("gateway", args, env, tmp_path / "gateway.log")
    base_url = f"http://127.0.0.1:{port}"
    try:

        async def both_ready() -> bool:
            return gateway.output().count("Application startup complete") == 2

        await eventually(both_ready, 60, "two workers to start")
        for index in range(4):
            # A connection each, so the kernel spreads them over the workers.
            async with httpx.AsyncClient(base_url=base_url) as client:
                posted = await client.post(
                    f"/v1/exchanges/{names.exchange}/messages",
                    json={"routing_key": "order.created", "payload": {"n": index}},
                )
                assert posted.status_code == 202, posted.text
        scraped = []
        pids = set()
        for _ in range(8):
            async with httpx.AsyncClient(base_url=base_url) as client:
                scraped.append((await client.get("/metrics")).text)
    finally:
        await gateway.stop()
    for text in scraped:
        assert sample(text, "hareway_published_messages_total", 'outcome="confirmed"') == 4.0
        assert sample(text, "hareway_http_responses_total", 'status="202"') == 4.0
        assert sample(text, "hareway_publish_confirm_seconds_count") == 4.0
        assert sample(text, "hareway_broker_connected", 'connection="publish"') == 1.0
        # The hostile suite reads these names: they stay.
        assert sample(text, "hareway_broker_reconnects_total", 'connection="publish"') == 0.0
    lines = [json.loads(line) for line in gateway.output().splitlines() if line.strip()]
    for line in lines:
        assert line["component"] == "gateway"
        if line["event"].startswith("Started server process"):
            pids.add(line["event"])
    assert len(pids) >= 2, "both workers log in the one format"


@pytest.mark.timeout(120)
async def test_consumer_metrics_on_the_health_port(
    rabbitmq_url: str,
    sqlite_url: str,
    topology_file: Path,
    names: Names,
    amqp: AbstractConnection,
    tmp_path: Path,
) -> None:
    port = free_port()
    env = {
        "RABBITMQ_URL": rabbitmq_url,
        "DATABASE_URL": sqlite_url,
        "TOPOLOGY_FILE": str(topology_file),
        "HEALTH_PORT": str(port),
        "QUEUE_SAMPLE_S": "0.2",
    }
    consumer = await start_consumer([names.queue], env, tmp_path / "consumer.log")
    channel = await amqp.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(names.exchange)
    url = f"http://127.0.0.1:{port}/metrics"
    queue = f'queue="{names.queue}"'
    try:
        # Three messages, and the first one again (a redelivery as far as the store knows).
        for message_id in ("m1", "m2", "m3", "m1"):
            await exchange.publish(
                aio_pika.Message(
                    b'{"n": 1}', content_type="application/json", message_id=message_id
                ),
                routing_key="order.created",
            )
        async with httpx.AsyncClient() as client:

            async def all_seen() -> bool:
                text = (await client.get(url)).text
                stored = sample(text, "hareway_consumer_stored_messages_total", queue) or 0
                duplicates = sample(text, "hareway_consumer_duplicate_messages_total", queue) or 0
                return stored + duplicates >= 4

            await eventually(all_seen, 30, "four deliveries to be committed")
            text = (await client.get(url)).text
    finally:
        await channel.close()
        await consumer.stop()
    assert sample(text, "hareway_consumer_stored_messages_total", queue) == 3.0
    assert sample(text, "hareway_consumer_duplicate_messages_total", queue) == 1.0
    assert (sample(text, "hareway_consumer_commit_seconds_count", queue) or 0) >= 1
    assert sample(text, "hareway_consumer_batch_size_sum", queue) == 4.0
    assert sample(text, "hareway_consumer_store_up", queue) == 1.0
    assert sample(text, "hareway_consumer_queue_depth", queue) is not None
    assert sample(text, "hareway_consumer_broker_connected") == 1.0
