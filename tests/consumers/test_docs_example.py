"""The example consumer service in docs/consumers.md, run as written by `python -m consumers`."""

from __future__ import annotations

import importlib.util
import re
import signal
from pathlib import Path
from types import ModuleType

import aio_pika
import orjson
import pytest
import sqlalchemy as sa
from aio_pika.abc import AbstractConnection

from tests.conftest import Names
from tests.consumers.support import cleanup, retry_topology, store_at, write_topology
from tests.support.processes import eventually, start

pytestmark = pytest.mark.slow

DOC = Path(__file__).parents[2] / "docs" / "consumers.md"


def example_source() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    [example] = [block for block in blocks if block.startswith('"""orders_service.py')]
    return str(example)


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(90)
async def test_the_documented_service_counts_each_order_once(
    rabbitmq_url: str, sqlite_url: str, names: Names, amqp: AbstractConnection, tmp_path: Path
) -> None:
    service_dir = tmp_path / "service"
    service_dir.mkdir()
    service = service_dir / "orders_service.py"
    # The only change: this test's own queue name instead of orders.persist.
    service.write_text(example_source().replace('"orders.persist"', repr(names.queue)))
    document = retry_topology(names)
    topology = write_topology(tmp_path / "topology.yaml", document)
    async with store_at(sqlite_url) as store, store.engine.begin() as connection:
        await connection.run_sync(load(service).metadata.create_all)

    env = {
        "RABBITMQ_URL": rabbitmq_url,
        "DATABASE_URL": sqlite_url,
        "TOPOLOGY_FILE": str(topology),
        "PYTHONPATH": f"{service_dir}:{Path.cwd()}",
    }
    process = await start("consumers", ["--app", "orders_service:app"], env, tmp_path / "c.log")
    try:
        await process.wait_for_output("consumer ready")
        channel = await amqp.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(names.exchange)
        orders = [
            ("o1", {"order_id": 1, "customer": "acme", "amount_cents": 500}),
            ("o2", {"order_id": 2, "customer": "acme", "amount_cents": 250}),
            ("o1", {"order_id": 1, "customer": "acme", "amount_cents": 500}),  # a repeat
            ("o3", {"order_id": 3, "customer": "acme", "amount_cents": -1}),
            ("o4", {"order_id": 4}),  # fails the model
        ]
        for message_id, payload in orders:
            await exchange.publish(
                aio_pika.Message(
                    orjson.dumps(payload), content_type="application/json", message_id=message_id
                ),
                routing_key="order.created",
            )
        await channel.close()

        async def settled() -> bool:
            async with store_at(sqlite_url) as store:
                return await store.count(names.queue) == 4

        await eventually(settled, 30, "four stored or dead-lettered orders")
        process.signal(signal.SIGTERM)
        assert await process.wait(30) == 0, process.output()
    finally:
        await process.stop()
        await cleanup(amqp, document)

    async with store_at(sqlite_url) as store:
        async with store.engine.connect() as connection:
            total = (
                await connection.execute(sa.text("SELECT total_cents FROM customer_totals"))
            ).scalar_one()
        dead = {
            m.message_id: m.last_error
            for m in (await store.dead_letters(names.queue, None, 10)).messages
        }
    assert total == 750  # o1 once, o2
    assert set(dead) == {"o3", "o4"}
    assert "negative amount" in (dead["o3"] or "")
    assert "Order" in (dead["o4"] or "")
