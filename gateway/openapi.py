"""OpenAPI fragments: the problem schema, attached to every documented error status."""

from __future__ import annotations

from typing import Any

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "example": "/problems/unroutable"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "retryable": {"type": "boolean", "description": "whether the same request may succeed"},
    },
}

_DESCRIPTIONS = {
    400: "The body is not valid JSON",
    404: "Not found",
    413: "The body is over max_message_bytes",
    422: "Validation failed, or the message is unroutable (type ends in /unroutable)",
    503: "Broker unavailable, blocked, nacked or confirm timed out; Retry-After is set",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {
            "description": _DESCRIPTIONS.get(status, "Error"),
            "content": {"application/problem+json": {"schema": PROBLEM_SCHEMA}},
        }
        for status in statuses
    }
