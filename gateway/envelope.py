"""The JSON envelope of `POST /v1/exchanges/{exchange}/messages`, validated straight from bytes."""

from __future__ import annotations

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


class PublishRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    routing_key: str
    payload: Any
    headers: dict[str, HeaderValue] = Field(default_factory=dict)
    message_id: ShortText | None = None
    correlation_id: ShortText | None = None
    priority: Annotated[StrictInt, Field(ge=0, le=MAX_PRIORITY)] | None = None
    expiration_ms: Annotated[StrictInt, Field(ge=0)] | None = None

    @field_validator("routing_key")
    @classmethod
    def _routing_key_fits(cls, routing_key: str) -> str:
        if len(routing_key.encode()) > MAX_ROUTING_KEY_BYTES:
            raise ValueError(f"at most {MAX_ROUTING_KEY_BYTES} bytes")
        return routing_key

    @field_validator("headers")
    @classmethod
    def _no_reserved_headers(cls, headers: dict[str, HeaderValue]) -> dict[str, HeaderValue]:
        for name in headers:
            lowered = name.lower()
            if lowered.startswith("x-") or lowered in _RESERVED_EXACT:
                raise ValueError(f"header {name!r} is reserved (x-*, CC and BCC steer the broker)")
        return headers

    def payload_bytes(self) -> bytes:
        return orjson.dumps(self.payload)


def parse_publish_request(raw: bytes) -> PublishRequest:
    try:
        return PublishRequest.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if any(error["type"] == "json_invalid" for error in errors):
            raise InvalidJson(f"the body is not valid JSON: {errors[0]['msg']}") from None
        raise ValidationFailed.from_pydantic(errors) from None
