"""The fault tests' own RabbitMQ node starts, obeys rabbitmqctl, and dies when killed."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from tests.support.rabbit_node import RabbitNode

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture
def node(rabbit_node: RabbitNode) -> RabbitNode:
    return rabbit_node


async def test_own_node_can_be_killed_restarted_and_alarmed(node: RabbitNode) -> None:
    assert node.port != 5672  # never the system broker
    status = await node.ctl("status")
    assert node.name in status

    await node.kill()
    # A plain socket, not aio_pika.connect: a Connection whose connect failed schedules its
    # close from __del__, which leaks an unawaited coroutine into whichever test runs next.
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", node.port)

    await node.start_again()
    connection = await aio_pika.connect(node.url)
    await connection.close()
    await node.ctl("set_vm_memory_high_watermark", "0")
    await node.ctl("set_vm_memory_high_watermark", "0.4")
