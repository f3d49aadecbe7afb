"""hareway/amqp/delivery.py on the real broker: a marked consumer runs in aiormq's reader,
every delivery in order and none in a task of its own; any other consumer as before."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, cast

import aiormq
import pytest
from aiormq.abc import ConsumerCallback, DeliveredMessage

from hareway.amqp import delivery, prepare
from tests.conftest import Names
from tests.support.processes import eventually

pytestmark = pytest.mark.timeout(60)

COUNT = 50


@pytest.fixture
async def channel(rabbitmq_url: str, names: Names) -> AsyncIterator[aiormq.abc.AbstractChannel]:
    prepare()
    connection = await aiormq.connect(rabbitmq_url)
    channel = await connection.channel()
    await channel.queue_declare(names.queue, auto_delete=True)
    for n in range(COUNT):
        await channel.basic_publish(str(n).encode(), routing_key=names.queue)
    yield channel
    await channel.queue_delete(names.queue)
    await connection.close()


@pytest.fixture
def tasks_made(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tasks aiormq's channels make to run a consumer callback (one per delivery, by
    default): the callback itself, or the coroutine `basic_consume` wraps a function in."""
    made: list[str] = []
    original = aiormq.Channel.create_task

    def counting(self: aiormq.Channel, coro: Coroutine[Any, Any, Any]) -> Any:
        name = getattr(coro, "__qualname__", "")
        if name.endswith("on_message") or name == "awaitable.<locals>.wrap":
            made.append(name)
        return original(self, coro)

    monkeypatch.setattr(aiormq.Channel, "create_task", counting)
    return made


async def consume(
    channel: aiormq.abc.AbstractChannel, queue: str, consumer: Callable[..., Any]
) -> None:
    await channel.basic_consume(queue, cast(ConsumerCallback, consumer), no_ack=True)


async def until(check: Callable[[], bool]) -> None:
    async def checked() -> bool:
        return check()

    await eventually(checked, 20, "the deliveries", poll_s=0.01)


async def test_a_marked_consumer_gets_every_delivery_in_order_and_no_task_for_any(
    channel: aiormq.abc.AbstractChannel, names: Names, tasks_made: list[str]
) -> None:
    bodies: list[bytes] = []

    @delivery.inline
    def on_message(message: DeliveredMessage) -> None:
        bodies.append(message.body)

    await consume(channel, names.queue, on_message)
    await until(lambda: len(bodies) == COUNT)
    assert bodies == [str(n).encode() for n in range(COUNT)]
    assert tasks_made == []


async def test_an_unmarked_consumer_still_gets_a_task_for_each_delivery(
    channel: aiormq.abc.AbstractChannel, names: Names, tasks_made: list[str]
) -> None:
    bodies: list[bytes] = []

    async def on_message(message: DeliveredMessage) -> None:
        bodies.append(message.body)

    await consume(channel, names.queue, on_message)
    await until(lambda: len(bodies) == COUNT)
    assert sorted(bodies, key=int) == [str(n).encode() for n in range(COUNT)]
    assert len(tasks_made) == COUNT


async def test_what_a_marked_consumer_raises_is_logged_and_the_next_delivery_comes(
    channel: aiormq.abc.AbstractChannel, names: Names, caplog: pytest.LogCaptureFixture
) -> None:
    bodies: list[bytes] = []

    @delivery.inline
    def on_message(message: DeliveredMessage) -> None:
        if message.body == b"0":
            raise RuntimeError("a bug in the consumer")
        bodies.append(message.body)

    with caplog.at_level(logging.ERROR, "aiormq.channel"):
        await consume(channel, names.queue, on_message)
        await until(lambda: len(bodies) == COUNT - 1)
    assert bodies == [str(n).encode() for n in range(1, COUNT)]
    [failure] = [record for record in caplog.records if record.exc_info]
    assert failure.getMessage() == "Consumer callback failed"


def test_an_aiormq_whose_deliver_step_changed_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def changed(self: aiormq.Channel, frame: object) -> None:
        pass

    monkeypatch.setattr(aiormq.Channel, "_on_deliver_frame", changed)
    assert delivery.expected_shapes() == ["aiormq.Channel._on_deliver_frame"]
