"""What one caller sends over HTTP that the broker or a store would refuse later: refused
at the edge with a 422 naming the field, nothing published, the good caller unhurt."""

from __future__ import annotations

import math
import urllib.parse
from typing import Any

import orjson
import pytest

from hareway.wire import printable
from tests.hostile.conftest import Stack, problem

pytestmark = [pytest.mark.hostile, pytest.mark.slow, pytest.mark.timeout(120)]

ORDER = {"routing_key": "order.bad", "payload": {"n": 1}}


async def assert_nothing_stored(stack: Stack, message_ids: list[str]) -> None:
    # The good stream drained through the same queue after these, so they would be there:
    # as they came, or (where the store refused that) as the printable form of a dead letter.
    candidates = {printable(mid) for mid in message_ids}
    if stack.store.engine.dialect.name == "sqlite":
        candidates |= set(message_ids)
    found = await stack.rows(stack.names.orders_queue, sorted(candidates))
    assert not found, sorted(found)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("routing_key", "order.a\x00b"),
        ("message_id", "a\x00b"),
        ("correlation_id", "a\x00b"),
        ("type", "a\x00b"),
        ("reply_to", "a\x01b"),
        ("correlation_id", "é" * 200),  # 200 characters, 400 bytes in UTF-8
        ("message_id", "é" * 128),
        ("routing_key", "order." + "é" * 125),
    ],
)
async def test_a_short_string_the_broker_or_a_store_refuses_is_a_422_naming_it(
    stack: Stack, marker: str, field: str, value: str
) -> None:
    bad = stack.client("bad")
    async with stack.unhurt():
        body: dict[str, Any] = {**ORDER, "message_id": marker, field: value}
        response = await bad.post(f"/v1/exchanges/{stack.names.orders}/messages", json=body)
        found = problem(response, 422, "/validation")
        assert [error["field"] for error in found["errors"]] == [field]
    await assert_nothing_stored(stack, [marker, value])


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"routing_key": "order.bad", "payload": {"x": NaN}}', "payload.x"),
        (b'{"routing_key": "order.bad", "payload": [1, 1e400]}', "payload.1"),
        (b'{"routing_key": "order.bad", "payload": {"x": -Infinity}}', "payload.x"),
        (b'{"routing_key": "order.bad", "payload": {"n": 9223372036854775808}}', "payload.n"),
        (b'{"routing_key": "order.bad", "payload": 1, "headers": {"h": 1e400}}', "headers.h"),
        (b'{"routing_key": "order.bad", "payload": 1, "headers": {"h": NaN}}', "headers.h"),
        (
            b'{"routing_key": "order.bad", "payload": 1, "headers": {"h": 18446744073709551616}}',
            "headers.h",
        ),
    ],
)
async def test_a_number_amqp_cannot_carry_is_a_422_never_a_closed_connection(
    stack: Stack, raw: bytes, field: str
) -> None:
    bad = stack.client("bad")
    async with stack.unhurt():
        response = await bad.post(
            f"/v1/exchanges/{stack.names.orders}/messages",
            content=raw,
            headers={"content-type": "application/json"},
        )
        found = problem(response, 422, "/validation")
        assert field in found["detail"], found


async def test_header_floats_arrive_as_the_doubles_that_were_sent(
    stack: Stack, marker: str
) -> None:
    headers = {"tenth": 0.1, "tiny": 1e-50, "huge": 1e300, "third": 1 / 3, "neg": -2.5}
    async with stack.unhurt():
        response = await stack.client("bad").post(
            f"/v1/exchanges/{stack.names.orders}/messages",
            json={**ORDER, "message_id": marker, "headers": headers},
        )
        assert response.status_code == 202, response.text
    row = await stack.wait_row(stack.names.orders_queue, marker)
    # The gateway adds the request's id (docs/operations.md); the rest is as sent.
    sent = {name: value for name, value in row.headers.items() if name != "x-request-id"}
    assert sent == headers
    assert all(type(value) is float and math.isfinite(value) for value in sent.values())


async def test_a_batch_answers_each_bad_message_invalid_and_publishes_the_rest(
    stack: Stack, marker: str
) -> None:
    batch = [
        {**ORDER, "message_id": f"{marker}-0"},
        {**ORDER, "message_id": f"{marker}-1", "correlation_id": "é" * 200},
        {**ORDER, "message_id": f"{marker}-2", "headers": {"h": 2**64}},
        {**ORDER, "message_id": f"{marker}-3", "routing_key": "order.\x00"},
        {**ORDER, "message_id": f"{marker}-4"},
    ]
    async with stack.unhurt():
        response = await stack.client("bad").post(
            f"/v1/exchanges/{stack.names.orders}/batch", json={"messages": batch}
        )
        assert response.status_code == 207, response.text
        statuses = [result["status"] for result in response.json()["results"]]
        assert statuses == ["confirmed", "invalid", "invalid", "invalid", "confirmed"]
        fields = [r["error"]["errors"][0]["field"] for r in response.json()["results"][1:4]]
        assert fields == [
            "messages.1.correlation_id",
            "messages.2.headers.h",
            "messages.3.routing_key",
        ]
    await stack.wait_stored(stack.names.orders_queue, [f"{marker}-0", f"{marker}-4"])
    await assert_nothing_stored(stack, [f"{marker}-{n}" for n in (1, 2, 3)])


async def test_a_batch_with_numbers_json_cannot_hold_is_refused_whole_as_invalid_json(
    stack: Stack,
) -> None:
    async with stack.unhurt():
        response = await stack.client("bad").post(
            f"/v1/exchanges/{stack.names.orders}/batch",
            content=b'{"messages": [{"routing_key": "order.bad", "payload": NaN}]}',
            headers={"content-type": "application/json"},
        )
        problem(response, 400, "/invalid-json")


@pytest.mark.parametrize(
    ("header", "value", "field"),
    [
        ("ce-type", "order.a%00b", "ce-type"),
        ("ce-id", "evt%00", "ce-id"),
        ("ce-source", "/shop%0a/orders", "ce-source"),
        ("ce-subject", "s%07", "ce-subject"),
        ("ce-type", "order." + "%C3%A9" * 125, "type"),
    ],
)
async def test_a_binary_cloudevent_attribute_a_store_refuses_is_a_422(
    stack: Stack, marker: str, header: str, value: str, field: str
) -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": marker,
        "ce-source": "/shop",
        "ce-type": "order.bad",
        "content-type": "application/json",
        header: value,
    }
    async with stack.unhurt():
        response = await stack.client("bad").post(
            f"/v1/exchanges/{stack.names.orders}/messages", content=b"{}", headers=headers
        )
        found = problem(response, 422, "/validation")
        assert found["errors"][0]["field"] == field, found
    await assert_nothing_stored(stack, [f"/shop#{marker}", f"{urllib.parse.unquote(value)}"])


async def test_a_structured_cloudevent_passing_its_schema_on_data_is_stored_not_dead_lettered(
    stack: Stack, marker: str
) -> None:
    event = {
        "specversion": "1.0",
        "id": marker,
        "source": "/shop",
        "type": "order.checked",
        "data": {"order_id": 42},
    }
    failing = {**event, "id": f"{marker}-x", "data": {"order_id": "x"}}
    async with stack.unhurt():
        url = f"/v1/exchanges/{stack.names.orders}/messages"
        headers = {"content-type": "application/cloudevents+json"}
        accepted = await stack.client("bad").post(url, content=orjson.dumps(event), headers=headers)
        assert accepted.status_code == 202, accepted.text
        refused = await stack.client("bad").post(
            url, content=orjson.dumps(failing), headers=headers
        )
        assert problem(refused, 422, "/schema")["errors"][0]["field"] == "data.order_id"
    # The consumer applies the same schema to the same part of the event: data.
    row = await stack.wait_row(stack.names.orders_queue, f"/shop#{marker}")
    assert row.status == "persisted", row.last_error


async def test_the_same_idempotency_key_from_two_api_keys_is_two_stored_messages(
    stack: Stack, marker: str
) -> None:
    answers = []
    async with stack.unhurt():
        for key, payload in (("bad", {"from": "bad"}), ("admin", {"from": "admin"})):
            response = await stack.client(key).post(
                f"/v1/exchanges/{stack.names.orders}/messages",
                json={"routing_key": "order.bad", "payload": payload},
                headers={"Idempotency-Key": marker},
            )
            assert response.status_code == 202, response.text
            answers.append(response.json()["message_id"])
    assert answers == [f"bad:{marker}", f"admin:{marker}"]
    for message_id, source in zip(answers, ("bad", "admin"), strict=True):
        row = await stack.wait_row(stack.names.orders_queue, message_id)
        assert orjson.loads(row.body) == {"from": source}
    # A retry by the first caller is the first answer again, published nothing new.
    again = await stack.client("bad").post(
        f"/v1/exchanges/{stack.names.orders}/messages",
        json={"routing_key": "order.bad", "payload": {"from": "bad"}},
        headers={"Idempotency-Key": marker},
    )
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json()["message_id"] == answers[0]
