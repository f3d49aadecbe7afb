"""`hareway publish`, `dlq list` and `dlq redrive` end to end: the console script against a
real gateway process, the real broker and both stores."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from aio_pika.abc import AbstractConnection

from hareway.store import open_store
from tests.conftest import Names
from tests.hareway.test_store_contract import dead
from tests.support.processes import start_consumer, start_gateway

pytestmark = pytest.mark.timeout(120)


async def hareway(base_url: str, *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    command = [sys.executable, "-c", "from hareway.cli import app; app()", *args]
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"HAREWAY_URL": base_url, "PATH": "/usr/bin:/bin"},
    )
    out, err = await process.communicate(stdin)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def gateway(
    rabbitmq_url: str, database_url: str, names: Names, tmp_path: Path
) -> AsyncIterator[str]:
    topology = tmp_path / "topology.yaml"
    topology.write_text(yaml.safe_dump(names.topology()))
    env = {
        "RABBITMQ_URL": rabbitmq_url,
        "DATABASE_URL": database_url,
        "TOPOLOGY_FILE": str(topology),
    }
    process, base_url = await start_gateway(env, tmp_path / "gateway.log")
    try:
        yield base_url
    finally:
        await process.stop()


async def queued(amqp: AbstractConnection, queue: str) -> int:
    channel = await amqp.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
        count = declared.declaration_result.message_count
        assert count is not None
        return count
    finally:
        await channel.close()


async def test_publish_from_a_file_and_from_stdin(
    gateway: str, names: Names, amqp: AbstractConnection, tmp_path: Path
) -> None:
    payload = tmp_path / "order.json"
    payload.write_text('{"order_id": 42}')
    code, out, err = await hareway(
        gateway, "publish", names.exchange, "order.created", "--data", f"@{payload}",
        "-H", "tenant=acme", "--id", f"{names.prefix}-1",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out) == {"message_id": f"{names.prefix}-1", "status": "confirmed"}
    code, out, err = await hareway(
        gateway, "publish", names.exchange, "order.created", "-d", "@-", stdin=b"[1, 2]"
    )
    assert code == 0, err
    assert await queued(amqp, names.queue) == 2


async def test_publish_says_what_the_gateway_refused(gateway: str, names: Names) -> None:
    code, _, err = await hareway(gateway, "publish", names.exchange, "nobody.listens", "-d", "{}")
    assert code == 1
    assert "/problems/unroutable" in err
    code, _, err = await hareway(gateway, "publish", names.exchange, "order.x", "-d", "{oops")
    assert code == 2
    assert "not JSON" in err


async def test_dlq_list_and_redrive_all_with_a_summary(
    gateway: str, names: Names, database_url: str, amqp: AbstractConnection
) -> None:
    store = await open_store(database_url)
    ids = [f"{names.prefix}-dead-{n}" for n in range(1200)]  # more than one redrive request
    try:
        await store.save(
            [replace(dead(names.queue, message_id), exchange=names.exchange) for message_id in ids]
        )
    finally:
        await store.close()
    code, out, err = await hareway(gateway, "dlq", "list", names.queue, "--json")
    assert code == 0, err
    listed = [json.loads(line) for line in out.splitlines()]
    assert [entry["message_id"] for entry in listed] == ids
    assert listed[0]["last_error"] == "boom"

    code, out, err = await hareway(gateway, "dlq", "redrive", names.queue)
    assert code == 0, err
    assert json.loads(out) == {"redriven": 1200, "failed": 0, "not_found": 0}
    assert "redriven 500 of 1200" in err
    assert "redriven 1200 of 1200" in err
    assert await queued(amqp, names.queue) == 1200

    code, out, err = await hareway(gateway, "dlq", "redrive", names.queue, "--id", "never-dead")
    assert code == 0, err
    assert json.loads(out) == {"redriven": 0, "failed": 0, "not_found": 1}


async def test_tail_follows_what_the_consumer_stores(
    gateway: str, names: Names, rabbitmq_url: str, database_url: str, tmp_path: Path
) -> None:
    topology = tmp_path / "topology.yaml"  # the gateway fixture's
    env = {
        "RABBITMQ_URL": rabbitmq_url,
        "DATABASE_URL": database_url,
        "TOPOLOGY_FILE": str(topology),
    }
    consumer = await start_consumer([names.queue], env, tmp_path / "consumer.log")
    try:
        tailing = asyncio.create_task(
            hareway(gateway, "tail", names.queue, "--count", "3", "--json")
        )
        for n in range(3):
            code, _, err = await hareway(
                gateway, "publish", names.exchange, "order.created", "-d", str(n),
                "--id", f"{names.prefix}-{n}",
            )  # fmt: skip
            assert code == 0, err
        code, out, err = await asyncio.wait_for(tailing, 60)
    finally:
        await consumer.stop()
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["message_id"] for line in lines] == [f"{names.prefix}-{n}" for n in range(3)]
    assert [line["body"] for line in lines] == [0, 1, 2]
