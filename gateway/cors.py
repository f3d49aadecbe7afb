"""CORS for browser callers on `/v1`, when `CORS_ALLOW_ORIGINS` names origins.

Starlette's `CORSMiddleware` answers preflights and marks answers; three things on top:

- Binary-mode CloudEvents send their attributes as `ce-<name>` headers, extensions
  included, so no list can name them all and the middleware has no pattern for headers:
  every requested `ce-*` header is allowed besides the fixed list.
- `Timing-Allow-Origin` on answers to an allowed origin: without it a cross-origin page's
  `PerformanceResourceTiming.serverTiming` is empty, whatever `Server-Timing` says.
- An answer to an origin not allowed carries no CORS header at all (Starlette would still
  add `Access-Control-Expose-Headers`), and a refused preflight is a `cors-refused`
  problem instead of a text/plain 400.

`Gateway.__call__` (gateway/fastpath.py) sends `/v1` requests through it, the publish fast
path included; with no origins configured it is not built and costs nothing.
"""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Send

from gateway.errors import CorsRefused
from gateway.problems import problem_response

ALLOWED_METHODS = ("GET", "POST", "OPTIONS")
ALLOWED_HEADERS = (
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "X-Request-ID",
    "traceparent",
    "tracestate",
    # Resuming `GET /v1/queues/{queue}/stream` (Server-Sent Events).
    "Last-Event-ID",
)
# And every `ce-*` header: binary-mode CloudEvents attributes.
CLOUDEVENT_PREFIX = "ce-"
EXPOSED_HEADERS = (
    "Location",
    "Server-Timing",
    "Idempotent-Replayed",
    "Retry-After",
    "X-Request-ID",
)
# Seconds a browser may reuse a preflight's answer (Chromium caps it at 7200).
MAX_AGE_S = 600

_REQUEST_HEADERS = "access-control-request-headers"
_PREFLIGHT_VARY = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"


class Cors(CORSMiddleware):
    def __init__(self, app: ASGIApp, origins: tuple[str, ...]) -> None:
        super().__init__(
            app,
            allow_origins=origins,
            allow_methods=ALLOWED_METHODS,
            allow_headers=ALLOWED_HEADERS,
            expose_headers=EXPOSED_HEADERS,
            max_age=MAX_AGE_S,
        )

    def preflight_response(self, request_headers: Headers) -> Response:
        requested = [name.strip() for name in request_headers.get(_REQUEST_HEADERS, "").split(",")]
        cloudevent = [name for name in requested if name.lower().startswith(CLOUDEVENT_PREFIX)]
        if cloudevent:
            others = [name for name in requested if name and name not in cloudevent]
            raw = [(k, v) for k, v in request_headers.raw if k != _REQUEST_HEADERS.encode()]
            if others:
                raw.append((_REQUEST_HEADERS.encode(), ", ".join(others).encode("latin-1")))
            request_headers = Headers(raw=raw)
        response = super().preflight_response(request_headers)
        if response.status_code != 200:
            return self._refused(request_headers)
        if cloudevent:
            allowed = response.headers["Access-Control-Allow-Headers"]
            response.headers["Access-Control-Allow-Headers"] = ", ".join([allowed, *cloudevent])
        return response

    def _refused(self, request_headers: Headers) -> Response:
        origin = request_headers["origin"]
        method = request_headers["access-control-request-method"]
        if not self.is_allowed_origin(origin):
            why = f"origin {origin!r} is not allowed (CORS_ALLOW_ORIGINS)"
        elif method not in self.allow_methods:
            why = f"method {method!r} is not allowed; allowed: {', '.join(ALLOWED_METHODS)}"
        else:
            requested = request_headers.get(_REQUEST_HEADERS, "").split(",")
            refused = [
                name.strip() for name in requested if name.strip().lower() not in self.allow_headers
            ]
            why = (
                f"header {', '.join(refused)} not allowed; allowed: "
                f"{', '.join(ALLOWED_HEADERS)} and {CLOUDEVENT_PREFIX}*"
            )
        # Never retryable, so no Retry-After to configure.
        response = problem_response(CorsRefused(f"CORS preflight refused: {why}"), 0)
        # The answer depends on these, as a successful preflight's does.
        response.headers["Vary"] = _PREFLIGHT_VARY
        return response

    async def send(self, message: Message, send: Send, request_headers: Headers) -> None:
        if message["type"] != "http.response.start":
            await send(message)
            return
        message.setdefault("headers", [])
        origin = request_headers.get("origin")
        if origin is not None and self.is_allowed_origin(origin):
            headers = MutableHeaders(scope=message)
            headers["Timing-Allow-Origin"] = "*" if self.allow_all_origins else origin
            await super().send(message, send, request_headers)
            return
        if not self.allow_all_origins:
            # A cache must not hand this answer to an origin that is allowed.
            headers = MutableHeaders(scope=message)
            headers.add_vary_header("Origin")
        await send(message)
