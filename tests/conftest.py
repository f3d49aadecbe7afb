"""Fixtures shared by every test: the real broker, the real databases, unique names.

A test's service markers follow from the fixtures it uses (`pytest_collection_modifyitems`):
`broker` for one that reaches RabbitMQ (the shared one or a node of its own), `postgres`
for one that reaches PostgreSQL. `make unit` runs the rest, with no service at all.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import asyncpg
import pytest
import yaml
from aio_pika.abc import AbstractConnection
from sqlalchemy.engine import make_url

from tests.consumers.pg_node import PgNode
from tests.support.rabbit_node import RabbitNode
from tests.support.services import ServiceMissing, find_postgres, find_rabbitmq, stopping

# The fixtures that bring a service, and the marker each gives the tests using them.
SERVICE_FIXTURES = {
    "rabbitmq_url": "broker",
    "rabbit_node": "broker",
    "postgres_url": "postgres",
    "pg_node": "postgres",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        needs = {
            marker
            for name, marker in SERVICE_FIXTURES.items()
            if name in getattr(item, "fixturenames", ())
        }
        # A store fixture parametrized over databases (`database_url`) asks for
        # PostgreSQL only in its "postgres" run.
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "postgres" in callspec.params.values():
            needs.add("postgres")
        for marker in sorted(needs):
            item.add_marker(marker)


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    try:
        found = find_rabbitmq()
    except ServiceMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    with stopping(found):
        yield found.url


@pytest.fixture(scope="session")
async def postgres_url() -> AsyncIterator[str]:
    """A database of its own for this test session on the real PostgreSQL, dropped after."""
    try:
        found = find_postgres()
    except ServiceMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    with stopping(found):
        admin_url = make_url(found.url)
        dsn = admin_url.set(drivername="postgresql").render_as_string(hide_password=False)
        name = f"hareway_test_{uuid.uuid4().hex[:10]}"
        admin = await asyncpg.connect(dsn)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
            yield admin_url.set(database=name).render_as_string(hide_password=False)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()


@pytest.fixture
async def rabbit_node(tmp_path: Path) -> AsyncIterator[RabbitNode]:
    """A RabbitMQ node of the test's own, to kill, restart and alarm (never the system's)."""
    started = await RabbitNode.start(tmp_path / "node")
    try:
        yield started
    finally:
        await started.stop()
        started.remove()


@pytest.fixture
async def pg_node() -> AsyncIterator[PgNode]:
    """A PostgreSQL of the test's own, to crash and resume (never the system's)."""
    node = await PgNode.start()
    try:
        yield node
    finally:
        await node.remove()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'hareway.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs once against SQLite and once against PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'hareway.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture(scope="session")
async def amqp(rabbitmq_url: str) -> AsyncIterator[AbstractConnection]:
    connection = await aio_pika.connect(rabbitmq_url)
    yield connection
    await connection.close()


@dataclass
class Names:
    """Exchange and queue names of one test, unique, and removed from the broker after it."""

    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:8]}")

    @property
    def exchange(self) -> str:
        return f"{self.prefix}.orders"

    @property
    def queue(self) -> str:
        return f"{self.prefix}.orders.persist"

    def topology(
        self, queue_type: str = "classic", routing_key: str = "order.#"
    ) -> dict[str, object]:
        return {
            "exchanges": [{"name": self.exchange, "type": "topic"}],
            "queues": [{"name": self.queue, "type": queue_type}],
            "bindings": [
                {"exchange": self.exchange, "queue": self.queue, "routing_key": routing_key}
            ],
        }


@pytest.fixture
async def names(amqp: AbstractConnection) -> AsyncIterator[Names]:
    created = Names()
    yield created
    channel = await amqp.channel()
    await channel.queue_delete(created.queue)
    await channel.exchange_delete(created.exchange)
    await channel.close()


@pytest.fixture
def topology_file(tmp_path: Path, names: Names) -> Path:
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(names.topology()))
    return path
