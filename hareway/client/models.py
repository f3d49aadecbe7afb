"""What the clients send and what they hand back: plain frozen dataclasses over the
gateway's JSON (docs/client.md), each keeping the document it came from as `raw`."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from hareway.client.errors import ProblemError


@dataclass(frozen=True, slots=True)
class Message:
    """One message to publish; `message_id` defaults to the request's Idempotency-Key."""

    routing_key: str
    payload: Any = None
    headers: dict[str, Any] | None = None
    message_id: str | None = None
    correlation_id: str | None = None
    priority: int | None = None
    expiration_ms: int | None = None

    def document(self) -> dict[str, Any]:
        body: dict[str, Any] = {"routing_key": self.routing_key, "payload": self.payload}
        for name in ("headers", "message_id", "correlation_id", "priority", "expiration_ms"):
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        return body


@dataclass(frozen=True, slots=True)
class Published:
    message_id: str
    exchange: str
    routing_key: str
    status: str
    location: str | None = None
    replayed: bool = False  # the answer of an earlier request with the same key


@dataclass(frozen=True, slots=True)
class BatchResult:
    index: int
    message_id: str | None
    status: str  # confirmed, invalid, unroutable, nacked, timeout
    error: dict[str, Any] | None = None

    @property
    def confirmed(self) -> bool:
        return self.status == "confirmed"

    @property
    def retryable(self) -> bool:
        return bool(self.error and self.error.get("retryable"))


@dataclass(frozen=True, slots=True)
class Batch:
    results: list[BatchResult]
    replayed: bool = False

    @property
    def confirmed(self) -> bool:
        return all(result.confirmed for result in self.results)

    @property
    def failed(self) -> list[BatchResult]:
        return [result for result in self.results if not result.confirmed]


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as a queue's consumer stored it (a listing's entry, or a dead letter)."""

    message_id: str
    cursor: str
    exchange: str
    routing_key: str
    headers: dict[str, Any]
    content_type: str | None
    attempts: int
    persisted_at: str
    raw: dict[str, Any] = field(repr=False)

    @property
    def body(self) -> Any:
        """The JSON value of a JSON message, else its bytes."""
        if "body_base64" in self.raw:
            return base64.b64decode(self.raw["body_base64"])
        return self.raw.get("body")

    @property
    def last_error(self) -> str | None:
        return self.raw.get("last_error")

    @classmethod
    def of(cls, document: dict[str, Any]) -> StoredMessage:
        return cls(
            message_id=document["message_id"],
            cursor=str(document["cursor"]),
            exchange=document.get("exchange", ""),
            routing_key=document.get("routing_key", ""),
            headers=document.get("headers") or {},
            content_type=document.get("content_type"),
            attempts=int(document.get("attempts", 1)),
            persisted_at=document.get("persisted_at", ""),
            raw=document,
        )


@dataclass(frozen=True, slots=True)
class Page:
    messages: list[StoredMessage]
    next_cursor: str | None
    oldest_cursor: str | None = None
    gap: bool = False  # the cursor was behind what the queue's retention expired

    @classmethod
    def of(cls, document: dict[str, Any], key: str = "messages") -> Page:
        return cls(
            [StoredMessage.of(entry) for entry in document.get(key, [])],
            document.get("next_cursor"),
            document.get("oldest_cursor"),
            bool(document.get("gap", False)),
        )


def published(document: dict[str, Any], headers: Any) -> Published:
    return Published(
        message_id=document["message_id"],
        exchange=document.get("exchange", ""),
        routing_key=document.get("routing_key", ""),
        status=document.get("status", "confirmed"),
        location=headers.get("location"),
        replayed=headers.get("idempotent-replayed") == "true",
    )


def batch(document: dict[str, Any], headers: Any) -> Batch:
    return Batch(
        [
            BatchResult(
                int(entry["index"]), entry.get("message_id"), entry["status"], entry.get("error")
            )
            for entry in document.get("results", [])
        ],
        replayed=headers.get("idempotent-replayed") == "true",
    )


__all__ = [
    "Batch",
    "BatchResult",
    "Message",
    "Page",
    "ProblemError",
    "Published",
    "StoredMessage",
]
