"""The JSON envelope of `POST /v1/exchanges/{exchange}/messages`, validated straight from bytes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from gateway.errors import InvalidJson, ValidationFailed
from hareway.wire import MAX_PRIORITY, MAX_ROUTING_KEY_BYTES

HeaderValue = str | int | float | bool | None
ShortText = Annotated[str, Field(min_length=1, max_length=255)]

# Headers that steer the broker (`x-*` arguments, sender-selected distribution) or that
# hareway itself sets; a caller who could send them could reroute or forge messages.
_RESERVED_EXACT = frozenset({"cc", "bcc"})
# AMQP table integers are signed 64-bit; names are short strings.
_MIN_INT, _MAX_INT = -(2**63), 2**63 - 1
_MAX_NAME_BYTES = 255
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

    @field_validator("routing_key")
    @classmethod
    def _routing_key_fits(cls, routing_key: str) -> str:
        if len(routing_key.encode()) > MAX_ROUTING_KEY_BYTES:
            raise ValueError(f"at most {MAX_ROUTING_KEY_BYTES} bytes")
        return routing_key

    @field_validator("headers")
    @classmethod
    def _no_reserved_headers(cls, headers: dict[str, HeaderValue]) -> dict[str, HeaderValue]:
        for name, value in headers.items():
            lowered = name.lower()
            if lowered.startswith("x-") or lowered in _RESERVED_EXACT:
                raise ValueError(f"header {name!r} is reserved (x-*, CC and BCC steer the broker)")
            if not 0 < len(name.encode()) <= _MAX_NAME_BYTES:
                raise ValueError(f"header names are 1 to {_MAX_NAME_BYTES} bytes")
            if isinstance(value, int) and not _MIN_INT <= value <= _MAX_INT:
                raise ValueError(f"header {name!r}: integers are 64-bit")
        return headers

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


def check_routing_key(routing_key: str, field: str) -> None:
    if not routing_key or len(routing_key.encode()) > MAX_ROUTING_KEY_BYTES:
        raise ValidationFailed(
            f"{field}: 1 to {MAX_ROUTING_KEY_BYTES} bytes",
            errors=[{"field": field, "message": "1 to 255 bytes", "type": "routing_key"}],
        )


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
        return PublishRequest.model_validate(item)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        for error in errors:
            error["loc"] = (field, *error.get("loc", ()))
        raise ValidationFailed.from_pydantic(errors) from None


def parse_publish_request(raw: bytes) -> PublishRequest:
    try:
        return PublishRequest.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if any(error["type"] == "json_invalid" for error in errors):
            raise InvalidJson(f"the body is not valid JSON: {errors[0]['msg']}") from None
        raise ValidationFailed.from_pydantic(errors) from None
