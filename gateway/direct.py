"""Publishes answered inside the HTTP protocol, without an ASGI cycle around them.

Profiling the single publish (docs/performance.md, issue 16) found more of the gateway's
CPU in the hand-offs around the app than in validating and publishing: uvicorn's task
running the app through its proxy-headers middleware, the app's `send` wrappers, uvicorn's
`send` checking and writing the head and the body apart. For a request the app answers
whole (`Gateway.answers_directly`: a publish, no CORS in front), `GatewayHttpProtocol` runs
`Gateway.answer` in the task uvicorn would have run the app in. The body is read through
the cycle's own `receive`, so `100-continue`, flow control, disconnects and the protocol's
bounds (gateway/http_bounds.py) are what they are for any request; the answer goes out in
one write with uvicorn's default headers, and the cycle's keep-alive and pipelining
bookkeeping runs as after uvicorn's own `send`.

Everything else goes to the app as before: other requests, a publish carrying proxy headers
(uvicorn's middleware rewrites the client from them), and every request when uvicorn wraps
the app in anything but that middleware (its trace logging) or writes its own access log.
"""

from __future__ import annotations

import contextvars
import logging
import re
from collections.abc import Iterable
from typing import Any

from starlette.responses import Response
from uvicorn.config import Config
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, RequestResponseCycle
from uvicorn.server import ServerState

from gateway.fastpath import Gateway
from gateway.http_bounds import BoundedHttpToolsProtocol

# uvicorn's own logger for an app's failures, as its `run_asgi` logs them.
log = logging.getLogger("uvicorn.error")

# What uvicorn's `send` refuses in a header value (a request id is the client's own).
_UNSAFE_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
_FORWARDED = (b"x-forwarded-for", b"x-forwarded-proto")


class GatewayHttpProtocol(BoundedHttpToolsProtocol):
    __slots__ = ("_direct", "_proxied")

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        *args: Any,
        **kwargs: Any,
    ) -> None:
        super().__init__(config, server_state, app_state, *args, **kwargs)
        app: object = self.app
        self._proxied = isinstance(app, ProxyHeadersMiddleware)
        if self._proxied:
            app = getattr(app, "app", None)
        # The gateway whose publishes this connection answers itself, if any.
        self._direct = app if isinstance(app, Gateway) and not self.access_log else None

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        gateway = self._direct
        # `app` is another one when uvicorn answers 503 beyond its concurrency limit.
        if gateway is not None and app is self.app:
            scope = cycle.scope
            match = gateway.answers_directly(scope)  # type: ignore[arg-type]
            if match is not None and not (self._proxied and _forwarded(scope["headers"])):
                answering = self._answer_publish(cycle, gateway, match)
                if getattr(self.config, "reset_contextvars", False):
                    task = self.loop.create_task(answering, context=contextvars.Context())
                else:
                    task = self.loop.create_task(answering)
                task.add_done_callback(self.tasks.discard)
                self.tasks.add(task)
                return
        super()._start_asgi_task(cycle, app)

    async def _answer_publish(
        self, cycle: RequestResponseCycle, gateway: Gateway, match: re.Match[str]
    ) -> None:
        scope: Any = cycle.scope
        try:
            response = await gateway.answer(scope, cycle.receive, match)  # type: ignore[arg-type]
            if response.background is not None or type(response).__call__ is not Response.__call__:
                # Not a body in memory: sent the ASGI way.
                await response(scope, cycle.receive, cycle.send)  # type: ignore[arg-type]
                return
            if cycle.flow.write_paused and not cycle.disconnected:
                await cycle.flow.drain()
            if not cycle.disconnected:
                self._write(cycle, response)
        except BaseException as exc:
            # As uvicorn's `run_asgi` does with an app that raised.
            log.error("Exception in ASGI application\n", exc_info=exc)
            if not cycle.response_started:
                await cycle.send_500_response()
            else:
                self.transport.close()
        finally:
            cycle.on_response = _nothing

    def _write(self, cycle: RequestResponseCycle, response: Response) -> None:
        """uvicorn's `send` of a whole answer with a Content-Length, in one write."""
        cycle.response_started = True
        cycle.waiting_for_100_continue = False
        keep_alive = cycle.keep_alive
        closing = False
        content: list[bytes | memoryview] = [STATUS_LINE[response.status_code]]
        for name, value in (*cycle.default_headers, *response.raw_headers):
            if _UNSAFE_VALUE.search(value):
                raise RuntimeError("Invalid HTTP header value.")
            if name == b"connection" and b"close" in value.lower():
                keep_alive, closing = False, True
            content += (name, b": ", value, b"\r\n")
        if not keep_alive and not closing:
            content.append(b"connection: close\r\n")
        content += (b"\r\n", response.body)
        self.transport.write(b"".join(content))
        cycle.keep_alive = keep_alive
        cycle.response_complete = True
        cycle.message_event.set()
        if not keep_alive:
            self.transport.close()
        cycle.on_response()


def _forwarded(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    return any(name in _FORWARDED for name, _ in headers)


def _nothing() -> None:
    pass
