"""The rows the store writes and the views it reads back."""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from hareway.store.errors import InvalidCursor

Status = Literal["persisted", "dead_lettered"]
# A delivery as `GET /v1/messages/{id}` reports it: also a conflict, a message that came
# with an id its queue had already stored for another body.
# And `retrying`: a message on its queue's retry ladder, stored nowhere else yet.
DeliveryStatus = Literal["persisted", "dead_lettered", "conflict", "expired", "retrying"]


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
    content_encoding: str | None = None

    @property
    def body_sha256(self) -> bytes:
        """What tells a redelivery (same body) from a conflict (same id, another body)."""
        return hashlib.sha256(self.body).digest()


class Conflicts(list[DeliveryRecord]):
    """`Transaction.write`'s answer: the conflicts (records whose id their queue holds for
    another body), and how many persisted records went in as no new row for being stored
    already with the same body (the consumers' duplicates metric)."""

    def __init__(self, conflicts: Sequence[DeliveryRecord] = (), *, duplicates: int = 0) -> None:
        super().__init__(conflicts)
        self.duplicates = duplicates

    @classmethod
    def among(
        cls, candidates: Sequence[DeliveryRecord], conflicting: Sequence[DeliveryRecord]
    ) -> Conflicts:
        """From the records that went in as no new row, and those of them that conflict."""

        def persisted(records: Sequence[DeliveryRecord]) -> int:
            return sum(record.status == "persisted" for record in records)

        return cls(conflicting, duplicates=persisted(candidates) - persisted(conflicting))


# Where a pushed message is with its subscription's target (docs/push.md).
PushStatus = Literal["delivered", "retrying", "dead_lettered"]


@dataclass(frozen=True, slots=True)
class PushRecord:
    """The outcome of one push of a stored message to its queue's subscription."""

    queue: str
    message_id: str
    status: PushStatus
    # Deliveries tried so far, this one included.
    attempts: int
    # The target's HTTP status, None when there was no answer (a timeout, a refusal).
    last_status: int | None = None
    last_error: str | None = None
    # When the retry ladder brings it back (status `retrying`).
    next_attempt_at: datetime | None = None
    updated_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where one message ended up in one queue."""

    queue: str
    status: DeliveryStatus
    attempts: int
    exchange: str
    routing_key: str
    persisted_at: datetime
    # For a queue with a push subscription, the last push outcome (None: not pushed yet).
    push: PushRecord | None = None
    # A `retrying` one: why its last attempt failed, and when the ladder brings it back.
    last_error: str | None = None
    next_attempt_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RetryRecord:
    """A message sent down its queue's retry ladder: its attempts so far and the last error."""

    queue: str
    message_id: str
    exchange: str
    routing_key: str
    attempts: int
    last_error: str
    next_attempt_at: datetime
    updated_at: datetime = field(default_factory=utcnow)


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
    content_encoding: str | None = None


@dataclass(frozen=True, slots=True)
class MessagePage:
    messages: list[StoredMessage]
    next_cursor: str | None
    # Set once the queue's retention expired messages: the cursor of the last one. A
    # reader whose cursor is behind it missed messages (`gap`); from it on nothing is
    # missing.
    oldest_cursor: str | None = None
    gap: bool = False


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
    content_encoding: str | None = None


@dataclass(frozen=True, slots=True)
class DeadLetterPage:
    messages: list[DeadLetterMessage]
    next_cursor: str | None
    oldest_cursor: str | None = None
    gap: bool = False


@dataclass(frozen=True, slots=True)
class Redrive:
    """One dead letter re-published: by whom, where to."""

    queue: str
    message_id: str
    exchange: str
    routing_key: str
    redriven_by: str
    redriven_at: datetime = field(default_factory=utcnow)


def gap(through: int | None, after: str | None) -> tuple[str | None, bool]:
    """A listing's `oldest_cursor` and `gap`, from the last cursor whose message expired
    (None: none has): a reader whose cursor is behind it missed messages."""
    if through is None:
        return None, False
    return str(through), after is not None and parse_cursor(after) < through


def parse_cursor(cursor: str) -> int:
    """A cursor is the row's position in its store, handed out as text."""
    try:
        value = int(cursor)
    except ValueError:
        raise InvalidCursor(f"not a cursor of this store: {cursor!r}") from None
    if value < 0:
        raise InvalidCursor(f"not a cursor of this store: {cursor!r}")
    return value


@dataclass(frozen=True, slots=True)
class Answer:
    """The first answer to a request with a key: replayed to its repeats."""

    status: int
    body: bytes


class Claim(enum.Enum):
    OWNED = "owned"  # this request has the key: publish, then complete or release it
    PENDING = "pending"  # a request with the same body still runs
    REUSED = "reused"  # the key was used for another body
