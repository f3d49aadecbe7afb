"""A push subscription's circuit breaker: a target that keeps failing pauses its queue.

Counting is all it does; what "paused" means is the pusher's (consumers/push.py): it holds
the deliveries it has, unacked, takes no more than the prefetch window, spends no attempt
on them, and probes the target with the first one held until it answers.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class Breaker:
    def __init__(self, name: str, failures: int) -> None:
        self._name = name
        self._threshold = failures
        self._consecutive = 0
        self.open = False

    def failed(self, reason: str) -> None:
        """A delivery failed in a way that may pass (timeout, refused, 408, 429, 5xx)."""
        self._consecutive += 1
        if not self.open and self._consecutive >= self._threshold:
            self.open = True
            log.warning(
                "push %s: %d deliveries in a row failed (last: %s); pausing the queue and "
                "probing the target",
                self._name,
                self._consecutive,
                reason,
            )

    def answered(self) -> None:
        """The target answered for itself (a 2xx, or a status that dead-letters)."""
        if self.open:
            log.info("push %s: the target answers again; resuming", self._name)
        self._consecutive = 0
        self.open = False
