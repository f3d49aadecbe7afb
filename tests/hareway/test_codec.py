"""hareway's pamqp codec: doubles for header floats, no non-finite numbers, and values any
AMQP publisher can send decoded to markers instead of exceptions in aiormq's reader."""

from __future__ import annotations

import datetime
import struct
from typing import Any, cast

import pytest
from pamqp import commands as spec
from pamqp import decode, encode, frame
from pamqp.header import ContentHeader

from hareway.amqp import prepare
from hareway.amqp.codec import RawTimestamp, Undecodable, UndecodableTable, describe


@pytest.fixture(autouse=True)
def codec() -> None:
    prepare()


def round_trip(properties: spec.Basic.Properties) -> spec.Basic.Properties:
    """Marshal a content header as a publisher would and read it back as aiormq does."""
    marshalled = frame.marshal(ContentHeader(0, 0, properties), 1)
    _, _, decoded = frame.unmarshal(marshalled)
    assert isinstance(decoded, ContentHeader)
    return decoded.properties


def test_header_floats_are_64_bit_doubles() -> None:
    headers: dict[str, Any] = {"tenth": 0.1, "tiny": 1e-50, "huge": 1e300, "third": 1 / 3}
    assert encode.encode_table_value(0.1)[:1] == b"d"
    assert round_trip(spec.Basic.Properties(headers=headers)).headers == headers


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_a_non_finite_float_is_refused_before_anything_is_sent(value: float) -> None:
    with pytest.raises(TypeError, match="finite"):
        round_trip(spec.Basic.Properties(headers={"h": value}))


def test_a_short_string_that_is_not_utf8_decodes_to_a_marker_with_its_bytes() -> None:
    decoded = round_trip(spec.Basic.Properties(message_id=Undecodable(b"id-\xff\xfe")))
    assert isinstance(decoded.message_id, Undecodable)
    assert decoded.message_id == "id-\\xff\\xfe"
    assert decoded.message_id.raw == b"id-\xff\xfe"
    assert describe(decoded.message_id) == "b'id-\\xff\\xfe' is not UTF-8"
    # Written back byte for byte, as the consumer does on its way to the dead letters.
    assert encode.short_string(decoded.message_id) == b"\x05id-\xff\xfe"


@pytest.mark.parametrize(
    "seconds", [2**62, 1_764_600_000_000_000, 1_764_600_000_000_000_000, 2**64 - 1]
)
def test_a_timestamp_no_datetime_holds_decodes_to_its_raw_number(seconds: int) -> None:
    raw = cast(datetime.datetime, RawTimestamp(seconds))  # the codec writes it as given
    decoded = round_trip(spec.Basic.Properties(timestamp=raw))
    assert isinstance(decoded.timestamp, RawTimestamp)
    assert int(decoded.timestamp) == seconds
    assert "is not a time" in str(describe(decoded.timestamp))


def test_timestamps_a_datetime_holds_decode_as_pamqp_does() -> None:
    moment = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)
    assert round_trip(spec.Basic.Properties(timestamp=moment)).timestamp == moment
    # Milliseconds, as pamqp reads anything past 2106.
    millis = cast(datetime.datetime, RawTimestamp(int(moment.timestamp() * 1000)))
    assert round_trip(spec.Basic.Properties(timestamp=millis)).timestamp == moment


def test_a_header_table_pamqp_cannot_read_is_skipped_whole_and_kept_raw() -> None:
    # A nested table with a type byte no AMQP dialect has ('Z'), beside a good header.
    inner = b"\x01kZ\x00"
    nested = b"\x05inner" + b"F" + struct.pack(">I", len(inner)) + inner
    good = b"\x04good" + b"S" + struct.pack(">I", 2) + b"ok"
    table = struct.pack(">I", len(nested) + len(good)) + nested + good
    consumed, found = decode.METHODS["table"](table)
    decoded = cast(dict[str, Any], found)
    assert consumed == len(table)
    assert decoded["good"] == "ok"
    assert isinstance(decoded["inner"], UndecodableTable)
    assert describe(decoded) is not None
    assert describe(decoded).startswith("inner: cannot decode the table")  # type: ignore[union-attr]
    assert encode.field_table(decoded["inner"]) == struct.pack(">I", len(inner)) + inner


def test_a_table_key_that_is_not_utf8_decodes_to_a_marker() -> None:
    entry = b"\x02\xff\xfe" + b"t\x01"
    table = struct.pack(">I", len(entry)) + entry
    consumed, found = decode.METHODS["table"](table)
    decoded = cast(dict[str, Any], found)
    assert consumed == len(table)
    (key,) = decoded
    assert isinstance(key, Undecodable)
    assert decoded[key] is True


def test_properties_that_do_not_decode_at_all_become_none_with_the_reason() -> None:
    # Flags promise a message id and a timestamp, the data ends first: no exception
    # leaves the decoder (it would take aiormq's reader, and the connection, with it).
    flags = spec.Basic.Properties.flags
    properties = spec.Basic.Properties()
    properties.unmarshal(flags["message_id"] | flags["timestamp"], b"\x02id\x00\x01")
    assert properties.message_id is None
    assert properties.timestamp is None
    assert isinstance(properties.headers, UndecodableTable)
    assert "properties" in str(describe(properties.headers))


def test_install_is_idempotent() -> None:
    prepare()
    prepare()
    assert round_trip(spec.Basic.Properties(headers={"f": 0.5})).headers == {"f": 0.5}
