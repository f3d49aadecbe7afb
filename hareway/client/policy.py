"""When a client tries again, and how long it waits: one rule for both clients.

Retried: 503 and 429 (and a 409 for a key whose first request is still publishing), which
the gateway marks `retryable`, waiting what `Retry-After` says; and an answer that never
came, but only for a request that is safe to send twice. A publish is: it always carries an
Idempotency-Key, kept across its retries, so the gateway publishes it once. A GET is. A
redrive is not (it would publish the dead letters again), so it is retried only when the
connection was refused, before anything was sent.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import httpx

from hareway.client.errors import ProblemError, TransportError

_RETRIED_STATUSES = frozenset({409, 429, 503})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 5
    backoff_s: float = 0.2  # the first wait without Retry-After; doubles, with jitter
    max_wait_s: float = 10.0  # also the most a Retry-After is honoured for

    def wait(
        self, attempt: int, error: ProblemError | TransportError, *, resend_safe: bool
    ) -> float | None:
        """How long to wait before attempt `attempt + 1` after `error`, or None: give up."""
        if attempt >= self.attempts:
            return None
        if isinstance(error, ProblemError):
            if error.status not in _RETRIED_STATUSES or not error.retryable:
                return None
            if error.retry_after is not None:
                return min(self.max_wait_s, error.retry_after)
        elif not (resend_safe or isinstance(error.__cause__, httpx.ConnectError)):
            return None
        return self.backoff(attempt)

    def backoff(self, attempt: int) -> float:
        """The wait after attempt `attempt` when the gateway named none."""
        backoff = self.backoff_s * 2 ** (attempt - 1)
        return float(min(self.max_wait_s, backoff * random.uniform(0.5, 1.0)))


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(attempts=1)
