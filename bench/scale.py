"""Scale-out: N gateway processes and M consumer processes on a private 3-node cluster.

Every process's CPU is counted (gateways, the three broker nodes, consumers, the load
generators), so the run gives what one message costs each kind of process, in CPU µs.
That is the sizing model of docs/performance.md: a target rate R needs R * µs / 1e6
cores of each kind. On this machine all of them share two cores, so the model also
predicts this run's own throughput (2e6 / the sum), which the row sets beside the
measured one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import aio_pika
import yaml

from bench import cpu_time
from bench.common import Row, stop
from hareway.store import open_store
from tests.support.rabbit_cluster import RabbitCluster

if TYPE_CHECKING:
    from bench.__main__ import Bench

GATEWAYS = 2
CONSUMERS = 2
# Connections of load per gateway (closed loop), the single-message endpoint.
CONNECTIONS = 64


async def scale_out(bench: Bench, database_url: str, body: str) -> list[Row]:
    queue = f"{bench.prefix}.scale"
    exchange = f"{bench.prefix}.scale"
    topology = bench.work / "scale-topology.yaml"
    topology.write_text(
        yaml.safe_dump(
            {
                "exchanges": [{"name": exchange, "type": "topic"}],
                "queues": [{"name": queue, "type": "quorum"}],
                "bindings": [{"exchange": exchange, "queue": queue, "routing_key": "#"}],
            }
        )
    )
    async with _cluster(bench.work / "cluster") as cluster:
        env = {
            **bench.gateway_env(database_url),
            "TOPOLOGY_FILE": str(topology),
        }
        consumers = []
        for index in range(CONSUMERS):
            order = [(index + step) % 3 for step in range(3)]
            consumers.append(
                await bench.spawn(
                    ["-m", "consumers", "--queue", queue],
                    {**env, "RABBITMQ_URL": cluster.url(*order)},
                    f"scale-consumer-{index}",
                )
            )
        try:
            async with contextlib.AsyncExitStack() as servers:
                urls = []
                pids = []
                for index in range(GATEWAYS):
                    order = [(index + step) % 3 for step in range(3)]
                    url = await servers.enter_async_context(
                        bench.server(
                            ["-m", "gateway", "--port", "{port}"],
                            {**env, "RABBITMQ_URL": cluster.url(*order)},
                            f"scale-gateway-{index}",
                        )
                    )
                    urls.append(url)
                    pids.append(bench.serving)
                brokers = [
                    pid for node in cluster.nodes if (pid := cpu_time.listening_pid(node.port))
                ]
                store = await open_store(database_url)
                try:
                    stored_before = await store.count(queue)
                    before = _cpu(pids, brokers, [c.pid for c in consumers])
                    started = time.monotonic()
                    results = await asyncio.gather(
                        *(
                            bench.load(
                                f"{url}/v1/exchanges/{exchange}/messages",
                                body,
                                CONNECTIONS,
                                bench.duration,
                            )
                            for url in urls
                        )
                    )
                    published = sum(r["ok_rps"] * r["elapsed_s"] for r in results)
                    # The consumers' share counts until they have stored all of it.
                    deadline = time.monotonic() + 120
                    while await store.count(queue) - stored_before < published:
                        if time.monotonic() > deadline:
                            raise SystemExit("scale-out: the consumers did not keep up")
                        await asyncio.sleep(0.2)
                    elapsed = time.monotonic() - started
                    after = _cpu(pids, brokers, [c.pid for c in consumers])
                finally:
                    await store.close()
        finally:
            for process in consumers:
                await stop(process)
    loadgen_s = sum(r["cpu_s"] for r in results)
    per_message = {
        kind: (after[kind] - before[kind]) / published * 1e6 for kind in ("gateway", "broker")
    }
    per_message["consumer"] = (after["consumer"] - before["consumer"]) / published * 1e6
    per_message["load generator"] = loadgen_s / published * 1e6
    total_us = sum(per_message.values())
    cores = 2
    predicted = cores * 1e6 / total_us
    rate = published / elapsed
    spent = ", ".join(f"{kind} {us:,.0f} µs" for kind, us in per_message.items())
    return [
        Row(
            f"scale-out: {GATEWAYS} gateways x {CONSUMERS} consumers, 3-node cluster, quorum "
            f"queue ({CONNECTIONS} conns each), published and stored",
            rate,
            "msg/s",
        ),
        Row(
            f"CPU per message there: {spent}; the most {cores} cores allow (the model)",
            predicted,
            "msg/s",
            "measured",
            rate / predicted,
        ),
    ]


def _cpu(gateways: list[int], brokers: list[int], consumers: list[int]) -> dict[str, float]:
    return {
        "gateway": sum(cpu_time.tree_cpu_s(pid) for pid in gateways),
        "broker": sum(cpu_time.tree_cpu_s(pid) for pid in brokers),
        "consumer": sum(cpu_time.tree_cpu_s(pid) for pid in consumers),
    }


@contextlib.asynccontextmanager
async def _cluster(base: Path) -> AsyncIterator[RabbitCluster]:
    cluster = await RabbitCluster.start(base)
    try:
        # The topology's quorum queue needs the cluster to answer first.
        connection = await aio_pika.connect(cluster.nodes[0].url)
        await connection.close()
        yield cluster
    finally:
        await cluster.stop()
        cluster.remove()
