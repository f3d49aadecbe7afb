"""The envelope's rules for what AMQP and the stores can carry, without a broker."""

from __future__ import annotations

import orjson
import pytest

from gateway.compose import Context
from gateway.envelope import parse_publish_request, validate_message
from gateway.errors import InvalidJson, ValidationFailed
from gateway.schemas import Schemas


def refused_field(body: dict[str, object]) -> str:
    with pytest.raises(ValidationFailed) as raised:
        parse_publish_request(orjson.dumps(body))
    field: str = raised.value.extensions["errors"][0]["field"]
    return field


@pytest.mark.parametrize(
    ("headers", "field"),
    [
        ({"x-death": 1}, "headers.x-death"),
        ({"CC": "q"}, "headers.CC"),
        ({"n" * 129: 1}, "headers." + "n" * 129),  # pamqp would cut it to 128 bytes
        ({"a\nb": 1}, "headers.a\nb"),
        ({"big": 2**63}, "headers.big"),
    ],
)
def test_headers_amqp_cannot_carry_as_sent_are_refused_by_name(
    headers: dict[str, object], field: str
) -> None:
    assert refused_field({"routing_key": "k", "payload": 1, "headers": headers}) == field


def test_a_header_name_of_128_bytes_fits() -> None:
    envelope = parse_publish_request(
        orjson.dumps({"routing_key": "k", "payload": 1, "headers": {"é" * 64: "v"}})
    )
    assert list(envelope.headers) == ["é" * 64]


def test_an_empty_routing_key_is_allowed_and_an_empty_id_is_not() -> None:
    assert parse_publish_request(b'{"routing_key": "", "payload": 1}').routing_key == ""
    assert refused_field({"routing_key": "k", "payload": 1, "message_id": ""}) == "message_id"


def test_a_lone_surrogate_is_not_json() -> None:
    with pytest.raises(InvalidJson):
        parse_publish_request(b'{"routing_key": "\\ud800", "payload": 1}')


def test_a_batch_message_names_its_fields_under_its_index() -> None:
    with pytest.raises(ValidationFailed) as raised:
        validate_message({"routing_key": "k", "payload": [float("nan")]}, "messages.4")
    assert raised.value.extensions["errors"][0]["field"] == "messages.4.payload.0"


@pytest.mark.parametrize(
    ("owner", "key", "expected"),
    [
        (None, "k-1", "k-1"),
        ("orders-service", "k-1", "orders-service:k-1"),
    ],
)
def test_an_idempotency_keys_message_id_is_its_owners(
    owner: str | None, key: str, expected: str
) -> None:
    context = Context("orders", owner or "anonymous", Schemas(()), 16384, owner)
    assert context.keyed_message_id(key) == expected
    assert context.keyed_message_id(key, ":3") == expected + ":3"
    assert context.keyed_message_id(None) is None


def test_a_keyed_message_id_past_255_bytes_is_a_stable_digest() -> None:
    context = Context("orders", "svc", Schemas(()), 16384, "s" * 200)
    long = context.keyed_message_id("k" * 100)
    assert long is not None
    assert long.startswith("idem-sha256:")
    assert long == context.keyed_message_id("k" * 100)
    assert len(long.encode()) <= 255
