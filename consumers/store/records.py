"""The rows the store writes and the views it reads back."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Status = Literal["persisted", "dead_lettered"]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One message as a queue's consumer received it."""

    queue: str
    message_id: str
    exchange: str
    routing_key: str
    headers: dict[str, Any]
    content_type: str | None
    body: bytes
    attempts: int
    published_at: datetime | None = None
    status: Status = "persisted"
    last_error: str | None = None
    persisted_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where one message ended up in one queue."""

    queue: str
    status: Status
    attempts: int
    exchange: str
    routing_key: str
    persisted_at: datetime


@dataclass(frozen=True, slots=True)
class StoredMessage:
    cursor: str
    message_id: str
    exchange: str
    routing_key: str
    headers: dict[str, Any]
    content_type: str | None
    body: bytes
    attempts: int
    persisted_at: datetime


@dataclass(frozen=True, slots=True)
class MessagePage:
    messages: list[StoredMessage]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class DeadLetterMessage:
    """A message its queue gave up on, kept so it can be looked at and redriven."""

    cursor: str
    queue: str
    message_id: str
    exchange: str
    routing_key: str
    headers: dict[str, Any]
    content_type: str | None
    body: bytes
    attempts: int
    last_error: str | None
    dead_lettered_at: datetime


@dataclass(frozen=True, slots=True)
class DeadLetterPage:
    messages: list[DeadLetterMessage]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Redrive:
    """One dead letter re-published: by whom, where to."""

    queue: str
    message_id: str
    exchange: str
    routing_key: str
    redriven_by: str
    redriven_at: datetime = field(default_factory=utcnow)
