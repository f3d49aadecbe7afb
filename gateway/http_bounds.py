"""The gateway's HTTP/1.1 connections: uvicorn's httptools protocol with bounds on what one
client may hold.

uvicorn with httptools bounds none of these: the size of the request line and headers
(httptools keeps an unfinished header line in memory, however long), their count, the time
a client takes to send them, or the time it takes to send the body (uvicorn's keep-alive
timer runs only between requests). `BoundedHttpToolsProtocol`, given to uvicorn as `http=`,
adds them:

- 431 once the request line and headers pass `max_header_bytes`, or `max_headers` fields;
- 408 when the headers are not complete `header_timeout_s` after the connection was made
  (on a keep-alive connection: after the first byte of the next request), or the body not
  `body_timeout_s` after its headers; a connection that never sent a byte is just closed;
- 503 with `Retry-After` to a connection beyond `max_connections`, before reading from it.

Each answer is a problem (`gateway.problems.problem_body`) with `Connection: close`.

The common request costs next to nothing more: its head and body come in one read, so it
arms no timer, and its head is measured field by field only when the bytes read in the
head phase (or the read it began in) pass the limit.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, NoReturn

import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from gateway.errors import (
    GatewayError,
    InvalidHttpRequest,
    RequestHeaderTooLarge,
    RequestTimeout,
    TooManyConnections,
)
from gateway.problems import PROBLEM_JSON, problem_body
from gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

# After a refusal the connection reads on, dropping what comes, until the client closes or
# this long has passed: closing a socket with unread input makes the kernel send a reset,
# which can destroy the answer before the client read it (RFC 9112 9.6, lingering close).
LINGER_S = 2.0

# What a header field costs on the wire beyond its name and value: ": " and CRLF.
FIELD_OVERHEAD = 4
# What the head costs beyond its URL and fields, with the shortest method: "GET ", the
# version with its CRLF, and the blank line that ends the head.
HEAD_OVERHEAD = len(b"GET  HTTP/1.1\r\n\r\n")


@dataclass(frozen=True, slots=True)
class HttpBounds:
    max_header_bytes: int
    max_headers: int
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int
    retry_after_s: int

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> HttpBounds:
        return cls(
            max_header_bytes=settings.max_request_header_bytes,
            max_headers=settings.max_request_headers,
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            max_connections=settings.max_connections,
            retry_after_s=settings.retry_after_s,
        )


# What this module relies on in uvicorn's httptools protocol: methods it extends, and the
# per-request cycle's attributes it reads and sets (all made in `__init__`).
_PROTOCOL_METHODS = (
    "connection_made",
    "connection_lost",
    "data_received",
    "send_400_response",
    "handle_websocket_upgrade",
    "on_header",
    "on_headers_complete",
    "on_message_complete",
    # gateway/direct.py: where a request's task starts.
    "_start_asgi_task",
    "_unset_keepalive_if_required",
)
_CYCLE_ATTRIBUTES = (
    "response_started",
    "response_complete",
    "more_body",
    "disconnected",
    "message_event",
    "keep_alive",
    "on_response",
    # gateway/direct.py writes an answer as the cycle's `send` would.
    "scope",
    "flow",
    "default_headers",
    "waiting_for_100_continue",
    "access_log",
)
_CYCLE_METHODS = ("receive", "send", "send_500_response")


class UvicornChanged(RuntimeError):
    """The installed uvicorn lacks what `BoundedHttpToolsProtocol` relies on."""


def check_uvicorn() -> None:
    """Stop with one line, at start, if uvicorn's protocol is not the shape this module
    extends: an override that silently never ran would leave the gateway unbounded."""
    missing = [
        name for name in _PROTOCOL_METHODS if not callable(getattr(HttpToolsProtocol, name, None))
    ]
    cycle_source = inspect.getsource(RequestResponseCycle.__init__)
    missing += [
        f"RequestResponseCycle.{name}"
        for name in _CYCLE_ATTRIBUTES
        if f"self.{name} " not in cycle_source
    ]
    missing += [
        f"RequestResponseCycle.{name}"
        for name in _CYCLE_METHODS
        if not callable(getattr(RequestResponseCycle, name, None))
    ]
    if len(STATUS_LINE) < 500:
        missing.append("STATUS_LINE")
    if missing:
        raise UvicornChanged(
            f"uvicorn {version('uvicorn')} lacks {', '.join(missing)}, which "
            "gateway/http_bounds.py relies on; install a supported one (see pyproject.toml)"
        )


@functools.cache
def configured_bounds() -> HttpBounds:
    # uvicorn builds protocols with its own arguments only, in every worker process: the
    # bounds come from the environment, as the app's settings do, read once per process.
    return HttpBounds.from_settings(GatewaySettings())


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    # Slots, not the instance dict: uvicorn's protocol already has about 30 attributes, and
    # more would pass CPython's limit for key-sharing dicts and slow down every attribute
    # access of the protocol (measured: about 2 µs per request).
    __slots__ = (
        "_awaiting_headers",
        "_deadline",
        "_done",
        "_head_bytes",
        "_max_header_bytes",
        "_max_headers",
        "_read_bytes",
        "_refusal",
        "bounds",
    )

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        bounds: HttpBounds | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.bounds = bounds or configured_bounds()
        # Limits read on every request, as attributes of their own.
        self._max_header_bytes = self.bounds.max_header_bytes
        self._max_headers = self.bounds.max_headers
        # Bytes read while the head of the request was incomplete (all of them head, but for
        # the read that completes it), and the size of the latest read.
        self._head_bytes = 0
        self._read_bytes = 0
        self._awaiting_headers = True
        # The open phase's deadline (headers or body), or the linger after a refusal.
        self._deadline: asyncio.TimerHandle | None = None
        # Why a callback stopped the parser; uvicorn then calls send_400_response.
        self._refusal: GatewayError | None = None
        # This protocol reads no more requests here: it refused, or handed over to WebSocket.
        self._done = False

    # Connection lifecycle

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.bounds.max_connections:
            self._refuse(
                TooManyConnections(
                    f"this gateway process serves at most {self.bounds.max_connections} "
                    "connections at once; try again later"
                )
            )
            return
        self._arm(self.bounds.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)
        # uvicorn cancels its keep-alive timer only on a clean close: after a reset the
        # timer holds the protocol, its cycle and the request's scope for the whole
        # keep-alive timeout.
        self._unset_keepalive_if_required()

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        self._read_bytes = len(data)
        reading_head = self._awaiting_headers
        if reading_head:
            self._head_bytes += self._read_bytes
        super().data_received(data)
        if self._done or self.transport.is_closing():
            return
        if self._awaiting_headers:
            if reading_head and self._head_bytes > self._max_header_bytes:
                # Everything read so far was head, and httptools keeps an unfinished header
                # line to itself, where no callback sees it: this is what bounds its memory.
                self._refuse(RequestHeaderTooLarge(self._too_large()))
            elif self._deadline is None and self._head_bytes:
                # The first bytes of the next request on a keep-alive connection.
                self._arm(self.bounds.header_timeout_s)
        elif self._deadline is None:
            self._arm(self.bounds.body_timeout_s)

    def handle_websocket_upgrade(self) -> None:
        self._done = True
        self._cancel_deadline()
        super().handle_websocket_upgrade()

    def send_400_response(self, msg: str) -> None:
        # uvicorn calls this whenever httptools gives up, also when a callback below raised
        # to stop it; then the reason is ours.
        self._refuse(self._refusal or InvalidHttpRequest(msg))

    # Parser callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        # Counted as they come, so a flood of small fields in one read stops at the limit.
        if len(self.headers) >= self._max_headers:
            self._stop_parser(RequestHeaderTooLarge(f"more than {self._max_headers} header fields"))
        # uvicorn's own on_header, inlined: this runs for every field of every request.
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        if self._deadline is not None:
            self._cancel_deadline()
        # The head is at most the bytes read in the head phase, or (if it began inside the
        # latest read, after another request) that read: only then can it be too large.
        limit = self._max_header_bytes
        if (self._head_bytes > limit or self._read_bytes > limit) and self.head_size() > limit:
            self._stop_parser(RequestHeaderTooLarge(self._too_large()))
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._awaiting_headers = True
        self._head_bytes = 0
        if self._deadline is not None:
            self._cancel_deadline()
        super().on_message_complete()

    def head_size(self) -> int:
        """The parsed head's size on the wire (for the shortest method, "GET")."""
        fields = sum(len(name) + len(value) for name, value in self.headers)
        return HEAD_OVERHEAD + len(self.url) + fields + FIELD_OVERHEAD * len(self.headers)

    # Bounds

    def _too_large(self) -> str:
        return f"the request line and headers exceed {self._max_header_bytes} bytes"

    def _stop_parser(self, error: GatewayError) -> NoReturn:
        self._refusal = error
        raise error

    def _arm(self, delay_s: float) -> None:
        self._deadline = self.loop.call_later(delay_s, self._on_deadline)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _on_deadline(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if self._awaiting_headers:
            if cycle is not None and not cycle.response_complete:
                # The answer to the request before is still being made: close after it.
                cycle.keep_alive = False
            elif self._head_bytes:
                self._refuse(
                    RequestTimeout(
                        "the request line and headers were not complete within "
                        f"{self.bounds.header_timeout_s:g} s"
                    )
                )
            else:
                # It never sent a byte: there is no request to answer.
                self.transport.close()
        elif self.pipeline:
            # Queued behind a request still being answered, with reading paused by uvicorn:
            # its body time has not begun.
            self._arm(self.bounds.body_timeout_s)
        elif cycle.response_started:
            # Answered before its body was read (401, 413, ...): nothing can follow that.
            self.transport.close()
        else:
            self._refuse(
                RequestTimeout(
                    f"the request body was not complete within {self.bounds.body_timeout_s:g} s"
                )
            )

    def _refuse(self, error: GatewayError) -> None:
        """Answer `error` and close; after the answer being made for an earlier request."""
        self._done = True
        self._cancel_deadline()
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self._answer(error)
        elif not cycle.more_body:
            # Pipelined behind a complete request that is still being answered: that
            # answer goes first.
            cycle.on_response = functools.partial(self._answer, error)
        elif cycle.response_started:
            # The app is answering this request already: nothing else fits on the wire.
            self.transport.close()
        else:
            # The app may be waiting for the body: it sees a disconnect, and its answer,
            # if any, goes nowhere.
            cycle.disconnected = True
            cycle.message_event.set()
            self._answer(error)

    def _answer(self, error: GatewayError) -> None:
        if self.transport.is_closing():
            return
        body = orjson.dumps(problem_body(error))
        head = [STATUS_LINE[error.status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: " + PROBLEM_JSON.encode() + b"\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n",
        ]
        if isinstance(error, TooManyConnections):
            head.append(b"retry-after: %d\r\n" % self.bounds.retry_after_s)
        head += [b"\r\n", body]
        self.transport.write(b"".join(head))
        log.info("%s answered %d: %s", _peer(self.client), error.status, error.detail)
        # Read on and drop what comes (eof_received closes once the client is done).
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._deadline = self.loop.call_later(LINGER_S, self.transport.close)


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "a client"
