"""ChannelWriter on the real broker: many publishes per write, each confirmed on its own."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiormq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands as spec
from pamqp import frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from hareway.amqp.framing import ChannelWriter, content_frames
from tests.conftest import Names

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def channel(rabbitmq_url: str, names: Names) -> AsyncIterator[aiormq.Channel]:
    connection = await aiormq.connect(rabbitmq_url)
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    await channel.exchange_declare(names.exchange, exchange_type="topic", durable=True)
    await channel.queue_declare(names.queue, durable=True)
    await channel.queue_bind(names.queue, names.exchange, routing_key="order.#")
    assert isinstance(channel, aiormq.Channel)
    yield channel
    await connection.close()


def _properties(message_id: str) -> spec.Basic.Properties:
    return spec.Basic.Properties(
        message_id=message_id, delivery_mode=2, content_type="application/json"
    )


async def _drain(channel: aiormq.Channel, queue: str, count: int) -> list[tuple[str, bytes]]:
    got: list[tuple[str, bytes]] = []
    for _ in range(count):
        message = await channel.basic_get(queue, no_ack=True)
        assert message.header.properties.message_id is not None
        got.append((message.header.properties.message_id, message.body))
    return got


async def test_one_turn_of_sends_arrives_whole_in_order_and_each_is_confirmed(
    channel: aiormq.Channel, names: Names
) -> None:
    writer = ChannelWriter(channel)
    # Larger than the negotiated frame_max, so some bodies span several body frames.
    big = b"x" * (channel.max_content_size * 2 + 17)
    bodies = [f'{{"n": {n}}}'.encode() if n % 10 else big + str(n).encode() for n in range(300)]
    confirmations = [
        writer.send(names.exchange, "order.created", _properties(f"m{n}"), body)
        for n, body in enumerate(bodies)
    ]
    results = await asyncio.gather(*confirmations)
    assert all(isinstance(result, spec.Basic.Ack) for result in results)
    assert await _drain(channel, names.queue, len(bodies)) == [
        (f"m{n}", body) for n, body in enumerate(bodies)
    ]


async def test_ids_of_confirmed_publishes_do_not_pile_up_in_the_return_map(
    channel: aiormq.Channel, names: Names
) -> None:
    writer = ChannelWriter(channel)
    for round_ in range(6):
        confirmations = [
            writer.send(names.exchange, "order.created", _properties(f"{round_}-{n}"), b"{}")
            for n in range(2000)
        ]
        await asyncio.gather(*confirmations)
    # 12,000 published; what stays is bounded by the prune's slack, not by the count.
    assert len(channel.message_id_delivery_tag) <= 2 * 4096 + 2000
    await channel.queue_purge(names.queue)


async def test_an_unroutable_message_fails_alone_among_routable_ones(
    channel: aiormq.Channel, names: Names
) -> None:
    writer = ChannelWriter(channel)
    keys = ["order.created", "nowhere", "order.paid"]
    confirmations = [
        writer.send(names.exchange, key, _properties(f"r{n}"), b"{}") for n, key in enumerate(keys)
    ]
    results = await asyncio.gather(*confirmations, return_exceptions=True)
    assert isinstance(results[0], spec.Basic.Ack)
    assert isinstance(results[1], aiormq.exceptions.PublishError)
    assert isinstance(results[2], spec.Basic.Ack)
    assert [message_id for message_id, _ in await _drain(channel, names.queue, 2)] == ["r0", "r2"]


async def test_a_channel_the_broker_closes_fails_every_publish_in_flight(
    channel: aiormq.Channel, names: Names
) -> None:
    writer = ChannelWriter(channel)
    confirmations = [
        writer.send(names.exchange, "order.created", _properties("ok"), b"{}"),
        # A missing exchange: the broker closes the channel (404).
        writer.send(f"{names.prefix}.missing", "order.created", _properties("gone"), b"{}"),
        writer.send(names.exchange, "order.created", _properties("after"), b"{}"),
    ]
    results = await asyncio.wait_for(asyncio.gather(*confirmations, return_exceptions=True), 10)
    assert isinstance(results[1], aiormq.exceptions.ChannelNotFoundEntity)
    assert isinstance(results[2], aiormq.exceptions.AMQPError)
    with pytest.raises(aiormq.exceptions.ChannelInvalidStateError):
        writer.send(names.exchange, "order.created", _properties("closed"), b"{}")


# Every Basic property, with values of its AMQP type: some absent, some out of range.
_SHORT = st.one_of(st.none(), st.just(""), st.text(max_size=90))
_PROPERTY_VALUES = st.fixed_dictionaries(
    {
        "content_type": _SHORT,
        "content_encoding": _SHORT,
        "headers": st.one_of(
            st.none(),
            st.dictionaries(
                st.text(max_size=8), st.one_of(st.text(max_size=12), st.integers(-9, 9)), max_size=3
            ),
        ),
        # pamqp refuses anything else at construction.
        "delivery_mode": st.sampled_from([None, 1, 2]),
        "priority": st.one_of(st.none(), st.integers(-1, 255)),
        "correlation_id": _SHORT,
        "reply_to": _SHORT,
        "expiration": _SHORT,
        "message_id": st.one_of(_SHORT, st.text(min_size=200, max_size=300)),
        "timestamp": st.one_of(
            st.none(),
            st.datetimes(min_value=datetime(1970, 1, 2), timezones=st.sampled_from([None, UTC])),
        ),
        "message_type": _SHORT,
        "user_id": _SHORT,
        "app_id": _SHORT,
        "cluster_id": st.just(""),
    }
)


@given(_PROPERTY_VALUES)
@settings(max_examples=300, deadline=None)
def test_content_frames_encode_properties_exactly_as_pamqp_and_fail_alike(
    values: dict[str, Any],
) -> None:
    properties = spec.Basic.Properties(**values)
    body = b'{"n": 1}' * 40
    try:
        expected: bytes | type[Exception] = frame.marshal(
            ContentHeader(body_size=len(body), properties=properties), 5
        )
    except (TypeError, ValueError, OverflowError, struct.error) as exc:
        expected = type(exc)
    try:
        # A small frame size: the body goes out in several frames after the header.
        got: bytes | type[Exception] = content_frames(5, 100, properties, body)
    except (TypeError, ValueError, OverflowError, struct.error) as exc:
        got = type(exc)
    if isinstance(expected, bytes):
        assert isinstance(got, bytes)
        assert got[: len(expected)] == expected
        bodies = b"".join(
            frame.marshal(ContentBody(body[start : start + 100]), 5)
            for start in range(0, len(body), 100)
        )
        assert got[len(expected) :] == bodies
    else:
        assert got == expected
