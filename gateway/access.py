"""What the gateway notes about every request: its id, its answer, its trace, its log line.

- `X-Request-ID`: taken from the request when it is a printable ASCII string of at most
  128 characters, else made; echoed in the answer and carried into the AMQP headers of
  every message the request publishes (`x-request-id`), beside the W3C `traceparent`.
- The access log (`ACCESS_LOG=true`): one line per request with method, path, status,
  duration, request id, and for publishes the exchange and message id.
- `hareway_http_responses_total{status}`.

`Gateway.__call__` (gateway/fastpath.py) calls `begin` for every HTTP request. The work
per request while the access log and tracing are off is one pass over the request
headers and a counter increment: the publish path's CPU is the bench's key figure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from starlette.types import Message, Scope, Send

from hareway.logs import get_logger
from hareway.tracing import TRACEPARENT, TRACESTATE, Tracing, valid_traceparent, valid_tracestate
from hareway.wire import REQUEST_ID_HEADER, new_message_id

access_log = get_logger("gateway.access")

REQUEST_ID = b"x-request-id"
_MAX_REQUEST_ID = 128
# Scope keys: the headers a route adds to its messages; the message id it published (or
# how many, for a batch), for the access log.
CARRIED = "hareway.carried"
ACCESS_MESSAGE_ID = "hareway.message_id"


def _usable_request_id(raw: bytes) -> str | None:
    if not 0 < len(raw) <= _MAX_REQUEST_ID:
        return None
    text = raw.decode("latin-1")
    return text if text.isascii() and text.isprintable() else None


class Observed:
    """One request on its way: the headers its messages carry, and how it ends."""

    __slots__ = ("carried", "exchange", "request_id", "span", "started")

    def __init__(self, request_id: str, carried: dict[str, str]) -> None:
        self.request_id = request_id
        self.carried = carried
        self.started = time.perf_counter()
        self.span: Any = None
        self.exchange: str | None = None


class Observer:
    def __init__(self, access_log_on: bool, tracing: Tracing) -> None:
        self.access_log = access_log_on
        self.tracing = tracing
        self.answered: Callable[[int], None] | None = None  # Metrics.answered, once built

    def begin(self, scope: Scope) -> Observed:
        request_id: str | None = None
        traceparent: str | None = None
        tracestate: str | None = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID:
                request_id = _usable_request_id(value)
            elif name == b"traceparent":
                traceparent = value.decode("latin-1")
            elif name == b"tracestate":
                tracestate = value.decode("latin-1")
        if request_id is None:
            request_id = new_message_id()
        carried = {REQUEST_ID_HEADER: request_id}
        observed = Observed(request_id, carried)
        if self.tracing.enabled:
            self._start_span(scope, observed, traceparent, tracestate)
        elif traceparent is not None and valid_traceparent(traceparent):
            # Not tracing here: a trace started upstream still reaches the consumers.
            carried[TRACEPARENT] = traceparent
            if tracestate is not None and valid_tracestate(tracestate):
                carried[TRACESTATE] = tracestate
        scope[CARRIED] = carried
        return observed

    def _start_span(
        self, scope: Scope, observed: Observed, traceparent: str | None, tracestate: str | None
    ) -> None:
        incoming = {}
        if traceparent is not None:
            incoming[TRACEPARENT] = traceparent
            if tracestate is not None:
                incoming[TRACESTATE] = tracestate
        parent = self.tracing.extract(incoming)
        method, path = scope["method"], scope["path"]
        span = self.tracing.start(
            f"{method} {path}",
            "server",
            parent,
            {
                "http.request.method": method,
                "url.path": path,
                "http.request.header.x-request-id": observed.request_id,
            },
        )
        observed.span = span
        # Messages published by this request continue this trace.
        self.tracing.inject(observed.carried, span)

    def end(self, scope: Scope, observed: Observed, status: int) -> None:
        if self.answered is not None:
            self.answered(status)
        if observed.span is not None:
            observed.span.set_attribute("http.response.status_code", status)
            if status >= 500:
                from opentelemetry.trace import Status, StatusCode

                observed.span.set_status(Status(StatusCode.ERROR))
            observed.span.end()
        if self.access_log:
            published = {}
            if observed.exchange is not None:
                published["exchange"] = observed.exchange
            if scope.get(ACCESS_MESSAGE_ID) is not None:
                published["message_id"] = scope[ACCESS_MESSAGE_ID]
            access_log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - observed.started) * 1000, 3),
                request_id=observed.request_id,
                client=(scope.get("client") or ("", 0))[0],
                **published,
            )

    def sending(self, scope: Scope, observed: Observed, send: Send) -> Send:
        """`send` that echoes the request id and ends the observation with the answer."""
        header = (REQUEST_ID, observed.request_id.encode())

        async def observed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
                self.end(scope, observed, message["status"])
            await send(message)

        return observed_send
