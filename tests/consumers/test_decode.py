"""Decoding a delivery never raises: what can never succeed becomes poison with a reason."""

from __future__ import annotations

import gzip
import zlib
from typing import Any, cast

import pytest
from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp import commands as spec
from pamqp.header import ContentHeader

from consumers.decode import decode
from hareway.amqp.codec import RawTimestamp, Undecodable
from hareway.schemas import SchemaRules
from hareway.topology import SchemaSpec

SCHEMAS = SchemaRules(
    (
        SchemaSpec.model_validate(
            {
                "exchange": "orders",
                "routing_key": "order.checked",
                "schema": {"type": "object", "required": ["order_id"]},
            }
        ),
    )
)


def delivery(
    body: bytes, routing_key: str = "order.created", **properties: Any
) -> DeliveredMessage:
    properties.setdefault("content_type", "application/json")
    properties.setdefault("message_id", "m-1")
    return DeliveredMessage(
        delivery=spec.Basic.Deliver(
            consumer_tag="c", delivery_tag=1, exchange="orders", routing_key=routing_key
        ),
        header=ContentHeader(body_size=len(body), properties=spec.Basic.Properties(**properties)),
        body=body,
        channel=cast(AbstractChannel, None),
    )


def test_a_compressed_json_body_is_inflated_for_its_schema_and_stored_as_it_came() -> None:
    body = gzip.compress(b'{"order_id": 1}')
    decoded = decode("q", delivery(body, "order.checked", content_encoding="gzip"), SCHEMAS)
    assert decoded.poison is None
    assert decoded.payload == {"order_id": 1}
    assert decoded.record.body == body
    assert decoded.record.content_encoding == "gzip"
    failing = gzip.compress(b"{}")
    refused = decode("q", delivery(failing, "order.checked", content_encoding="gzip"), SCHEMAS)
    assert refused.poison is not None
    assert refused.poison.startswith("fails its schema")


@pytest.mark.parametrize("wbits", [zlib.MAX_WBITS, -zlib.MAX_WBITS])
def test_deflate_is_read_zlib_wrapped_or_raw(wbits: int) -> None:
    compressor = zlib.compressobj(wbits=wbits)
    body = compressor.compress(b'{"n": 2}') + compressor.flush()
    decoded = decode("q", delivery(body, content_encoding="deflate"))
    assert decoded.payload == {"n": 2}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (gzip.compress(b"[" + b"0," * 600_000 + b"0]"), "inflates past"),
        (gzip.compress(b'{"n": 1}')[:-6], "cut short"),
        (b"not gzip at all", "content_encoding gzip"),
    ],
)
def test_a_body_its_encoding_cannot_undo_within_bounds_is_poison(body: bytes, reason: str) -> None:
    decoded = decode("q", delivery(body, content_encoding="gzip"), max_decoded_bytes=1_000_000)
    assert decoded.poison is not None
    assert reason in decoded.poison


def test_an_unknown_encoding_is_stored_as_it_came_unless_a_schema_must_read_it() -> None:
    assert decode("q", delivery(b"\x00", content_encoding="br"), SCHEMAS).poison is None
    checked = decode("q", delivery(b"\x00", "order.checked", content_encoding="br"), SCHEMAS)
    assert checked.poison is not None
    assert "hides it from its schema" in checked.poison


@pytest.mark.parametrize(
    ("properties", "named"),
    [
        ({"timestamp": RawTimestamp(2**62)}, "property timestamp"),
        ({"message_id": Undecodable(b"\xff")}, "property message_id"),
        ({"app_id": Undecodable(b"a\xfe")}, "property app_id"),
        ({"headers": {"h": RawTimestamp(2**63)}}, "headers: h"),
    ],
)
def test_properties_that_did_not_decode_are_poison_naming_them(
    properties: dict[str, Any], named: str
) -> None:
    decoded = decode("q", delivery(b"{}", **properties))
    assert decoded.poison is not None
    assert named in decoded.poison
    assert decoded.record.published_at is None


def test_an_impossible_route_header_is_ignored_for_the_deliverys_own() -> None:
    headers = {"x-hareway-routing-key": "r" * 300, "x-hareway-exchange": "a\x00b", "k": "v"}
    record = decode("q", delivery(b"{}", headers=headers)).record
    assert (record.exchange, record.routing_key, record.headers) == (
        "orders",
        "order.created",
        {"k": "v"},
    )
