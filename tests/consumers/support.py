"""Running the consumer runtime inside the test's event loop, with handlers the test defines."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from aio_pika.abc import AbstractConnection

from consumers.app import Consumer
from consumers.runner import run
from consumers.settings import ConsumerSettings
from hareway.store import SqlStore, open_store
from hareway.topology import Topology
from tests.conftest import Names
from tests.hareway.cleanup import remove_topology

# Short enough for fast tests, long enough to tell one delay from the other.
LADDER: dict[str, Any] = {"delays": ["200ms", "400ms"], "max_attempts": 3}


def retry_topology(names: Names, queue_type: str = "classic", **retry: Any) -> dict[str, Any]:
    document: dict[str, Any] = names.topology(queue_type=queue_type)
    document["queues"][0]["retry"] = retry or LADDER
    return document


def write_topology(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(document))
    return path


def settings_for(
    rabbitmq_url: str, database_url: str, topology: Path, **more: Any
) -> ConsumerSettings:
    return ConsumerSettings(
        rabbitmq_url=rabbitmq_url,
        database_url=database_url,
        topology_file=str(topology),
        _env_file=None,
        **more,
    )


@contextlib.asynccontextmanager
async def running(
    settings: ConsumerSettings, queues: Sequence[str], app: Consumer | None = None
) -> AsyncIterator[None]:
    stop = asyncio.Event()
    started = asyncio.Event()
    task = asyncio.create_task(run(settings, queues, app, stop=stop, started=started))
    waiting = asyncio.create_task(started.wait())
    await asyncio.wait({task, waiting}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiting.cancel()
        task.result()  # raises what stopped it
    assert started.is_set(), "the consumer did not start"
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def store_at(database_url: str) -> AsyncIterator[SqlStore]:
    store = await open_store(database_url)
    try:
        yield store
    finally:
        await store.close()


async def cleanup(amqp: AbstractConnection, document: dict[str, Any]) -> None:
    await remove_topology(amqp, Topology.model_validate(document))
