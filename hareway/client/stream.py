"""Where a Server-Sent Events reader is in its queue, so a broken stream resumes exactly
after the last event it handed on."""

from __future__ import annotations

import json
from typing import Any

from httpx_sse import ServerSentEvent

from hareway.client.models import StoredMessage


class StreamCursor:
    def __init__(self, after: str | None) -> None:
        self.last = after

    def params(self) -> dict[str, Any]:
        return {} if self.last is None else {"after": self.last}

    def headers(self) -> dict[str, str]:
        return {} if self.last is None else {"Last-Event-ID": self.last}

    def take(self, event: ServerSentEvent) -> StoredMessage | None:
        """The message an event carries (None for any other event); it is now the last."""
        if event.event != "message" or not event.data:
            return None
        stored = StoredMessage.of(json.loads(event.data))
        self.last = event.id or stored.cursor
        return stored
