"""The fault tests' own RabbitMQ node starts, obeys rabbitmqctl, and dies when killed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest

from tests.support.rabbit_node import RabbitNode

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[RabbitNode]:
    started = await RabbitNode.start(tmp_path / "node")
    yield started
    await started.stop()
    started.remove()


async def test_own_node_can_be_killed_restarted_and_alarmed(node: RabbitNode) -> None:
    assert node.port != 5672  # never the system broker
    status = await node.ctl("status")
    assert node.name in status

    await node.kill()
    with pytest.raises((ConnectionError, OSError, aio_pika.exceptions.AMQPConnectionError)):
        await aio_pika.connect(node.url, timeout=2)

    await node.start_again()
    connection = await aio_pika.connect(node.url)
    await connection.close()
    await node.ctl("set_vm_memory_high_watermark", "0")
    await node.ctl("set_vm_memory_high_watermark", "0.4")
