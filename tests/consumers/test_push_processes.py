"""Push subscriptions across processes: a consumer killed mid-delivery, and a receiver
written in Node.js that checks the signatures with nothing but its own crypto."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractConnection

from tests.conftest import Names
from tests.consumers.support import (
    cleanup,
    retry_topology,
    running,
    settings_for,
    store_at,
    write_topology,
)
from tests.support.broker import publish_many
from tests.support.processes import eventually, start_consumer
from tests.support.receiver import Plan, Received, Receiver, new_secret, serving

NODE = shutil.which("node") or "/usr/bin/node"
NODE_RECEIVER = Path(__file__).parents[1] / "support" / "node_receiver.mjs"


def subscribed(names: Names, url: str, **subscription: Any) -> dict[str, Any]:
    document = retry_topology(names)
    document["subscriptions"] = [
        {"queue": names.queue, "url": url, "timeout_s": 2, "concurrency": 4, **subscription}
    ]
    return document


@pytest.fixture
async def documents(amqp: AbstractConnection) -> AsyncIterator[list[dict[str, Any]]]:
    made: list[dict[str, Any]] = []
    yield made
    for document in made:
        await cleanup(amqp, document)


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_consumer_killed_mid_delivery_delivers_again_with_the_same_webhook_id(
    rabbitmq_url: str,
    sqlite_url: str,
    names: Names,
    amqp: AbstractConnection,
    tmp_path: Path,
    documents: list[dict[str, Any]],
) -> None:
    secret = new_secret()
    hold = True

    def held_at_first(request: Received) -> Plan:
        return Plan(hang=True) if hold else Plan()

    receiver = Receiver([secret], plan_for=held_at_first)
    async with serving(receiver):
        document = subscribed(names, receiver.url, secret_env="PUSH_SECRET", timeout_s=30)
        documents.append(document)
        topology = write_topology(tmp_path / "topology.yaml", document)
        env = {
            "RABBITMQ_URL": rabbitmq_url,
            "DATABASE_URL": sqlite_url,
            "TOPOLOGY_FILE": str(topology),
            "PUSH_SECRET": secret,
        }
        first = await start_consumer([names.queue], env, tmp_path / "first.log")
        try:
            ids = await publish_many(amqp, names.exchange, "order.created", 10, id_prefix="k")

            async def in_flight() -> bool:
                return len(receiver.received) >= 4  # the concurrency: all slots taken

            await eventually(in_flight, 20, "deliveries in flight")
        finally:
            first.signal(signal.SIGKILL)
            await first.wait()
        hung = set(receiver.ids())
        assert receiver.delivered_ids() == set(), "nothing was answered before the kill"
        hold = False
        second = await start_consumer([names.queue], env, tmp_path / "second.log")
        try:

            async def all_delivered() -> bool:
                return receiver.delivered_ids() >= set(ids)

            await eventually(all_delivered, 30, "every message after the restart")
        finally:
            assert await second.stop() == 0, second.output()
        async with store_at(sqlite_url) as store:
            outcomes = [await store.deliveries(message_id) for message_id in ids]
    # Never lost: each one delivered; the ones cut off came again under the same id.
    for message_id in hung:
        assert receiver.ids().count(message_id) >= 2, message_id
    assert receiver.unverified == []
    assert all(where[0].push is not None for where in outcomes)
    assert {where[0].push.status for where in outcomes if where[0].push} == {"delivered"}


@pytest.mark.timeout(60)
async def test_a_node_receiver_verifies_every_signature_of_a_rotated_secret(
    rabbitmq_url: str,
    sqlite_url: str,
    names: Names,
    amqp: AbstractConnection,
    tmp_path: Path,
    documents: list[dict[str, Any]],
) -> None:
    old, new = new_secret(), new_secret()
    # Mid-rotation: hareway signs with both, the receiver knows only the new one.
    secret_file = tmp_path / "secret"
    secret_file.write_text(f"{old} {new}\n")
    node = await asyncio.create_subprocess_exec(
        NODE, str(NODE_RECEIVER), new, stdout=asyncio.subprocess.PIPE
    )
    assert node.stdout is not None
    try:
        port = json.loads(await asyncio.wait_for(node.stdout.readline(), 10))["port"]
        url = f"http://127.0.0.1:{port}/hooks"
        document = subscribed(names, url, secret_file=str(secret_file))
        documents.append(document)
        topology = write_topology(tmp_path / "topology.yaml", document)
        # Bodies that are no UTF-8 at all: the signature covers the bytes as they are.
        bodies = [bytes(range(256)), "grüße, 🐇".encode(), b""]
        async with running(settings_for(rabbitmq_url, sqlite_url, topology), [names.queue]):
            channel = await amqp.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(names.exchange)
            for index, body in enumerate(bodies):
                message = aio_pika.Message(
                    body, content_type="application/octet-stream", message_id=f"n-{index}"
                )
                await exchange.publish(message, routing_key="order.created", mandatory=True)
            await channel.close()
            seen: list[dict[str, Any]] = []
            for _ in bodies:
                line = await asyncio.wait_for(node.stdout.readline(), 20)
                seen.append(json.loads(line))
    finally:
        node.terminate()
        await node.wait()
    assert {entry["id"]: entry["ok"] for entry in seen} == {f"n-{i}": True for i in range(3)}
    by_id = {entry["id"]: base64.b64decode(entry["body"]) for entry in seen}
    assert [by_id[f"n-{i}"] for i in range(3)] == bodies
