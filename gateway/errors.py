"""The gateway's exception tree, and with it the catalogue of problem types.

Each error class is one problem type: its `status`, `slug` (the type is `/problems/<slug>`),
`title`, whether a retry can succeed (`retryable`), whether the answer carries
`Retry-After` (`retry_after`), when it is answered (`when`, markdown) and an example
`detail`. `gateway/problems.py` renders them as answers, `gateway/catalogue.py` as the
OpenAPI examples, the `/problems/<slug>` pages and the table in docs/problems.md, so the
three cannot disagree.

    GatewayError (500 internal)
    ├── InvalidJson, InvalidCloudEvent, InvalidHttpRequest, BadRequest      400
    ├── Unauthenticated                                                     401
    ├── Forbidden ── ExchangeForbidden                                      403
    ├── NotFound ── ExchangeNotFound, MessageNotFound, QueueNotFound        404
    ├── MethodNotAllowed                                                    405
    ├── RequestTimeout                                                      408
    ├── IdempotencyKeyReused, IdempotencyKeyInProgress                      409
    ├── MessageExpired                                                      410
    ├── PayloadTooLarge                                                     413
    ├── UnsupportedMediaType                                                415
    ├── ValidationFailed ── SchemaViolation; Unroutable                     422
    ├── RateLimited                                                         429
    ├── RequestHeaderTooLarge                                               431
    ├── BrokerError ── BrokerUnavailable, PublishTimeout, Nacked,           503
    │                  BrokerBlocked, Overloaded
    ├── StoreUnavailable, TooManyConnections                                503
    └── ClientDisconnected (never on the wire)
"""

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
    # Whether the answer says when to retry (`Retry-After`).
    retry_after: ClassVar[bool] = False
    when: ClassVar[str] = (
        "an error in the gateway itself; its log has the details. A publish's outcome is "
        "then unknown: retry with the same `message_id` or `Idempotency-Key`"
    )
    example: ClassVar[str] = "unexpected error; the gateway log has the details"

    def __init__(self, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extensions = extensions
        # Set by the publish routes, so a failed publish shows where its time went too.
        self.server_timing: str | None = None


class InvalidJson(GatewayError):
    status, slug, title = 400, "invalid-json", "Body is not valid JSON"
    when = "the body is not valid JSON"
    example = "the body is not valid JSON: unexpected end of data"


class InvalidCloudEvent(GatewayError):
    status, slug, title = 400, "invalid-cloudevent", "Not a valid CloudEvent"
    when = "not a valid CloudEvents 1.0 event (structured or binary mode)"
    example = "a structured-mode CloudEvent is a JSON object"


class InvalidHttpRequest(GatewayError):
    status, slug, title = 400, "invalid-http-request", "Not a valid HTTP/1.1 request"
    when = (
        "not parsable as HTTP/1.1 (answered by the HTTP server before any route; "
        "`Connection: close`)"
    )
    example = "Invalid method encountered"


class BadRequest(GatewayError):
    status, slug, title = 400, "bad-request", "Bad request"
    when = "a request the framework could not read (a body that breaks off while parsed)"
    example = "There was an error parsing the body"


class Unauthenticated(GatewayError):
    status, slug, title = 401, "unauthenticated", "No or unknown API key"
    when = "no API key, or an unknown one; `WWW-Authenticate: Bearer` set"
    example = "send an API key as `Authorization: Bearer KEY` or `X-API-Key`"


class Forbidden(GatewayError):
    status, slug, title = 403, "forbidden", "The API key lacks the scope for this call"
    when = (
        "the key lacks the scope (`publish:<exchange glob>`, `read:<queue glob>`, `admin`); "
        "also the default exchange (`amq.default`) without the literal scope "
        "`publish:amq.default`"
    )
    example = "'billing' may not publish to exchange 'orders'"


class CorsRefused(GatewayError):
    status, slug, title = 403, "cors-refused", "Cross-origin request refused"
    when = (
        "a CORS preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from "
        "an origin not in `CORS_ALLOW_ORIGINS`, or asking for a method or request header "
        "the gateway does not allow; no CORS headers on the answer"
    )
    example = "CORS preflight refused: origin 'https://elsewhere.example' is not allowed"


class ExchangeForbidden(Forbidden):
    """No caller may publish there: the broker's or the consumer runtime's own, or one
    the broker itself refused (internal, or no write permission for the gateway)."""

    slug, title = "exchange-forbidden", "No API key may publish to this exchange"
    when = (
        "no API key may publish to this exchange: the broker's own `amq.rabbitmq.*`, the "
        "consumer runtime's `<queue>.retry` exchanges, or one the broker itself refused on "
        "the first publish (internal, or no write permission for the gateway's user; "
        "remembered for `EXCHANGE_MISSING_TTL_S`)"
    )
    example = (
        "exchange 'orders.persist.retry' is a retry exchange of the consumer runtime (names "
        "ending in .retry are reserved): no API key may publish to it"
    )


class NotFound(GatewayError):
    status, slug, title = 404, "not-found", "Not found"
    when = "no such path (see `/openapi.json` for the ones there are)"
    example = "no route for GET /v2/messages"


class ExchangeNotFound(NotFound):
    slug, title = "exchange-not-found", "No such exchange"
    when = "the exchange does not exist"
    example = "no exchange 'orders'"


class MessageNotFound(NotFound):
    slug, title = "message-not-found", "No consumer has stored this message"
    when = "no consumer has stored this message (yet)"
    example = "no consumer has stored message 'm-1' yet"


class QueueNotFound(NotFound):
    slug, title = "queue-not-found", "No such queue"
    when = (
        "a read of a queue (its messages, long poll, stream or dead letters) the gateway "
        "does not know: not in the topology, not on the broker, and no row in the store"
    )
    example = "no queue 'orders.persits' on the broker or in the store"


class MessageExpired(GatewayError):
    status, slug, title = 410, "message-expired", "The message expired under its retention"
    when = (
        "every queue that stored this message has let its body expire under its retention "
        "(the topology's `retention`); its key is kept for the dedupe window, after which "
        "the answer is 404"
    )
    example = (
        "message 'm-1' was stored by 'orders.persist' and has expired under its retention "
        "(max_age 7d)"
    )


class MethodNotAllowed(GatewayError):
    status, slug, title = 405, "method-not-allowed", "Method not allowed"
    when = "the path exists, but not for this method; `Allow` lists the ones it takes"
    example = "GET is not allowed on /v1/exchanges/orders/messages; Allow: POST"


class RequestTimeout(GatewayError):
    # RFC 9110 15.5.9: the client may send the request again on a new connection.
    status, slug, title, retryable = 408, "request-timeout", "The request came too slowly", True
    when = (
        "the request line and headers were not complete `HEADER_TIMEOUT_S` after the "
        "connection (or after the first byte of the next request on a keep-alive connection), "
        "or the body not `BODY_TIMEOUT_S` after the headers; `Connection: close`, nothing "
        "published; send it again on a new connection. A connection that sends nothing is "
        "closed without an answer"
    )
    example = "the request body was not complete within 30 s"


class IdempotencyKeyReused(GatewayError):
    status, slug, title = 409, "idempotency-key-reused", "Idempotency-Key used with another body"
    when = "the `Idempotency-Key` was used before with another body"
    example = "this Idempotency-Key was used with another request body; use a new key"


class IdempotencyKeyInProgress(GatewayError):
    status, slug, title = 409, "idempotency-key-in-progress", "A request with this key is running"
    retryable = retry_after = True
    when = "the first request with this key is still publishing; `Retry-After` set"
    example = "a request with this Idempotency-Key is still being published; retry later"


class PayloadTooLarge(GatewayError):
    status, slug, title = 413, "payload-too-large", "Body too large"
    when = (
        "the body is over `MAX_MESSAGE_BYTES` (`MAX_BATCH_BYTES` for a batch), counted while "
        "it streams in"
    )
    example = "the body exceeds the limit of 1048576 bytes"


class UnsupportedMediaType(GatewayError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported content type"
    when = "not `application/json`, `application/cloudevents+json`, or a binary-mode CloudEvent"
    example = (
        "content type 'text/plain' is not accepted: send application/json (the envelope), "
        "application/cloudevents+json, or a binary-mode CloudEvent (ce-* headers)"
    )


class ValidationFailed(GatewayError):
    status, slug, title = 422, "validation", "Request failed validation"
    when = (
        "a field fails validation; `errors` lists `field`, `message`, `type`. Also what the "
        "broker or a store would refuse later (see below)"
    )
    example = "body.priority: Input should be less than or equal to 9"

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


class SchemaViolation(ValidationFailed):
    slug, title = "schema", "Payload fails the route's JSON Schema"
    when = (
        "the payload (or CloudEvent data) fails the route's JSON Schema; `errors` names the "
        "field, e.g. `payload.order_id`"
    )
    example = "payload.order_id: must be integer"


class Unroutable(GatewayError):
    status, slug, title = 422, "unroutable", "No queue is bound for this routing key"
    when = "no queue is bound for the routing key"
    example = "exchange 'orders' routes 'invoice.paid' to no queue"


class RateLimited(GatewayError):
    status, slug, title, retryable = 429, "rate-limited", "Over the rate limit", True
    retry_after = True
    when = "the API key is over its rate; `Retry-After` says when a request fits again"
    example = "'orders-service' is over its rate of 100 requests/s"

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class RequestHeaderTooLarge(GatewayError):
    status, slug, title = 431, "request-header-too-large", "Request line and headers too large"
    when = (
        "the request line and headers are over `MAX_REQUEST_HEADER_BYTES`, or there are more "
        "than `MAX_REQUEST_HEADERS` fields; `Connection: close`"
    )
    example = "the request line and headers exceed 32768 bytes"


class BrokerError(GatewayError):
    """The broker did not take the message; the request may be retried."""

    status, slug, title, retryable = 503, "broker-unavailable", "Broker unavailable", True
    retry_after = True
    when = "the broker connection is down; `Retry-After` set"
    example = "the broker connection is down; retry later"


class BrokerUnavailable(BrokerError):
    pass


class PublishTimeout(BrokerError):
    slug, title = "publish-timeout", "The broker did not confirm in time; outcome unknown"
    when = (
        "no confirm within `PUBLISH_TIMEOUT_S`; outcome unknown, retry with the same `message_id`"
    )
    example = (
        "no confirm within 5s; the message may or may not be queued, so retry with the same "
        "message_id"
    )


class Nacked(BrokerError):
    slug, title = "nacked", "The broker refused the message"
    when = "the broker refused the message"
    example = "the broker nacked the message"


class BrokerBlocked(BrokerError):
    slug, title = "broker-blocked", "The broker blocks publishers (memory or disk alarm)"
    when = (
        "the broker blocks publishers (memory or disk alarm); answered at once, and a publish "
        "waiting when the alarm struck is answered with this as soon as the block is seen "
        "(outcome unknown)"
    )
    example = "the broker blocks publishers (memory or disk alarm); retry later"


class Overloaded(BrokerError):
    slug, title = "overloaded", "Too many publishes in flight"
    when = "`MAX_IN_FLIGHT` publishes already wait for confirms; refused at once instead of queued"
    example = "10000 publishes are in flight (limit 10000); retry later"


class Draining(GatewayError):
    """`/readyz` while the gateway drains for a shutdown (it still answers requests)."""

    status, slug, title, retryable = 503, "draining", "The gateway is shutting down", True
    when = (
        "`/readyz` only: the gateway got SIGTERM and drains for `DRAIN_DELAY_S` (it still "
        "answers requests, each with `Connection: close`), so a load balancer moves away"
    )
    example = "draining for a shutdown"


class StoreUnavailable(GatewayError):
    status, slug, title, retryable = 503, "store-unavailable", "The store is unavailable", True
    retry_after = True
    when = (
        "the store (messages, dead letters, Idempotency-Keys) does not answer or cannot "
        "commit now; `Retry-After` set"
    )
    example = "the store is unavailable; retry later"


class TooManyConnections(GatewayError):
    status, slug, title = 503, "too-many-connections", "Too many connections to this gateway"
    retryable = retry_after = True
    when = (
        "this gateway process already holds `MAX_CONNECTIONS` connections; answered as the "
        "connection opens, before its request is read, with `Retry-After` and "
        "`Connection: close`"
    )
    example = "this gateway holds 1024 connections, its limit; retry later"


class ClientDisconnected(GatewayError):
    """The client went away before its body was complete. Never on the wire: no one listens,
    so the request ends quietly instead of as an unexpected error (499 as in nginx's logs)."""

    status, slug, title = 499, "client-disconnected", "The client closed the connection"
    when = ""  # not a problem type: never answered
