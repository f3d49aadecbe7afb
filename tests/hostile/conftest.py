"""The hostile suite's stack: a real gateway and a real consumer process on the real broker,
on SQLite and on PostgreSQL, and a caller who behaves while another misbehaves.

Each test runs its hostile input inside `stack.unhurt()`: API key `good` publishes a steady
stream the whole time, and on leaving the block every `202` of that stream must be stored
exactly once, no good request may have failed, and neither process may have lost its
broker connection (their /metrics count reconnects).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml
from aio_pika.abc import AbstractConnection

from hareway.store import SqlStore, open_store
from hareway.store.schema import conflicts, messages
from hareway.topology import Topology
from tests.hareway.cleanup import remove_topology
from tests.support.processes import Process, free_port, start, start_gateway

# The store's `IN (...)` lists stay well inside every driver's parameter limit.
_CHUNK = 500


@dataclass(frozen=True)
class Names:
    prefix: str = field(default_factory=lambda: f"h{uuid.uuid4().hex[:8]}")

    @property
    def orders(self) -> str:
        """The exchange the good caller publishes to (and the bad one, with `order.bad`)."""
        return f"{self.prefix}.orders"

    @property
    def orders_queue(self) -> str:
        return f"{self.prefix}.orders.persist"

    @property
    def foreign(self) -> str:
        """The exchange foreign AMQP publishers use; three queues behind it."""
        return f"{self.prefix}.foreign"

    @property
    def foreign_queue(self) -> str:
        """`foreign.#`, with a retry ladder."""
        return f"{self.prefix}.foreign.persist"

    @property
    def plain_queue(self) -> str:
        """`plain.#`, no retry ladder: its dead letters are rows only."""
        return f"{self.prefix}.plain"

    @property
    def handled_queue(self) -> str:
        """`handled.#`: its handler's own SQL fails on every message."""
        return f"{self.prefix}.handled"

    @property
    def queues(self) -> list[str]:
        return [self.orders_queue, self.foreign_queue, self.plain_queue, self.handled_queue]

    def topology(self) -> dict[str, Any]:
        ladder = {"delays": ["200ms"], "max_attempts": 2}
        checked = {
            "type": "object",
            "required": ["order_id"],
            "properties": {"order_id": {"type": "integer"}},
        }
        return {
            "exchanges": [
                {"name": self.orders, "type": "topic"},
                {"name": self.foreign, "type": "topic"},
            ],
            "queues": [
                {"name": self.orders_queue, "retry": ladder},
                {"name": self.foreign_queue, "retry": ladder},
                {"name": self.plain_queue},
                {"name": self.handled_queue, "retry": ladder},
            ],
            "bindings": [
                {"exchange": self.orders, "queue": self.orders_queue, "routing_key": "order.#"},
                {"exchange": self.foreign, "queue": self.foreign_queue, "routing_key": "foreign.#"},
                {"exchange": self.foreign, "queue": self.plain_queue, "routing_key": "plain.#"},
                {"exchange": self.foreign, "queue": self.handled_queue, "routing_key": "handled.#"},
            ],
            "schemas": [
                {"exchange": self.orders, "routing_key": "order.checked", "schema": checked},
                {"exchange": self.foreign, "routing_key": "*.checked", "schema": checked},
            ],
        }


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class GoodStream:
    """A well-behaved caller: a few workers publishing unique messages until stopped."""

    client: httpx.AsyncClient
    exchange: str
    workers: int = 3
    pause_s: float = 0.01
    confirmed: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def __aenter__(self) -> GoodStream:
        run = uuid.uuid4().hex[:8]
        self._tasks = [asyncio.create_task(self._work(f"{run}-{n}")) for n in range(self.workers)]
        return self

    async def __aexit__(self, *_: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def wait_for(self, count: int, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.confirmed) < count:
            assert not self.failures, self.failures[:5]
            assert time.monotonic() < deadline, f"only {len(self.confirmed)} good messages"
            await asyncio.sleep(0.02)

    async def _work(self, worker: str) -> None:
        sent = 0
        while not self._stop.is_set():
            message_id = f"good-{worker}-{sent}"
            sent += 1
            body = {"routing_key": "order.good", "payload": {"n": sent}, "message_id": message_id}
            try:
                response = await self.client.post(
                    f"/v1/exchanges/{self.exchange}/messages", json=body, timeout=10
                )
            except httpx.HTTPError as exc:
                self.failures.append(f"{message_id}: {exc!r}")
            else:
                if response.status_code == 202:
                    self.confirmed.append(message_id)
                else:
                    self.failures.append(f"{message_id}: {response.status_code} {response.text}")
            await asyncio.sleep(self.pause_s)


class Stack:
    def __init__(
        self,
        names: Names,
        gateway_url: str,
        health_url: str,
        store: SqlStore,
        keys: dict[str, str],
        amqp: AbstractConnection,
        gateway: Process,
        consumer: Process,
        rabbitmq_url: str,
    ) -> None:
        self.rabbitmq_url = rabbitmq_url
        self.names = names
        self.gateway_url = gateway_url
        self.health_url = health_url
        self.store = store
        self.keys = keys
        self.amqp = amqp
        self.gateway = gateway
        self.consumer = consumer
        self._clients: dict[str, httpx.AsyncClient] = {}

    def client(self, key: str) -> httpx.AsyncClient:
        """An HTTP client with API key `key` (good, bad, admin, wildcard, direct)."""
        if key not in self._clients:
            self._clients[key] = httpx.AsyncClient(
                base_url=self.gateway_url,
                headers={"Authorization": f"Bearer {self.keys[key]}"},
                limits=httpx.Limits(max_connections=200),
            )
        return self._clients[key]

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()

    @contextlib.asynccontextmanager
    async def unhurt(self, overlap_s: float = 1.0) -> AsyncIterator[GoodStream]:
        """Run the block while the good caller publishes; then hold the promise to it."""
        before = await self.reconnects()
        stream = GoodStream(self.client("good"), self.names.orders)
        started = time.monotonic()
        async with stream:
            await stream.wait_for(10)
            yield stream
            # The good stream keeps going a little past the hostile input's end.
            await asyncio.sleep(max(0.2, overlap_s - (time.monotonic() - started)))
        assert not stream.failures, f"{len(stream.failures)} good requests failed: " + "; ".join(
            stream.failures[:5]
        )
        await self.wait_stored(self.names.orders_queue, stream.confirmed)
        assert await self.reconnects() == before, "a broker connection was lost and made again"

    async def reconnects(self) -> dict[str, float]:
        """Reconnects so far of the gateway's two connections and the consumer's one."""
        async with httpx.AsyncClient() as client:
            gateway = (await client.get(f"{self.gateway_url}/metrics")).text
            consumer = (await client.get(f"{self.health_url}/metrics")).text
        found = {
            f"gateway {match[1]}": float(match[2])
            for match in re.finditer(
                r'^hareway_broker_reconnects_total\{connection="(\w+)"\} (\S+)$',
                gateway,
                re.MULTILINE,
            )
        }
        consumer_match = re.search(
            r"^hareway_consumer_broker_reconnects_total (\S+)$", consumer, re.MULTILINE
        )
        assert consumer_match is not None, consumer
        found["consumer"] = float(consumer_match[1])
        connected = re.findall(r"^hareway_\w*broker_connected\S* (\S+)$", gateway + consumer, re.M)
        assert connected, (gateway, consumer)
        assert all(value == "1.0" for value in connected), connected
        assert set(found) == {"gateway publish", "gateway lookups", "consumer"}, found
        return found

    async def rows(self, queue: str, message_ids: list[str]) -> dict[str, sa.Row[Any]]:
        """The stored rows of `queue` with these ids, by id."""
        found: dict[str, sa.Row[Any]] = {}
        async with self.store.engine.connect() as connection:
            for start_at in range(0, len(message_ids), _CHUNK):
                chunk = message_ids[start_at : start_at + _CHUNK]
                statement = sa.select(messages).where(
                    messages.c.queue == queue, messages.c.message_id.in_(chunk)
                )
                for row in await connection.execute(statement):
                    found[row.message_id] = row
        return found

    async def conflict_rows(self, queue: str) -> list[sa.Row[Any]]:
        async with self.store.engine.connect() as connection:
            statement = sa.select(conflicts).where(conflicts.c.queue == queue)
            return list((await connection.execute(statement)).all())

    async def wait_stored(self, queue: str, message_ids: list[str], timeout_s: float = 45) -> None:
        """Until every id is stored as persisted in `queue`, once: the unique key makes a
        second row impossible, so once each is found, each is there exactly once."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = await self.rows(queue, message_ids)
            missing = [mid for mid in message_ids if mid not in found]
            if not missing:
                break
            assert time.monotonic() < deadline, (
                f"{len(missing)} of {len(message_ids)} confirmed messages never stored in "
                f"{queue}, e.g. {missing[:3]}; consumer log:\n{self.consumer.output()[-3000:]}"
            )
            await asyncio.sleep(0.1)
        not_persisted = [mid for mid, row in found.items() if row.status != "persisted"]
        assert not not_persisted, not_persisted[:5]
        assert not [row for row in await self.conflict_rows(queue) if row.message_id in found]

    async def wait_row(self, queue: str, message_id: str, timeout_s: float = 30) -> sa.Row[Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            found = await self.rows(queue, [message_id])
            if message_id in found:
                return found[message_id]
            assert time.monotonic() < deadline, (
                f"{message_id!r} never reached the store in {queue}; consumer log:\n"
                f"{self.consumer.output()[-3000:]}"
            )
            await asyncio.sleep(0.1)

    async def consumer_metric(self, name: str, queue: str) -> float:
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"{self.health_url}/metrics")).text
        match = re.search(rf'^{name}_total\{{queue="{re.escape(queue)}"\}} (\S+)$', text, re.M)
        return float(match[1]) if match else 0.0


def keys_for(names: Names) -> tuple[dict[str, str], str]:
    """The raw keys by name, and API_KEYS for the gateway (their digests and scopes)."""
    keys = {name: f"{name}-{uuid.uuid4().hex}" for name in ("good", "bad", "admin", "wildcard")}
    keys["direct"] = f"direct-{uuid.uuid4().hex}"
    scopes = {
        "good": [f"publish:{names.orders}", "read:*"],
        # A glob that also covers the retry exchanges' names (`<queue>.retry`).
        "bad": [f"publish:{names.prefix}*", "read:*"],
        "admin": ["admin"],
        "wildcard": ["publish:*"],
        "direct": ["publish:amq.default"],
    }
    document = [
        {"name": name, "sha256": _digest(keys[name]), "scopes": scopes[name]} for name in keys
    ]
    return keys, json.dumps(document)


@pytest.fixture(scope="package", params=["sqlite", "postgres"])
def hostile_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """The store of the suite's stack: each test runs once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('hostile-sqlite') / 'hareway.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture(scope="package")
async def stack(
    hostile_database: str,
    rabbitmq_url: str,
    amqp: AbstractConnection,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    base = tmp_path_factory.mktemp("hostile")
    database_url = hostile_database
    names = Names()
    topology_file = base / "topology.yaml"
    topology_file.write_text(yaml.safe_dump(names.topology()))
    keys, api_keys = keys_for(names)
    env = {
        "RABBITMQ_URL": rabbitmq_url,
        "DATABASE_URL": database_url,
        "TOPOLOGY_FILE": str(topology_file),
        "API_KEYS": api_keys,
        "HEADER_TIMEOUT_S": "2",
        "BODY_TIMEOUT_S": "2",
    }
    store = await open_store(database_url)
    health_port = free_port()
    gateway, gateway_url = await start_gateway(env, base / "gateway.log")
    consumer_args = ["--app", "tests.hostile.handlers:app", "--health-port", str(health_port)]
    consumer_args += [arg for queue in names.queues for arg in ("--queue", queue)]
    consumer = await start(
        "consumers",
        consumer_args,
        {**env, "HAREWAY_HOSTILE_HANDLED_QUEUE": names.handled_queue},
        base / "consumer.log",
    )
    try:
        await consumer.wait_for_output("consumer ready")
        built = Stack(
            names,
            gateway_url,
            f"http://127.0.0.1:{health_port}",
            store,
            keys,
            amqp,
            gateway,
            consumer,
            rabbitmq_url,
        )
        yield built
        await built.close()
    finally:
        for process in (gateway, consumer):
            await process.stop()
        await store.close()
        await remove_topology(amqp, Topology.model_validate(names.topology()))


@pytest.fixture
def marker() -> str:
    """A unique prefix for the hostile input of one test."""
    return f"bad-{uuid.uuid4().hex[:8]}"


def problem(response: httpx.Response, status: int, type_suffix: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json", response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert str(body["type"]).endswith(type_suffix), body
    assert body["title"]
    assert body["detail"]
    return body
