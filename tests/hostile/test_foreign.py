"""What any AMQP publisher can put in a queue the consumers persist, published with a plain
AMQP client (aiormq under aio-pika), never through the gateway: values a store refuses,
properties a client cannot decode, headers that would crowd a frame, encodings, reused
ids. Each lands where the docs say, alone, while the good stream in the same queue
(`orders.persist`) keeps being stored and the consumer keeps its connection."""

from __future__ import annotations

import asyncio
import gzip
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pika
import pytest
import sqlalchemy as sa
from aiormq.abc import AbstractChannel
from pamqp import commands as spec

from hareway.amqp import prepare
from hareway.amqp.codec import RawTimestamp, Undecodable
from hareway.store.schema import messages
from hareway.wire import printable
from tests.hostile.conftest import Stack

pytestmark = [pytest.mark.hostile, pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
async def raw(stack: Stack) -> AsyncIterator[AbstractChannel]:
    """A confirm channel of the test's own, on which the codec writes any value as given."""
    prepare()  # this process encodes the markers (undecodable strings, raw timestamps) too
    channel = await stack.amqp.channel(publisher_confirms=True)
    yield await channel.get_underlay_channel()
    await channel.close()


async def publish(
    channel: AbstractChannel,
    exchange: str,
    routing_key: str,
    body: bytes,
    **properties: Any,
) -> None:
    confirmation = await channel.basic_publish(
        body,
        exchange=exchange,
        routing_key=routing_key,
        properties=spec.Basic.Properties(delivery_mode=2, **properties),
        mandatory=True,
    )
    assert isinstance(confirmation, spec.Basic.Ack), confirmation


def is_postgres(stack: Stack) -> bool:
    return stack.store.engine.dialect.name == "postgresql"


async def test_values_a_store_refuses_are_dead_letters_and_the_rest_of_the_queue_commits(
    stack: Stack, raw: AbstractChannel, marker: str
) -> None:
    # NUL is fine for SQLite text and refused by PostgreSQL (SQLSTATE 22021): on PostgreSQL
    # each is narrowed down to and kept as a dead letter with a printable id; elsewhere
    # stored. Twenty of them, in the good stream's own queue.
    ids = [f"{marker}-{n}\x00" for n in range(20)]
    async with stack.unhurt(overlap_s=2):
        for message_id in ids:
            await publish(
                raw, stack.names.orders, "order.foreign", b'{"n": 1}', message_id=message_id
            )
    expected = [printable(mid) for mid in ids] if is_postgres(stack) else ids
    for message_id in expected:
        row = await stack.wait_row(stack.names.orders_queue, message_id)
        if is_postgres(stack):
            assert row.status == "dead_lettered"
            assert "UTF8" in row.last_error, row.last_error
        else:
            assert row.status == "persisted"


async def test_properties_a_client_cannot_decode_are_dead_letters_not_a_dropped_connection(
    stack: Stack, raw: AbstractChannel, marker: str
) -> None:
    cases: dict[str, dict[str, Any]] = {
        f"{marker}-ts62": {"timestamp": RawTimestamp(2**62)},
        f"{marker}-ts-micro": {"timestamp": RawTimestamp(1_764_600_000_000_000)},
        f"{marker}-ts-nano": {"timestamp": RawTimestamp(1_764_600_000_000_000_000)},
        f"{marker}-type": {"message_type": Undecodable(b"order\xff")},
    }
    not_utf8 = Undecodable(f"{marker}-\xff".encode("latin-1"))
    async with stack.unhurt(overlap_s=2):
        for message_id, properties in cases.items():
            await publish(
                raw, stack.names.orders, "order.foreign", b"{}", message_id=message_id, **properties
            )
        await publish(raw, stack.names.orders, "order.foreign", b"{}", message_id=not_utf8)
    for message_id in cases:
        row = await stack.wait_row(stack.names.orders_queue, message_id)
        assert row.status == "dead_lettered"
        assert "undecodable AMQP property" in row.last_error, row.last_error
    assert (
        "timestamp" in (await stack.wait_row(stack.names.orders_queue, f"{marker}-ts62")).last_error
    )
    row = await stack.wait_row(stack.names.orders_queue, f"{marker}-\\xff")
    assert row.status == "dead_lettered"
    assert "message_id" in row.last_error


async def test_hareways_own_headers_from_a_foreign_publisher_cannot_break_the_record(
    stack: Stack, raw: AbstractChannel, marker: str
) -> None:
    headers = {
        "x-hareway-routing-key": "r" * 10_000,
        "x-hareway-exchange": "e" * 300,
        "x-hareway-attempts": 2**62,
        "tenant": "acme",
    }
    async with stack.unhurt():
        await publish(
            raw, stack.names.orders, "order.foreign", b"{}", message_id=marker, headers=headers
        )
        await publish(
            raw,
            stack.names.orders,
            "order.foreign",
            b"{}",
            message_id=f"{marker}-garbled",
            headers={"x-hareway-attempts": "many"},
        )
    row = await stack.wait_row(stack.names.orders_queue, marker)
    assert (row.status, row.exchange, row.routing_key) == (
        "persisted",
        stack.names.orders,
        "order.foreign",
    )
    assert row.headers == {"tenant": "acme"}
    assert 1 < row.attempts <= 1_000_001
    assert (await stack.wait_row(stack.names.orders_queue, f"{marker}-garbled")).attempts == 1


async def test_an_id_reused_for_another_body_is_kept_as_a_conflict_not_dropped(
    stack: Stack, raw: AbstractChannel, marker: str
) -> None:
    conflicts_before = await stack.consumer_metric(
        "hareway_consumer_conflicts", stack.names.orders_queue
    )
    async with stack.unhurt():
        await publish(raw, stack.names.orders, "order.foreign", b'{"v": 1}', message_id=marker)
        await stack.wait_row(stack.names.orders_queue, marker)
        # A redelivery (same body) changes nothing; another body is a conflict, kept once.
        for body in (b'{"v": 1}', b'{"v": 2}', b'{"v": 2}'):
            await publish(raw, stack.names.orders, "order.foreign", body, message_id=marker)
    response = await _wait_for_conflict(stack, marker)
    statuses = [delivery["status"] for delivery in response["deliveries"]]
    assert statuses == ["persisted", "conflict"], response
    kept = [
        row
        for row in await stack.conflict_rows(stack.names.orders_queue)
        if row.message_id == marker
    ]
    assert [orjson.loads(row.body) for row in kept] == [{"v": 2}]
    conflicts_after = await stack.consumer_metric(
        "hareway_consumer_conflicts", stack.names.orders_queue
    )
    assert conflicts_after > conflicts_before


async def _wait_for_conflict(stack: Stack, message_id: str) -> dict[str, Any]:
    client = stack.client("admin")
    for _ in range(200):
        response = await client.get(f"/v1/messages/{message_id}")
        if response.status_code == 200 and len(response.json()["deliveries"]) > 1:
            found: dict[str, Any] = response.json()
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"no conflict reported for {message_id}: {response.text}")


async def test_content_encodings_are_honoured_and_a_bomb_is_a_dead_letter(
    stack: Stack, raw: AbstractChannel, marker: str
) -> None:
    exchange = stack.names.orders
    json_type = {"content_type": "application/json"}
    async with stack.unhurt():
        # order.checked has a schema: the consumer checks the inflated body against it.
        await publish(
            raw,
            exchange,
            "order.checked",
            gzip.compress(b'{"order_id": 7}'),
            message_id=f"{marker}-gzip",
            content_encoding="gzip",
            **json_type,
        )
        await publish(
            raw,
            exchange,
            "order.checked",
            gzip.compress(b'{"order_id": "seven"}'),
            message_id=f"{marker}-gzip-bad",
            content_encoding="gzip",
            **json_type,
        )
        # 32 KiB that inflate to 32 MiB, past the consumer's 16 MiB.
        bomb = gzip.compress(b"[" + b"0," * (16 * 1024 * 1024) + b"0]", compresslevel=9)
        await publish(
            raw,
            exchange,
            "order.foreign",
            bomb,
            message_id=f"{marker}-bomb",
            content_encoding="gzip",
            **json_type,
        )
        await publish(
            raw,
            exchange,
            "order.checked",
            b"\x00\x01",
            message_id=f"{marker}-br-checked",
            content_encoding="br",
            **json_type,
        )
        await publish(
            raw,
            exchange,
            "order.foreign",
            b"\x00\x01",
            message_id=f"{marker}-br",
            content_encoding="br",
            **json_type,
        )
    queue = stack.names.orders_queue
    good = await stack.wait_row(queue, f"{marker}-gzip")
    assert (good.status, good.content_encoding) == ("persisted", "gzip")
    assert gzip.decompress(good.body) == b'{"order_id": 7}'  # stored as it came
    assert "fails its schema" in (await stack.wait_row(queue, f"{marker}-gzip-bad")).last_error
    assert "inflates past" in (await stack.wait_row(queue, f"{marker}-bomb")).last_error
    assert (
        "hides it from its schema"
        in (await stack.wait_row(queue, f"{marker}-br-checked")).last_error
    )
    assert (await stack.wait_row(queue, f"{marker}-br")).status == "persisted"


async def test_a_body_that_claims_json_and_is_not_is_a_dead_letter(
    stack: Stack, raw: AbstractChannel, marker: str
) -> None:
    async with stack.unhurt():
        for suffix, body in (("nan", b'{"x": NaN}'), ("huge", b"[1e400]"), ("cut", b'{"x": ')):
            await publish(
                raw,
                stack.names.orders,
                "order.foreign",
                body,
                message_id=f"{marker}-{suffix}",
                content_type="application/json",
            )
    for suffix in ("nan", "huge", "cut"):
        row = await stack.wait_row(stack.names.orders_queue, f"{marker}-{suffix}")
        assert row.status == "dead_lettered"
        assert "not valid JSON" in row.last_error


async def test_headers_that_nearly_fill_a_frame_go_down_the_ladder_without_a_frame_error(
    stack: Stack, raw: AbstractChannel, marker: str
) -> None:
    # The handled queue's handler always fails: each attempt republishes the message with
    # hareway's headers added, which must still fit the broker's frame (128 KiB).
    headers = {"filler": "x" * (131072 - 1500)}
    async with stack.unhurt(overlap_s=2):
        await publish(
            raw, stack.names.foreign, "handled.big", b"{}", message_id=marker, headers=headers
        )
    row = await stack.wait_row(stack.names.handled_queue, marker)
    assert row.status == "dead_lettered"
    assert row.attempts == 2
    assert row.headers == headers


async def test_a_handler_whose_own_sql_fails_goes_down_the_ladder_and_the_store_stays_ready(
    stack: Stack, raw: AbstractChannel, marker: str
) -> None:
    ids = [f"{marker}-{n}" for n in range(5)]
    async with stack.unhurt(), httpx.AsyncClient(base_url=stack.health_url) as health:
        for message_id in ids:
            await publish(raw, stack.names.foreign, "handled.x", b"{}", message_id=message_id)
        for message_id in ids:
            row = await stack.wait_row(stack.names.handled_queue, message_id)
            assert row.status == "dead_lettered"
            assert row.attempts == 2
            assert "hareway_hostile_no_such_table" in row.last_error
            # A handler's SQL failing is the handler failing, not the store being out.
            assert (await health.get("/readyz")).status_code == 200


async def test_a_queue_without_a_ladder_keeps_refused_messages_as_dead_letter_rows(
    stack: Stack, raw: AbstractChannel, marker: str
) -> None:
    async with stack.unhurt():
        await publish(
            raw,
            stack.names.foreign,
            "plain.x",
            b"{}",
            message_id=f"{marker}-\x00",
            timestamp=RawTimestamp(2**62),
        )
        await publish(raw, stack.names.foreign, "plain.x", b"{}", message_id=f"{marker}-ok")
    raw_id = f"{marker}-\x00"
    kept_as = printable(raw_id) if is_postgres(stack) else raw_id
    row = await stack.wait_row(stack.names.plain_queue, kept_as)
    assert row.status == "dead_lettered"
    assert "timestamp" in row.last_error
    assert (await stack.wait_row(stack.names.plain_queue, f"{marker}-ok")).status == "persisted"


async def test_a_message_without_an_id_is_stored_under_a_stable_one(
    stack: Stack, raw: AbstractChannel
) -> None:
    body = f'{{"no-id": "{uuid.uuid4().hex}"}}'.encode()

    def publish_without_an_id() -> None:
        # pika, since aiormq gives every publish an id (to match a return by).
        with pika.BlockingConnection(pika.URLParameters(stack.rabbitmq_url)) as connection:
            channel = connection.channel()
            channel.confirm_delivery()
            for _ in range(2):
                channel.basic_publish(
                    stack.names.foreign,
                    "foreign.noid",
                    body,
                    pika.BasicProperties(delivery_mode=2),
                    mandatory=True,
                )

    async with stack.unhurt():
        await asyncio.to_thread(publish_without_an_id)
    statement = sa.select(messages.c.message_id).where(messages.c.body == body)
    for _ in range(300):
        async with stack.store.engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
        if rows:
            break
        await asyncio.sleep(0.1)
    assert len(rows) == 1, rows
    assert rows[0].message_id.startswith("sha256:")
