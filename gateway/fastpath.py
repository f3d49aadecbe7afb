"""The two publish paths as pure ASGI, in front of FastAPI's middleware, routing and
dependency solving.

Profiling showed that per-request machinery costing more CPU than validating and
publishing the message. So `Gateway.__call__` hands `POST .../messages` and `POST .../batch`
straight to the endpoint functions the FastAPI routes declare; those routes stay the
documented form (OpenAPI) and every other path goes through FastAPI as usual.

With `CORS_ALLOW_ORIGINS` set, `/v1` requests (fast path included) pass through
`gateway.cors.Cors` first; without, nothing is added to any path.
"""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.access import REQUEST_ID, Observed, Observer
from gateway.drain import Drain
from gateway.errors import GatewayError
from gateway.problems import problem_response
from gateway.routes import batch, publish

log = logging.getLogger(__name__)

_PUBLISH_PATH = re.compile(r"/v1/exchanges/([^/]+)/(messages|batch)")
# Scope key: the request's observation, for the dispatch behind CORS.
_OBSERVED = "hareway.observed"


class Gateway(FastAPI):
    # Set by create_app: request ids, the access log, answers counted, traces (access.py).
    observer: Observer | None = None
    # Set by create_app; while it drains, every answer closes its connection.
    drain: Drain | None = None
    # Set by create_app when CORS_ALLOW_ORIGINS names origins: `/v1` goes through it.
    cors: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.drain is not None and self.drain.draining and scope["type"] == "http":
            send = _closing(send)
        observer = self.observer
        if scope["type"] != "http" or observer is None:
            await super().__call__(scope, receive, send)
            return
        observed = observer.begin(scope)
        if self.cors is not None and _under_v1(scope["path"]):
            # Preflights are answered there, and observed like any other request.
            scope[_OBSERVED] = observed
            await self.cors(scope, receive, observer.sending(scope, observed, send))
            return
        if scope["method"] == "POST" and await self._fast(scope, receive, send, observed, observer):
            return
        await super().__call__(scope, receive, observer.sending(scope, observed, send))

    async def routed(self, scope: Scope, receive: Receive, send: Send) -> None:
        """What CORS wraps: the same dispatch, on a `send` that already observes."""
        if scope["method"] == "POST" and await self._fast(
            scope, receive, send, scope[_OBSERVED], None
        ):
            return
        await super().__call__(scope, receive, send)

    async def _fast(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        observed: Observed,
        observer: Observer | None,
    ) -> bool:
        """Answer a publish here, or say it is none (False). With `observer` this ends the
        observation itself; without, `send` does."""
        match = self._publish_path(scope)
        if match is None:
            return False
        response = await self._answered(scope, receive, observed, observer, match)
        await response(scope, receive, send)
        return True

    def answers_directly(self, scope: Scope) -> re.Match[str] | None:
        """For the HTTP protocol (gateway/direct.py): the publish path of a request that
        `answer` answers whole, without the ASGI cycle; None for one the app must take
        (not a publish, or CORS in front)."""
        if self.cors is not None or self.observer is None or scope["method"] != "POST":
            return None
        return self._publish_path(scope)

    async def answer(self, scope: Scope, receive: Receive, match: re.Match[str]) -> Response:
        """What `__call__` answers to the publish `answers_directly` matched, as a
        response for the protocol to write: observed, and closing while draining."""
        observer = self.observer
        assert observer is not None
        response = await self._answered(scope, receive, observer.begin(scope), observer, match)
        if self.drain is not None and self.drain.draining:
            response.raw_headers.append(_CLOSE)
        return response

    def _publish_path(self, scope: Scope) -> re.Match[str] | None:
        match = _PUBLISH_PATH.fullmatch(scope["path"])
        # Before the lifespan has run there is nothing to publish with: let FastAPI answer.
        if match is None or not hasattr(self.state, "publish_services"):
            return None
        return match

    async def _answered(
        self,
        scope: Scope,
        receive: Receive,
        observed: Observed,
        observer: Observer | None,
        match: re.Match[str],
    ) -> Response:
        scope["app"] = self
        exchange = observed.exchange = match[1]
        # One coroutine for what was three: each costs on every request.
        request = Request(scope, receive)
        try:
            if match[2] == "messages":
                # Parsing an empty query string still costs a QueryParams object per request.
                query = scope["query_string"]
                routing_key = request.query_params.get("routing_key") if query else None
                response = await publish.publish_message(exchange, request, routing_key)
            else:
                response = await batch.publish_batch(exchange, request)
        except GatewayError as exc:
            response = problem_response(exc, self.state.publish_services.settings.retry_after_s)
        except Exception:
            log.exception("unexpected error publishing to %r", exchange)
            response = problem_response(
                GatewayError("unexpected error; the gateway log has the details"),
                self.state.publish_services.settings.retry_after_s,
            )
        if observer is not None:
            response.raw_headers.append((REQUEST_ID, observed.request_id.encode()))
            observer.end(scope, observed, response.status_code)
        return response


def _under_v1(path: str) -> bool:
    return path.startswith("/v1/") or path == "/v1"


def _closing(send: Send) -> Send:
    """`send` with `Connection: close` on the answer: the client's next request goes to a
    new connection, which the load balancer gives another gateway."""

    async def closing(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), _CLOSE]}
        await send(message)

    return closing


_CLOSE = (b"connection", b"close")
