"""The one place errors become HTTP: RFC 9457 `application/problem+json` answers.

The gateway's own errors (gateway/errors.py) know their problem type; the store's errors
are mapped here (`store_problem`), and so are the framework's (routing 404 and 405, request
validation) and anything unexpected (a 500 problem, never a text/plain page).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from gateway.catalogue import PROBLEM_JSON, PROBLEM_TYPE_BASE, problem_type
from gateway.errors import (
    BadRequest,
    GatewayError,
    MethodNotAllowed,
    NotFound,
    RateLimited,
    StoreUnavailable,
    Unauthenticated,
    ValidationFailed,
)
from hareway.store import InvalidCursor, StoreError, StoreRefused

__all__ = [
    "PROBLEM_JSON",
    "PROBLEM_TYPE_BASE",
    "install",
    "problem_body",
    "problem_response",
    "problem_type",
    "store_problem",
]

log = logging.getLogger(__name__)


def problem_body(error: GatewayError) -> dict[str, Any]:
    return {
        "type": problem_type(error.slug),
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "retryable": error.retryable,
        **error.extensions,
    }


def problem_response(
    error: GatewayError, retry_after_s: int, headers: dict[str, str] | None = None
) -> Response:
    all_headers = dict(headers or {})
    if error.server_timing:
        all_headers["Server-Timing"] = error.server_timing
    if isinstance(error, RateLimited):
        all_headers["Retry-After"] = str(error.retry_after_s)
    elif error.retry_after:
        all_headers["Retry-After"] = str(retry_after_s)
    elif isinstance(error, Unauthenticated):
        all_headers["WWW-Authenticate"] = 'Bearer realm="hareway"'
    return Response(
        orjson.dumps(problem_body(error)),
        status_code=error.status,
        media_type=PROBLEM_JSON,
        headers=all_headers,
    )


def store_problem(exc: StoreError, doing: str = "") -> GatewayError:
    """The problem a store error answers. The driver's words go to the log, not the client:
    they may name hosts and tables."""
    if isinstance(exc, InvalidCursor):
        # The store's cursors are opaque: one it did not hand out is a bad query parameter.
        return ValidationFailed(
            str(exc), errors=[{"field": "query.after", "message": str(exc), "type": "cursor"}]
        )
    prefix = f"{doing}: " if doing else ""
    if isinstance(exc, StoreRefused):
        log.warning("the store refused a request's values: %s", exc)
        return ValidationFailed(
            f"{prefix}the store refuses a value of this request",
            errors=[{"field": "", "message": "refused by the store", "type": "store_refused"}],
        )
    log.warning("the store is unavailable: %s", exc)
    return StoreUnavailable(f"{prefix}the store is unavailable; retry later")


def _http_problem(exc: StarletteHTTPException, request: Request) -> GatewayError:
    if exc.status_code == 404:
        return NotFound(f"no route for {request.method} {request.url.path}")
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        return MethodNotAllowed(
            f"{request.method} is not allowed on {request.url.path}; Allow: {allowed}"
        )
    if 400 <= exc.status_code < 500:
        return BadRequest(str(exc.detail))
    return GatewayError(str(exc.detail))


def install(app: FastAPI, retry_after_s: int) -> None:
    async def on_gateway_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return problem_response(exc, retry_after_s)

    async def on_store_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StoreError)
        return problem_response(store_problem(exc), retry_after_s)

    async def on_validation_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return problem_response(ValidationFailed.from_pydantic(exc.errors()), retry_after_s)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        headers = {"Allow": exc.headers["Allow"]} if exc.headers and "Allow" in exc.headers else {}
        return problem_response(_http_problem(exc, request), retry_after_s, headers)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        # Starlette logs the exception itself after this answer went out.
        return problem_response(
            GatewayError("unexpected error; the gateway log has the details"), retry_after_s
        )

    app.add_exception_handler(GatewayError, on_gateway_error)
    app.add_exception_handler(StoreError, on_store_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
