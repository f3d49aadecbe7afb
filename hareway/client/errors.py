"""What a call to the gateway can raise, mapped from its problem documents at the seam.

    HarewayError
    ├── TransportError          the gateway could not be reached, or did not answer in time
    └── ProblemError            the gateway answered with a problem document (RFC 9457)
        ├── BadRequest          400
        ├── Unauthenticated     401
        ├── Forbidden           403
        ├── NotFound            404
        ├── Conflict            409 (an Idempotency-Key reused with another body)
        ├── Gone                410 (the message expired under its queue's retention)
        ├── PayloadTooLarge     413
        ├── ValidationFailed    422
        │   └── Unroutable      422, no queue is bound for the routing key
        ├── RateLimited         429
        └── Unavailable         503 (the broker or the store)

A `ProblemError` carries the document's `type`, `title`, `detail`, `retryable`, `errors` and
the answer's `Retry-After`; the clients retry the retryable ones themselves (RetryPolicy)
and raise only when their attempts are spent.
"""

from __future__ import annotations

from typing import Any

import httpx


class HarewayError(Exception):
    """Anything a hareway client raises."""


class TransportError(HarewayError):
    """No answer: the connection failed, broke off or timed out."""


class ProblemError(HarewayError):
    def __init__(self, status: int, problem: dict[str, Any], retry_after: float | None) -> None:
        self.status = status
        self.problem = problem
        self.type = str(problem.get("type", "about:blank"))
        self.title = str(problem.get("title", ""))
        self.detail = str(problem.get("detail", ""))
        self.retryable = bool(problem.get("retryable", False))
        self.errors: list[dict[str, Any]] = list(problem.get("errors", []))
        self.retry_after = retry_after
        super().__init__(f"{status} {self.type}: {self.detail or self.title}")


class BadRequest(ProblemError):
    pass


class Unauthenticated(ProblemError):
    pass


class Forbidden(ProblemError):
    pass


class NotFound(ProblemError):
    pass


class Conflict(ProblemError):
    pass


class Gone(ProblemError):
    pass


class PayloadTooLarge(ProblemError):
    pass


class ValidationFailed(ProblemError):
    pass


class Unroutable(ValidationFailed):
    pass


class RateLimited(ProblemError):
    pass


class Unavailable(ProblemError):
    pass


_BY_STATUS: dict[int, type[ProblemError]] = {
    400: BadRequest,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    413: PayloadTooLarge,
    422: ValidationFailed,
    429: RateLimited,
    503: Unavailable,
}


def retry_after(response: httpx.Response) -> float | None:
    """`Retry-After` in seconds (the gateway sends seconds, never a date)."""
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def problem_of(response: httpx.Response) -> ProblemError:
    """The error an answer that is not 2xx stands for."""
    try:
        document = response.json()
    except ValueError:
        document = None
    if not isinstance(document, dict):
        document = {"title": response.reason_phrase, "detail": response.text[:500]}
    document.setdefault("status", response.status_code)
    kind = _BY_STATUS.get(response.status_code, ProblemError)
    if kind is ValidationFailed and str(document.get("type", "")).endswith("/unroutable"):
        kind = Unroutable
    return kind(response.status_code, document, retry_after(response))
