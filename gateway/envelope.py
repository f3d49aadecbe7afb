"""The JSON envelope of `POST /v1/exchanges/{exchange}/messages`, validated straight from bytes."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from operator import attrgetter
from typing import Annotated, Any

import orjson
import pydantic_core
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
)

from gateway.errors import InvalidJson, ValidationFailed
from hareway.wire import (
    MAX_HEADER_NAME_BYTES,
    MAX_INT,
    MAX_PRIORITY,
    MIN_INT,
    has_unrepresentable_number,
    number_problem,
    short_string_problem,
)

HeaderValue = str | int | float | bool | None


# Fields that become AMQP short strings; checked after parsing, in one pass (see
# `check_short_strings`). Empty ids are refused by `min_length`; routing keys may be
# empty (fanout and headers exchanges ignore them).
_SHORT_STRING_FIELDS = ("routing_key", "message_id", "correlation_id", "reply_to", "type")
ShortText = Annotated[str, Field(min_length=1)]

# Headers that steer the broker (`x-*` arguments, sender-selected distribution) or that
# hareway itself sets; a caller who could send them could reroute or forge messages.
_RESERVED_EXACT = frozenset({"cc", "bcc"})
# RabbitMQ's per-message TTL is an unsigned 32-bit number of milliseconds.
_MAX_TTL_MS = 2**32 - 1
# AMQP timestamps are seconds since the epoch, unsigned.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class PublishRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    routing_key: str
    payload: Any
    headers: dict[str, HeaderValue] = Field(default_factory=dict)
    message_id: ShortText | None = None
    correlation_id: ShortText | None = None
    reply_to: ShortText | None = None
    priority: Annotated[StrictInt, Field(ge=0, le=MAX_PRIORITY)] | None = None
    expiration_ms: Annotated[StrictInt, Field(ge=0, le=_MAX_TTL_MS)] | None = None
    # AMQP's `type` property: what kind of message this is, for consumers to dispatch on.
    type: ShortText | None = None
    # When the event happened (RFC 3339); the gateway's clock when left out.
    timestamp: datetime | None = None

    @field_validator("timestamp")
    @classmethod
    def _timestamp_fits(cls, timestamp: datetime | None) -> datetime | None:
        if timestamp is None:
            return None
        aware = timestamp if timestamp.tzinfo else timestamp.replace(tzinfo=UTC)
        if aware < _EPOCH:
            raise ValueError("AMQP timestamps start in 1970")
        return aware

    def payload_bytes(self) -> bytes:
        try:
            return orjson.dumps(self.payload)
        except orjson.JSONEncodeError as exc:
            # Integers past 64 bits parse in Python but have no portable JSON form.
            raise ValidationFailed(
                f"payload: {exc}",
                errors=[{"field": "payload", "message": str(exc), "type": "json"}],
            ) from None


class BatchRequest(BaseModel):
    """Only for the OpenAPI document: each message is validated on its own, not as a whole."""

    messages: list[PublishRequest]


def header_problem(name: str, value: object) -> str | None:
    """Why AMQP cannot carry this header as sent, or why it would steer the broker."""
    lowered = name.lower()
    if lowered.startswith("x-") or lowered in _RESERVED_EXACT:
        return f"header {name!r} is reserved (x-*, CC and BCC steer the broker)"
    if not name:
        return "header names are not empty"
    problem = short_string_problem(name, MAX_HEADER_NAME_BYTES)
    if problem is not None:
        return f"header name {name!r}: {problem}"
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and not MIN_INT <= value <= MAX_INT:
        return f"header {name!r}: integers are at most 64 bits (signed)"
    if isinstance(value, float) and not math.isfinite(value):
        return f"header {name!r}: {value!r} is not a finite number"
    return None


def check_headers(headers: dict[str, HeaderValue], prefix: str) -> None:
    """Raise a 422 naming the first header (`headers.<name>`) AMQP cannot carry as sent."""
    for name, value in headers.items():
        # The usual header (a short ASCII name, a string value) takes no further call.
        if (
            type(value) is str
            and name.isascii()
            and name.isprintable()
            and 0 < len(name) <= MAX_HEADER_NAME_BYTES
            and name[:2].lower() != "x-"
            and name.lower() not in _RESERVED_EXACT
        ):
            continue
        problem = header_problem(name, value)
        if problem is not None:
            field = f"{prefix}headers.{name}"
            raise ValidationFailed(
                f"{field}: {problem}",
                errors=[{"field": field, "message": problem, "type": "header"}],
            )


def check_short_string(value: str, field: str, *, required: bool = True) -> None:
    """Raise a 422 naming `field` unless `value` fits an AMQP short string."""
    problem = "empty" if required and not value else short_string_problem(value)
    if problem is not None:
        raise ValidationFailed(
            f"{field}: an AMQP short string: {problem}",
            errors=[{"field": field, "message": problem, "type": "short_string"}],
        )


def check_short_strings(envelope: PublishRequest, prefix: str) -> None:
    """Raise a 422 naming the first field that cannot be an AMQP short string."""
    for name, value in zip(_SHORT_STRING_FIELDS, _short_strings(envelope), strict=True):
        # The usual ASCII name or id passes without a regex or an encode.
        if value is None or (value.isascii() and value.isprintable() and len(value) <= 255):
            continue
        check_short_string(value, prefix + name, required=False)


_short_strings = attrgetter(*_SHORT_STRING_FIELDS)


def check_routing_key(routing_key: str, field: str) -> None:
    check_short_string(routing_key, field)


def check_numbers(value: Any, field: str) -> None:
    """Raise a 422 naming the first number in `value` that AMQP and other languages
    cannot carry (not finite, or an integer past signed 64 bits)."""
    if not has_unrepresentable_number(value):
        return
    found = number_problem(value, field)
    if found is not None:
        path, message = found
        raise ValidationFailed(
            f"{path}: {message}", errors=[{"field": path, "message": message, "type": "number"}]
        )


def parse_json(raw: bytes) -> Any:
    """A JSON document as Python values, integers kept exact (orjson turns big ones into
    floats), NaN and Infinity refused as JSON does."""
    try:
        return pydantic_core.from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        raise InvalidJson(f"the body is not valid JSON: {exc}") from None


def check_header_size(headers: dict[str, Any], limit: int, field: str = "headers") -> None:
    # JSON is a close upper bound of the AMQP table encoding; the frame limit is far above.
    if headers and len(orjson.dumps(headers)) > limit:
        raise ValidationFailed(
            f"{field}: over {limit} bytes",
            errors=[{"field": field, "message": f"over {limit} bytes", "type": "too_large"}],
        )


def validate_message(item: object, field: str) -> PublishRequest:
    """One message of a batch, with its errors named under `field` (e.g. `messages.3`)."""
    try:
        envelope = PublishRequest.model_validate(item)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        for error in errors:
            error["loc"] = (field, *error.get("loc", ()))
        raise ValidationFailed.from_pydantic(errors) from None
    check_short_strings(envelope, f"{field}.")
    if envelope.headers:
        check_headers(envelope.headers, f"{field}.")
    check_numbers(envelope.payload, f"{field}.payload")
    return envelope


def parse_publish_request(raw: bytes) -> PublishRequest:
    try:
        envelope = PublishRequest.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if any(error["type"] == "json_invalid" for error in errors):
            raise InvalidJson(f"the body is not valid JSON: {errors[0]['msg']}") from None
        raise ValidationFailed.from_pydantic(errors) from None
    check_short_strings(envelope, "")
    if envelope.headers:
        check_headers(envelope.headers, "")
    check_numbers(envelope.payload, "payload")
    return envelope
