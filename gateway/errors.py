"""The gateway's exception tree. Each error knows its HTTP status; `problems` renders them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from hareway.errors import HarewayError


class GatewayError(HarewayError):
    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal"
    title: ClassVar[str] = "Internal error"
    # Whether sending the same request again can succeed (shown to batch clients).
    retryable: ClassVar[bool] = False

    def __init__(self, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extensions = extensions
        # Set by the publish routes, so a failed publish shows where its time went too.
        self.server_timing: str | None = None


class InvalidJson(GatewayError):
    status, slug, title = 400, "invalid-json", "Body is not valid JSON"


class NotFound(GatewayError):
    status, slug, title = 404, "not-found", "Not found"


class ExchangeNotFound(NotFound):
    slug, title = "exchange-not-found", "No such exchange"


class MessageNotFound(NotFound):
    slug, title = "message-not-found", "No consumer has stored this message"


class PayloadTooLarge(GatewayError):
    status, slug, title = 413, "payload-too-large", "Body too large"


class ValidationFailed(GatewayError):
    status, slug, title = 422, "validation", "Request failed validation"

    @classmethod
    def from_pydantic(cls, errors: Sequence[Any]) -> ValidationFailed:
        """Name each failing field, e.g. `body.priority: Input should be less than 10`."""
        listed = [
            {
                "field": ".".join(str(part) for part in error.get("loc", ())),
                "message": error.get("msg", ""),
                "type": error.get("type", ""),
            }
            for error in errors
        ]
        detail = "; ".join(f"{item['field']}: {item['message']}" for item in listed)
        return cls(detail, errors=listed)


class Unroutable(GatewayError):
    status, slug, title = 422, "unroutable", "No queue is bound for this routing key"


class BrokerError(GatewayError):
    """The broker did not take the message; the request may be retried."""

    status, slug, title, retryable = 503, "broker-unavailable", "Broker unavailable", True


class BrokerUnavailable(BrokerError):
    pass


class PublishTimeout(BrokerError):
    slug, title = "publish-timeout", "The broker did not confirm in time; outcome unknown"


class Nacked(BrokerError):
    slug, title = "nacked", "The broker refused the message"


class InvalidCloudEvent(GatewayError):
    status, slug, title = 400, "invalid-cloudevent", "Not a valid CloudEvent"


class Unauthenticated(GatewayError):
    status, slug, title = 401, "unauthenticated", "No or unknown API key"


class Forbidden(GatewayError):
    status, slug, title = 403, "forbidden", "The API key lacks the scope for this call"


class IdempotencyKeyReused(GatewayError):
    status, slug, title = 409, "idempotency-key-reused", "Idempotency-Key used with another body"


class IdempotencyKeyInProgress(GatewayError):
    status, slug, title = 409, "idempotency-key-in-progress", "A request with this key is running"
    retryable = True


class UnsupportedMediaType(GatewayError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported content type"


class SchemaViolation(ValidationFailed):
    slug, title = "schema", "Payload fails the route's JSON Schema"


class RateLimited(GatewayError):
    status, slug, title, retryable = 429, "rate-limited", "Over the rate limit", True

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class BrokerBlocked(BrokerError):
    slug, title = "broker-blocked", "The broker blocks publishers (memory or disk alarm)"


class Overloaded(BrokerError):
    slug, title = "overloaded", "Too many publishes in flight"


class StoreUnavailable(GatewayError):
    status, slug, title, retryable = 503, "store-unavailable", "The store is unavailable", True
