"""A RabbitMQ cluster of the test's own: three nodes (Debian's binaries, own names, ports,
data directories and one Erlang cookie) that form a cluster at their first start, for the
cluster suite's faults. Stopped by process id, never by name; the system broker is never
touched."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

from tests.support.rabbit_node import RabbitNode, RabbitNodeError

# A node's peers notice it is gone within this (RabbitMQ's default is 60 s): a frozen node
# (SIGSTOP) would otherwise hold its queues' leadership for a minute.
NET_TICKTIME_S = 10


class RabbitCluster:
    def __init__(self, base: Path, size: int = 3) -> None:
        run = uuid.uuid4().hex[:6]
        names = [f"hw{run}{index}@localhost" for index in range(size)]
        cookie = uuid.uuid4().hex.upper()
        config = (
            "cluster_formation.peer_discovery_backend = classic_config",
            *(
                f"cluster_formation.classic_config.nodes.{index + 1} = {name}"
                for index, name in enumerate(names)
            ),
            f"net_ticktime = {NET_TICKTIME_S}",
            # Quorum queues need the majority; a test kills one node of three at a time.
            "cluster_partition_handling = pause_minority",
        )
        self.nodes = [
            RabbitNode(base / f"node{index}", name=name, cookie=cookie, config=config)
            for index, name in enumerate(names)
        ]

    @classmethod
    async def start(cls, base: Path, size: int = 3, timeout_s: float = 120.0) -> RabbitCluster:
        cluster = cls(base, size)
        try:
            await cluster.start_all(timeout_s)
            await cluster.wait_formed(timeout_s)
        except BaseException:
            await cluster.stop()
            raise
        return cluster

    def url(self, *order: int) -> str:
        """RABBITMQ_URL naming the nodes in this order (all of them by default)."""
        indexes = order or tuple(range(len(self.nodes)))
        return ",".join(self.nodes[index].url for index in indexes)

    async def start_all(self, timeout_s: float = 120.0) -> None:
        # Together: a clustered node that restarts waits for its peers before it answers.
        await asyncio.gather(
            *(node.start_again(timeout_s) for node in self.nodes if not node.running)
        )

    async def wait_formed(self, timeout_s: float = 60.0) -> None:
        """Until every node sees all of them running."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                status = json.loads(
                    await self.nodes[0].ctl("cluster_status", "--formatter", "json")
                )
                running = set(status.get("running_nodes", []))
            except (RabbitNodeError, ValueError):
                running = set()
            if running == {node.name for node in self.nodes}:
                return
            if time.monotonic() > deadline:
                raise RabbitNodeError(f"the cluster did not form: {running}")
            await asyncio.sleep(0.5)

    async def leader(self, queue: str) -> int:
        """The index of the node leading a quorum queue."""
        for node in self.nodes:
            if not node.running:
                continue
            try:
                listed = json.loads(
                    await node.ctl("list_queues", "name", "leader", "--formatter", "json")
                )
            except (RabbitNodeError, ValueError):
                continue
            for entry in listed:
                if entry.get("name") == queue:
                    names = [candidate.name for candidate in self.nodes]
                    return names.index(entry["leader"])
        raise RabbitNodeError(f"no node names a leader for {queue!r}")

    async def wait_members(self, queue: str, timeout_s: float = 60.0) -> None:
        """Until the quorum queue has all nodes as members again, each caught up."""
        deadline = time.monotonic() + timeout_s
        names = {node.name for node in self.nodes}
        while True:
            try:
                listed = json.loads(
                    await self.nodes[0].ctl("list_queues", "name", "online", "--formatter", "json")
                )
                online = next(
                    (set(entry.get("online", [])) for entry in listed if entry["name"] == queue),
                    set(),
                )
            except (RabbitNodeError, ValueError):
                online = set()
            if online == names:
                return
            if time.monotonic() > deadline:
                raise RabbitNodeError(f"{queue} has {online} of {names} online")
            await asyncio.sleep(0.5)

    async def stop(self) -> None:
        await asyncio.gather(*(node.stop() for node in self.nodes), return_exceptions=True)

    def remove(self) -> None:
        for node in self.nodes:
            node.remove()
