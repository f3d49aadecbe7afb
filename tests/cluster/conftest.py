"""The cluster suite's stack: a private 3-node RabbitMQ cluster, a quorum queue with a
retry ladder, two consumer processes, and a gateway given all three addresses."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bench.ledger import Ledger, Report, check, run
from hareway import broker
from hareway.topology import Topology, declare_topology
from tests.support.processes import Process, free_port, start, start_gateway
from tests.support.rabbit_cluster import RabbitCluster

EXCHANGE = "cluster.orders"
QUEUE = "cluster.orders.persist"
ROUTING_KEY = "order.created"
# Short, so a fault's 503s come quickly and the suite stays within minutes.
PUBLISH_TIMEOUT_S = 3
# The bound of issue 10: from a node's death to the first 2xx again, once another node
# has the leader (docs/operations.md).
RECOVERY_BOUND_S = 4.0
# Messages per second of the ledger's load (two cores run three nodes and four processes).
RATE = 120


def topology() -> dict[str, Any]:
    return {
        "exchanges": [{"name": EXCHANGE, "type": "topic"}],
        "queues": [
            {
                "name": QUEUE,
                "type": "quorum",
                "retry": {"delays": ["200ms"], "max_attempts": 3, "delivery_limit": 20},
            }
        ],
        "bindings": [{"exchange": EXCHANGE, "queue": QUEUE, "routing_key": "order.#"}],
    }


@dataclass
class Stack:
    cluster: RabbitCluster
    database_url: str
    base: Path
    consumers: list[Process]
    health_ports: list[int]

    def env(self, rabbitmq_url: str) -> dict[str, str]:
        return {
            "RABBITMQ_URL": rabbitmq_url,
            "DATABASE_URL": self.database_url,
            "TOPOLOGY_FILE": str(self.base / "topology.yaml"),
            "PUBLISH_TIMEOUT_S": str(PUBLISH_TIMEOUT_S),
            "DRAIN_DELAY_S": "1",
        }

    @contextlib.asynccontextmanager
    async def gateway(self, *order: int) -> AsyncIterator[tuple[Process, str]]:
        """A gateway whose RABBITMQ_URL names the nodes in `order` (it connects to the
        first that answers)."""
        log = self.base / f"gateway-{time.monotonic_ns()}.log"
        process, url = await start_gateway(self.env(self.cluster.url(*order)), log)
        try:
            yield process, url
        finally:
            await process.stop()

    async def wait_drained(self, timeout_s: float = 60) -> None:
        """Until the queue, its delay queue and its dead-letter queue are all empty."""
        deadline = time.monotonic() + timeout_s
        names = [QUEUE, f"{QUEUE}.retry.200ms", f"{QUEUE}.dlq"]
        while True:
            depth = await self.depth(names)
            if depth == 0:
                return
            assert time.monotonic() < deadline, f"{depth} messages left in {names}"
            await asyncio.sleep(0.5)

    async def depth(self, queues: list[str]) -> int:
        """Ready plus unacked messages in these queues (from the first node that answers)."""
        for node in self.cluster.nodes:
            if not node.running:
                continue
            with contextlib.suppress(Exception):
                listed = await node.ctl("list_queues", "name", "messages", "--formatter", "json")
                return sum(e["messages"] for e in json.loads(listed) if e["name"] in queues)
        raise AssertionError("no node answers")

    async def hold_to(self, ledger: Ledger) -> Report:
        """Check the store against the ledger once the consumers have caught up."""
        deadline = time.monotonic() + 90
        while True:
            report = await check(ledger, self.database_url, QUEUE)
            if not report.lost or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        await self.wait_drained()
        return await check(ledger, self.database_url, QUEUE)


@pytest.fixture(scope="package")
async def cluster_stack(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str
) -> AsyncIterator[Stack]:
    base = tmp_path_factory.mktemp("cluster")
    (base / "topology.yaml").write_text(yaml.safe_dump(topology()))
    cluster = await RabbitCluster.start(base / "nodes")
    consumers: list[Process] = []
    try:
        # Declared through node 0 first: its leader starts there (client-local placement).
        connection = await broker.connect(cluster.nodes[0].url, "cluster-test")
        await declare_topology(connection, Topology.model_validate(topology()))
        await connection.close()
        await cluster.wait_members(QUEUE)
        stack = Stack(cluster, postgres_url, base, consumers, [])
        for index, order in enumerate(((1, 2, 0), (2, 0, 1))):
            port = free_port()
            env = {**stack.env(cluster.url(*order)), "HEALTH_PORT": str(port)}
            process = await start(
                "consumers", ["--queue", QUEUE], env, base / f"consumer-{index}.log"
            )
            await process.wait_for_output("consumer ready", 60)
            consumers.append(process)
            stack.health_ports.append(port)
        yield stack
    finally:
        for process in consumers:
            await process.stop()
        await cluster.stop()
        cluster.remove()


@contextlib.asynccontextmanager
async def ledger_load(gateway_url: str) -> AsyncIterator[tuple[Ledger, asyncio.Event]]:
    """The ledger's load on the gateway while the block runs; the ledger, filled, after."""
    stop = asyncio.Event()
    filled = Ledger()
    task = asyncio.create_task(run([gateway_url], EXCHANGE, ROUTING_KEY, rate=RATE, stop=stop))
    try:
        yield filled, stop
    finally:
        stop.set()
        filled.entries.extend((await task).entries)


async def ready(gateway_url: str) -> int:
    async with httpx.AsyncClient(base_url=gateway_url, timeout=2) as client:
        try:
            return (await client.get("/readyz")).status_code
        except httpx.HTTPError:
            return 0


async def consumers_connected(stack: Stack) -> bool:
    async with httpx.AsyncClient(timeout=2) as client:
        for port in stack.health_ports:
            try:
                if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code != 200:
                    return False
            except httpx.HTTPError:
                return False
    return True
