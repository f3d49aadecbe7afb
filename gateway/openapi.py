"""OpenAPI fragments: the problem schema with an example per status, and the publish bodies."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from gateway.envelope import BatchRequest, PublishRequest

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "example": "/problems/unroutable"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "retryable": {"type": "boolean", "description": "whether the same request may succeed"},
        "errors": {
            "type": "array",
            "description": "422 only: each failing field",
            "items": {
                "type": "object",
                "properties": {
                    "field": {"type": "string"},
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}

# status: (description, example problem slug, title, detail, retryable)
_PROBLEMS: dict[int, tuple[str, str, str, str, bool]] = {
    400: (
        "The body is not valid JSON, or not a valid CloudEvent",
        "invalid-json",
        "Body is not valid JSON",
        "the body is not valid JSON: unexpected end of data",
        False,
    ),
    401: (
        "No API key, or an unknown one (`Authorization: Bearer KEY` or `X-API-Key`)",
        "unauthenticated",
        "No or unknown API key",
        "send an API key as `Authorization: Bearer KEY` or `X-API-Key`",
        False,
    ),
    403: (
        "The API key lacks the scope (publish:<exchange glob>, read:<queue glob>, admin)",
        "forbidden",
        "The API key lacks the scope for this call",
        "'billing' may not publish to exchange 'orders'",
        False,
    ),
    404: ("Not found", "exchange-not-found", "No such exchange", "no exchange 'orders'", False),
    409: (
        "The Idempotency-Key was used with another body, or its first request still runs",
        "idempotency-key-reused",
        "Idempotency-Key used with another body",
        "this Idempotency-Key was used with another request body; use a new key",
        False,
    ),
    413: (
        "The body is over max_message_bytes (max_batch_bytes for a batch)",
        "payload-too-large",
        "Body too large",
        "the body exceeds the limit of 1048576 bytes",
        False,
    ),
    415: (
        "Unsupported content type",
        "unsupported-media-type",
        "Unsupported content type",
        "content type 'text/plain' is not accepted",
        False,
    ),
    422: (
        "Validation failed (fields, reserved headers, the route's JSON Schema), or the "
        "message is unroutable (type ends in /unroutable)",
        "validation",
        "Request failed validation",
        "priority: Input should be a valid integer",
        False,
    ),
    429: (
        "Over the API key's rate limit; Retry-After says when to try again",
        "rate-limited",
        "Over the rate limit",
        "'orders-service' is over its rate of 100 requests/s",
        True,
    ),
    503: (
        "Broker unavailable, blocked, nacked, too busy, or the confirm timed out (outcome "
        "unknown: retry with the same Idempotency-Key); Retry-After is set",
        "broker-unavailable",
        "Broker unavailable",
        "the broker connection is down; retry later",
        True,
    ),
}

_RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        description, slug, title, detail, retryable = _PROBLEMS[status]
        example = {
            "type": f"/problems/{slug}",
            "title": title,
            "status": status,
            "detail": detail,
            "retryable": retryable,
        }
        response: dict[str, Any] = {
            "description": description,
            "content": {"application/problem+json": {"schema": PROBLEM_SCHEMA, "example": example}},
        }
        if status in (429, 503):
            response["headers"] = _RETRY_AFTER
        responses[status] = response
    return responses


PUBLISH_ONE_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": PublishRequest.model_json_schema(),
            "example": {
                "routing_key": "order.created",
                "payload": {"order_id": 42, "amount": 99.5},
                "headers": {"tenant": "acme"},
            },
        },
        "application/cloudevents+json": {
            "schema": {
                "type": "object",
                "required": ["specversion", "id", "source", "type"],
                "properties": {
                    "specversion": {"type": "string", "enum": ["1.0"]},
                    "id": {"type": "string", "minLength": 1},
                    "source": {"type": "string", "minLength": 1},
                    "type": {"type": "string", "minLength": 1},
                    "data": {},
                },
            },
            "example": {
                "specversion": "1.0",
                "id": "42",
                "source": "/orders",
                "type": "order.created",
                "data": {"order_id": 42},
            },
        },
    },
}

PUBLISHED: dict[str, Any] = {
    "description": "Confirmed by the broker; Location names the message",
    "headers": {
        "Location": {"description": "/v1/messages/{message_id}", "schema": {"type": "string"}},
        "Server-Timing": {
            "description": "validate, publish and confirm durations",
            "schema": {"type": "string"},
        },
    },
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["message_id", "exchange", "routing_key", "status"],
                "properties": {
                    "message_id": {"type": "string"},
                    "exchange": {"type": "string"},
                    "routing_key": {"type": "string"},
                    "status": {"type": "string", "enum": ["confirmed"]},
                },
            },
            "example": {
                "message_id": "4d07949ad8b04c6f",
                "exchange": "orders",
                "routing_key": "order.created",
                "status": "confirmed",
            },
        }
    },
}

BATCH_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": BatchRequest.model_json_schema(),
            "example": {"messages": [{"routing_key": "order.created", "payload": {"n": 1}}]},
        }
    },
}

BATCH_RESULTS: dict[str, Any] = {
    "description": "Every message confirmed",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["results"],
                "properties": {
                    "results": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["index", "message_id", "status"],
                            "properties": {
                                "index": {"type": "integer"},
                                "message_id": {"type": ["string", "null"]},
                                "status": {
                                    "type": "string",
                                    "enum": [
                                        "confirmed",
                                        "invalid",
                                        "unroutable",
                                        "nacked",
                                        "timeout",
                                    ],
                                },
                                "error": PROBLEM_SCHEMA,
                            },
                        },
                    }
                },
            },
            "example": {
                "results": [
                    {"index": 0, "message_id": "k-1:0", "status": "confirmed"},
                    {
                        "index": 1,
                        "message_id": "k-1:1",
                        "status": "unroutable",
                        "error": {
                            "type": "/problems/unroutable",
                            "title": "No queue is bound for this routing key",
                            "status": 422,
                            "detail": "exchange 'orders' routes 'invoice.paid' to no queue",
                            "retryable": False,
                        },
                    },
                ]
            },
        }
    },
}


SECURITY_SCHEMES: dict[str, Any] = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "an API key as a bearer token"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


def declare_security(app: FastAPI) -> None:
    """Say in the document that /v1 takes an API key, so /docs offers "Authorize".

    The publish routes check keys without `Depends` (it is their hot path), so FastAPI
    cannot infer this; the document is amended once, when first built.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        document.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        for path, operations in document["paths"].items():
            if path.startswith("/v1/"):
                for operation in operations.values():
                    operation["security"] = [{"bearer": []}, {"apiKey": []}]
        return document

    app.openapi = openapi  # type: ignore[method-assign]
