"""OpenAPI fragments: the publish bodies and answers (problems: gateway/catalogue.py)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from gateway.catalogue import PROBLEM_SCHEMA, problem_responses
from gateway.envelope import BatchRequest, PublishRequest

__all__ = [
    "BATCH_BODY",
    "BATCH_RESULTS",
    "PROBLEM_SCHEMA",
    "PUBLISHED",
    "PUBLISH_ONE_BODY",
    "declare_security",
    "problem_responses",
]

# The request models' own schemas go into components/schemas, where their `$ref`s point:
# a model's `$defs` left inside a request body would be refs into nowhere.
_REF_TEMPLATE = "#/components/schemas/{model}"
COMPONENT_SCHEMAS: dict[str, Any] = {}


def _component_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=_REF_TEMPLATE)
    for name, definition in schema.pop("$defs", {}).items():
        COMPONENT_SCHEMAS[name] = definition
    COMPONENT_SCHEMAS[model.__name__] = schema
    return {"$ref": _REF_TEMPLATE.format(model=model.__name__)}


PUBLISH_ONE_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": _component_schema(PublishRequest),
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
            "schema": _component_schema(BatchRequest),
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
        components = document.setdefault("components", {})
        components["securitySchemes"] = SECURITY_SCHEMES
        components.setdefault("schemas", {}).update(COMPONENT_SCHEMAS)
        for path, operations in document["paths"].items():
            if path.startswith("/v1/"):
                for operation in operations.values():
                    operation["security"] = [{"bearer": []}, {"apiKey": []}]
        return document

    app.openapi = openapi  # type: ignore[method-assign]
