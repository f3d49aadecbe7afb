"""pamqp's value codec, made safe for values a caller or a foreign publisher chooses.

Encoding, as pamqp does it, has two flaws for a gateway:
- a Python float goes into a header table as a 32-bit float (`f`): `0.1` arrives as
  0.10000000149, `1e-50` as 0.0 and `1e300` does not fit at all. Here floats are 64-bit
  doubles (`d`), which RabbitMQ and every client decode.
- a non-finite float is encoded as given; RabbitMQ cannot represent it and closes the
  whole connection (541 INTERNAL_ERROR). Here it is a `TypeError` before anything is sent.

Decoding, as pamqp does it, raises on a few values any AMQP publisher can send: a short
string that is not UTF-8, a timestamp past the year 9999 (2^62, or one in micro- or
nanoseconds), a table with a type byte it does not know. The exception escapes aiormq's
frame reader and takes the consumer's whole connection down, every queue on it, again on
each redelivery. Here such a value decodes to a marker (`Undecodable`, `RawTimestamp`,
`UndecodableTable`) that keeps the raw bytes, so the consumer can dead-letter that one
message with what was wrong, and re-encodes byte for byte on its way to the dead letters.

`install()` swaps these into pamqp's dispatch tables; `hareway.amqp.prepare()` calls it
once per process, after checking that the tables look as expected.
"""

from __future__ import annotations

import datetime
import math
import struct
from collections.abc import Callable
from typing import Any, Final

from pamqp import base, common, decode, encode

# The latest moment `datetime` can hold, in seconds since 1970.
_MAX_SECONDS: Final = 253_402_300_799
_U64: Final = struct.Struct(">Q")
_U32: Final = struct.Struct(">I")


class Undecodable(str):
    """A short string that is not UTF-8: shown with its bad bytes escaped (`\\xff`),
    `raw` holds what came on the wire."""

    raw: bytes

    def __new__(cls, raw: bytes) -> Undecodable:
        text = super().__new__(cls, raw.decode("utf-8", "backslashreplace"))
        text.raw = raw
        return text


class RawTimestamp(int):
    """An AMQP timestamp no `datetime` can hold; the value is the raw 64-bit number."""


class UndecodableTable(dict[str, Any]):
    """A field table pamqp cannot read; empty, with the raw bytes and the reason kept."""

    def __init__(self, raw: bytes, reason: str) -> None:
        super().__init__()
        self.raw = raw
        self.reason = reason


# The marker types, for a check by `type(value) in MARKERS` on a hot path.
MARKERS: Final = frozenset({Undecodable, RawTimestamp, UndecodableTable})


def describe(value: object) -> str | None:
    """What is wrong with a decoded value, if it is one of the markers (tables recurse)."""
    if isinstance(value, Undecodable):
        return f"{value.raw!r} is not UTF-8"
    if isinstance(value, RawTimestamp):
        return f"{int(value)} is not a time (seconds since 1970)"
    if isinstance(value, UndecodableTable):
        return f"cannot decode the table: {value.reason}"
    if isinstance(value, dict):
        for key, item in value.items():
            problem = describe(key) or describe(item)
            if problem is not None:
                return f"{key}: {problem}"
    elif isinstance(value, list):
        for item in value:
            problem = describe(item)
            if problem is not None:
                return problem
    return None


# Decoders: (bytes) -> (consumed, value), as pamqp's own.


def _short_str(value: bytes) -> tuple[int, str]:
    try:
        length = value[0]
    except IndexError as exc:
        raise ValueError("Could not unpack short string value") from exc
    raw = value[1 : length + 1]
    try:
        return length + 1, raw.decode("utf-8")
    except UnicodeDecodeError:
        return length + 1, Undecodable(raw)


def _timestamp(value: bytes) -> tuple[int, datetime.datetime | RawTimestamp]:
    try:
        (seconds,) = _U64.unpack(value[0:8])
    except struct.error as exc:
        raise ValueError("Could not unpack timestamp value") from exc
    moment: float = seconds
    # pamqp's own reading: anything past the year 2106 is likely milliseconds.
    if moment > 0xFFFFFFFF:
        moment /= 1000.0
    if moment > _MAX_SECONDS:
        return 8, RawTimestamp(seconds)
    return 8, datetime.datetime.fromtimestamp(moment, tz=datetime.UTC)


def _field_table(value: bytes) -> tuple[int, dict[str, Any]]:
    try:
        (length,) = _U32.unpack(value[0:4])
    except struct.error as exc:
        raise ValueError("Could not unpack field table length") from exc
    end = 4 + length
    try:
        return decode.field_table(value)
    except Exception as exc:  # a foreign publisher's bytes: no exception may escape
        # The length prefix says where the table ends: skip it whole, keep its bytes.
        return end, UndecodableTable(bytes(value[:end]), str(exc) or type(exc).__name__)


def _field_table_keys(value: bytes) -> tuple[int, dict[str, Any]]:
    """pamqp's table reader with table keys read like short strings (never raising)."""
    (length,) = _U32.unpack(value[0:4])
    offset, end = 4, 4 + length
    if end > len(value):
        raise ValueError("Field table length exceeds available data")
    data: dict[str, Any] = {}
    while offset < end:
        consumed, key = _short_str(value[offset:])
        offset += consumed
        if offset > end:
            raise ValueError("Field table key length exceeds data")
        consumed, result = decode.embedded_value(value[offset:])
        offset += consumed
        data[key] = result
    return end, data


# Encoders: (value) -> bytes.

_original_encode_table_value: Callable[[Any], bytes] = encode.encode_table_value
_original_timestamp: Callable[[Any], bytes] = encode.timestamp
_original_short_string: Callable[[Any], bytes] = encode.short_string
_original_field_table: Callable[[Any], bytes] = encode.field_table


def _encode_table_value(value: Any) -> bytes:
    kind = type(value)
    if kind is str or kind is int or kind is bool:
        return _original_encode_table_value(value)  # the usual header, first
    if kind is RawTimestamp:
        return b"T" + _U64.pack(int(value))
    if kind is float:
        if not math.isfinite(value):
            raise TypeError(f"{value!r} is not a finite number; AMQP brokers cannot take it")
        return b"d" + encode.double(value)
    if isinstance(value, bytes):
        # A long string that was not UTF-8 when it came in: send back what came.
        return b"S" + _U32.pack(len(value)) + value
    return _original_encode_table_value(value)


def _encode_timestamp(value: Any) -> bytes:
    if type(value) is RawTimestamp:
        return _U64.pack(int(value))
    return _original_timestamp(value)


def _encode_short_string(value: Any) -> bytes:
    if type(value) is Undecodable:
        if len(value.raw) > 255:
            raise TypeError("string exceeds maximum length of 255 bytes")
        return bytes((len(value.raw),)) + value.raw
    return _original_short_string(value)


def _encode_field_table(value: Any) -> bytes:
    if type(value) is UndecodableTable:
        return value.raw
    return _original_field_table(value)


_original_unmarshal: Callable[..., None] = base.BasicProperties.unmarshal


def _unmarshal_properties(self: base.BasicProperties, flags: int, data: bytes) -> None:
    """The last line of defence: properties that still do not decode become none at all,
    with `headers` saying why, instead of an exception in aiormq's frame reader."""
    try:
        _original_unmarshal(self, flags, data)
    except Exception as exc:  # a foreign publisher's bytes; no exception may escape
        for name in self.__slots__:
            setattr(self, name, None)
        self.headers = UndecodableTable(bytes(data), f"properties: {exc}")  # type: ignore[attr-defined]


def install() -> None:
    """Route pamqp's encoding and decoding of these types through the functions above."""
    decode.METHODS["shortstr"] = _short_str
    decode.METHODS["timestamp"] = _timestamp
    decode.METHODS["table"] = _field_table
    decode.TABLE_MAPPING[b"T"] = _timestamp
    decode.TABLE_MAPPING[b"F"] = _field_table
    # pamqp's field_table reads keys with a bare `.decode('utf-8')`: swap its reader for
    # one that reads them as short strings; `_field_table` calls it through `decode`.
    decode.field_table = _field_table_keys
    encode.METHODS["timestamp"] = _encode_timestamp
    encode.METHODS["shortstr"] = _encode_short_string
    encode.METHODS["table"] = _encode_field_table
    # Module-level names: pamqp's own functions call each other through them.
    encode.encode_table_value = _encode_table_value
    encode.timestamp = _encode_timestamp
    encode.short_string = _encode_short_string
    encode.field_table = _encode_field_table
    base.BasicProperties.unmarshal = _unmarshal_properties  # type: ignore[method-assign]


def expected_shapes() -> list[str]:
    """What `install` relies on, missing from the installed pamqp (empty: all there)."""
    missing = [
        f"pamqp.decode.METHODS[{name!r}]"
        for name in ("shortstr", "timestamp", "table")
        if name not in decode.METHODS
    ]
    missing += [
        f"pamqp.decode.TABLE_MAPPING[{key!r}]"
        for key in (b"T", b"F")
        if key not in decode.TABLE_MAPPING
    ]
    missing += [
        f"pamqp.encode.METHODS[{name!r}]"
        for name in ("timestamp", "shortstr", "table")
        if name not in encode.METHODS
    ]
    for module, names in (
        (decode, ("field_table", "embedded_value")),
        (encode, ("encode_table_value", "timestamp", "short_string", "field_table", "double")),
    ):
        missing += [f"{module.__name__}.{n}" for n in names if not callable(getattr(module, n, 0))]
    if not callable(getattr(base.BasicProperties, "unmarshal", None)):
        missing.append("pamqp.base.BasicProperties.unmarshal")
    if not hasattr(common, "Struct"):
        missing.append("pamqp.common.Struct")
    return missing
