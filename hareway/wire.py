"""The wire contract: what a hareway message looks like on its way through RabbitMQ.

The gateway writes these headers and properties, the consumers read them; keeping both
sides on this one module is what lets them evolve together.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from math import isfinite
from typing import Any, Final

JSON_CONTENT_TYPE: Final = "application/json"
# CloudEvents in structured mode, one event or a batch of them (a JSON array).
CLOUDEVENT_CONTENT_TYPE: Final = "application/cloudevents+json"
CLOUDEVENT_BATCH_CONTENT_TYPE: Final = "application/cloudevents-batch+json"

# Headers hareway sets itself. Callers may not send `x-*` headers, so these cannot be forged.
ATTEMPTS_HEADER: Final = "x-hareway-attempts"
LAST_ERROR_HEADER: Final = "x-hareway-last-error"
# The gateway's request id (X-Request-ID) of the request that published the message; it
# stays with the stored message, so a log line and a row can be matched.
REQUEST_ID_HEADER: Final = "x-request-id"

PERSISTENT: Final = 2
MAX_PRIORITY: Final = 9

# AMQP short strings (routing key, message id, correlation id, type, reply-to, app id,
# content type, exchange name) hold at most 255 bytes.
MAX_SHORT_STRING_BYTES: Final = 255
MAX_ROUTING_KEY_BYTES: Final = MAX_SHORT_STRING_BYTES
# Field-table keys: pamqp cuts longer ones to 128 bytes (with only a warning), which
# could make two header names one.
MAX_HEADER_NAME_BYTES: Final = 128
# AMQP table integers are signed 64-bit.
MIN_INT: Final = -(2**63)
MAX_INT: Final = 2**63 - 1

# C0 control characters: NUL is refused by PostgreSQL text, the others break log lines
# and the management UI; none belongs in a name or an id.
_CONTROL = re.compile(r"[\x00-\x1f]")


def control_character_problem(value: str) -> str | None:
    found = _CONTROL.search(value)
    if found is not None:
        return f"control character U+{ord(found.group()):04X} at position {found.start()}"
    return None


def short_string_problem(value: str, limit: int = MAX_SHORT_STRING_BYTES) -> str | None:
    """Why `value` cannot be an AMQP short string that every store keeps, or None."""
    if value.isascii() and value.isprintable():
        # The usual name or id, told apart without a regex or an encode.
        return None if len(value) <= limit else f"{len(value)} bytes; at most {limit}"
    problem = control_character_problem(value)
    if problem is not None:
        return problem
    try:
        size = len(value.encode())
    except UnicodeEncodeError as exc:
        return f"not Unicode text: a lone surrogate at position {exc.start}"
    if size > limit:
        return f"{size} bytes in UTF-8; at most {limit}"
    return None


def printable(value: str, limit: int = MAX_SHORT_STRING_BYTES) -> str:
    """`value` with control characters escaped (`\\x00`) and cut to `limit` characters, a
    digest of the whole marking a cut: a form of a foreign id every store can keep,
    the same on every redelivery."""
    # Lone surrogates (no UTF-8 encoder takes them) escaped first, then control characters.
    text = value.encode("utf-8", "backslashreplace").decode("utf-8")
    text = _CONTROL.sub(lambda found: f"\\x{ord(found.group()):02x}", text)
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{text[: limit - 17]}~{digest}"


def has_unrepresentable_number(value: Any) -> bool:
    """Whether a JSON value holds a number AMQP and other languages cannot carry: not
    finite (NaN, 1e400), or an integer outside signed 64 bits. Cheap enough for every
    request (a payload of a few fields takes under a microsecond); `number_problem` then
    says where."""
    kind = type(value)
    if kind is dict:
        items = value.values()
    elif kind is list:
        items = value
    else:
        items = (value,)
    # Numbers are checked in the loop, not by a call each: a flat payload is one call.
    for item in items:
        kind = type(item)
        if kind is float:
            if not isfinite(item):
                return True
        elif kind is int:
            if not MIN_INT <= item <= MAX_INT:
                return True
        elif (kind is dict or kind is list) and has_unrepresentable_number(item):
            return True
    return False


def number_problem(value: Any, path: str) -> tuple[str, str] | None:
    """The first number in a JSON value that AMQP and other languages cannot carry:
    not finite (NaN, 1e400), or an integer outside signed 64 bits. (path, reason) or None.
    """
    if isinstance(value, float):
        if not math.isfinite(value):
            return path, f"{value!r} is not a finite number"
    elif isinstance(value, int) and not isinstance(value, bool):
        if not MIN_INT <= value <= MAX_INT:
            return path, "integers are at most 64 bits (signed)"
    elif isinstance(value, dict):
        for key, item in value.items():
            found = number_problem(item, f"{path}.{key}")
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = number_problem(item, f"{path}.{index}")
            if found is not None:
                return found
    return None


# `amq.default` is how the management UI names the nameless default exchange.
DEFAULT_EXCHANGE_ALIAS: Final = "amq.default"


def broker_exchange_name(exchange: str) -> str:
    return "" if exchange == DEFAULT_EXCHANGE_ALIAS else exchange


def new_message_id() -> str:
    """A random UUID (version 4) in hex, as `uuid.uuid4().hex` but in a quarter of the time."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
    return raw.hex()


def fallback_message_id(exchange: str, routing_key: str, body: bytes) -> str:
    """A stable id for a message some other publisher sent without one.

    It must be the same on every redelivery, or the store's unique key could not catch the
    duplicate; two identical bodies on the same route therefore count as one message.
    """
    digest = hashlib.sha256()
    for part in (exchange.encode(), b"\0", routing_key.encode(), b"\0", body):
        digest.update(part)
    return "sha256:" + digest.hexdigest()[:32]


# More attempts than any ladder makes; also what a 32-bit column holds with room to spare.
MAX_ATTEMPTS: Final = 1_000_000


def attempts_so_far(headers: Mapping[str, object] | None) -> int:
    """How many times earlier deliveries of this message already failed."""
    if not headers:
        return 0
    value = headers.get(ATTEMPTS_HEADER, 0)
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if not isinstance(value, int | str):
        return 0
    try:
        # Any publisher can set the header: a count past this is garbage, and would not
        # fit the store's attempts column either.
        return min(max(0, int(value)), MAX_ATTEMPTS)
    except ValueError:
        return 0


def jsonable(value: object) -> object:
    """AMQP header values as JSON: tables recurse, bytes become text where they are text."""
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(raw).decode("ascii")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


# Where a retried message was first published: on its way back from a delay queue it
# arrives through the default exchange, which would otherwise hide both.
ORIGINAL_EXCHANGE_HEADER: Final = "x-hareway-exchange"
ORIGINAL_ROUTING_KEY_HEADER: Final = "x-hareway-routing-key"

# Headers the broker adds when it dead-letters a message (from a delay queue, for instance).
_BROKER_DEATH_PREFIXES: Final = ("x-death", "x-first-death-", "x-last-death-")


def is_transport_header(name: str) -> bool:
    """Headers hareway or the broker set in transit; not part of the message a user sent."""
    return name.startswith("x-hareway-") or name.startswith(_BROKER_DEATH_PREFIXES)


def header_text(headers: Mapping[str, object] | None, name: str) -> str | None:
    value = (headers or {}).get(name)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value if isinstance(value, str) else None


def media_type_of(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_json_content_type(content_type: str | None) -> bool:
    media_type = media_type_of(content_type)
    return media_type == JSON_CONTENT_TYPE or media_type.endswith("+json")


def schema_subjects(content_type: str | None, document: Any) -> list[tuple[str, Any]]:
    """What a route's JSON Schema applies to in a JSON message, with its path in it.

    A JSON message's whole document (path ""); a structured-mode CloudEvent's `data`, when
    that is JSON (no `datacontenttype`, or a JSON one); in a CloudEvents batch, each
    event's. The gateway and the consumers both ask this, so a message one side accepts
    the other does not dead-letter.
    """
    media_type = media_type_of(content_type)
    if media_type == CLOUDEVENT_CONTENT_TYPE:
        return _event_data(document, "data")
    if media_type == CLOUDEVENT_BATCH_CONTENT_TYPE and isinstance(document, list):
        subjects: list[tuple[str, Any]] = []
        for index, event in enumerate(document):
            subjects += _event_data(event, f"{index}.data")
        return subjects
    return [("", document)]


def _event_data(event: Any, path: str) -> list[tuple[str, Any]]:
    if not isinstance(event, dict) or "data" not in event:
        return []
    data_type = event.get("datacontenttype")
    if data_type is not None and not (
        isinstance(data_type, str) and is_json_content_type(data_type)
    ):
        return []
    return [(path, event["data"])]
