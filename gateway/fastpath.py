"""The two publish paths as pure ASGI, in front of FastAPI's middleware, routing and
dependency solving.

Profiling showed that per-request machinery costing more CPU than validating and
publishing the message. So `Gateway.__call__` hands `POST .../messages` and `POST .../batch`
straight to the endpoint functions the FastAPI routes declare; those routes stay the
documented form (OpenAPI) and every other path goes through FastAPI as usual.
"""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.errors import GatewayError
from gateway.problems import problem_response
from gateway.routes import batch, publish

log = logging.getLogger(__name__)

_PUBLISH_PATH = re.compile(r"/v1/exchanges/([^/]+)/(messages|batch)")


class Gateway(FastAPI):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            match = _PUBLISH_PATH.fullmatch(scope["path"])
            # Before the lifespan has run there is nothing to publish with: let FastAPI answer.
            if match is not None and hasattr(self.state, "publish_services"):
                scope["app"] = self
                response = await self._publish(Request(scope, receive), match[1], match[2])
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _publish(self, request: Request, exchange: str, path: str) -> Response:
        retry_after_s = self.state.publish_services.settings.retry_after_s
        try:
            if path == "messages":
                # Parsing an empty query string still costs a QueryParams object per request.
                query = request.scope["query_string"]
                routing_key = request.query_params.get("routing_key") if query else None
                return await publish.publish_message(exchange, request, routing_key)
            return await batch.publish_batch(exchange, request)
        except GatewayError as exc:
            return problem_response(exc, retry_after_s)
        except Exception:
            log.exception("unexpected error publishing to %r", exchange)
            return problem_response(
                GatewayError("unexpected error; the gateway log has the details"), retry_after_s
            )
