"""What a user handler receives: one decoded message."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Message:
    message_id: str
    queue: str
    exchange: str
    routing_key: str
    headers: dict[str, Any]
    content_type: str | None
    body: bytes
    # The JSON value of a JSON message (an instance of the handler's `model`, if it has
    # one); None for other content types: read `body`.
    payload: Any
    # 1 on the first delivery, 2 on the first retry, and so on.
    attempts: int
    published_at: datetime | None
