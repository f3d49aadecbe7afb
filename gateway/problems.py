"""The one place errors become HTTP: RFC 9457 `application/problem+json` answers."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from consumers.errors import InvalidCursor
from gateway.errors import (
    BrokerError,
    GatewayError,
    IdempotencyKeyInProgress,
    RateLimited,
    StoreUnavailable,
    Unauthenticated,
    ValidationFailed,
)

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE_BASE = "/problems/"


def problem_type(slug: str) -> str:
    return PROBLEM_TYPE_BASE + slug


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
    if isinstance(error, BrokerError | StoreUnavailable | IdempotencyKeyInProgress):
        all_headers["Retry-After"] = str(retry_after_s)
    elif isinstance(error, RateLimited):
        all_headers["Retry-After"] = str(error.retry_after_s)
    elif isinstance(error, Unauthenticated):
        all_headers["WWW-Authenticate"] = 'Bearer realm="hareway"'
    return Response(
        orjson.dumps(problem_body(error)),
        status_code=error.status,
        media_type=PROBLEM_JSON,
        headers=all_headers,
    )


def _plain_problem(status: int, title: str, detail: str) -> Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON)


def install(app: FastAPI, retry_after_s: int) -> None:
    async def on_gateway_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return problem_response(exc, retry_after_s)

    async def on_validation_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return problem_response(ValidationFailed.from_pydantic(exc.errors()), retry_after_s)

    async def on_http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return _plain_problem(exc.status_code, str(exc.detail), str(exc.detail))

    async def on_invalid_cursor(_: Request, exc: Exception) -> Response:
        # The store's cursors are opaque: one it did not hand out is a bad query parameter.
        return problem_response(ValidationFailed(str(exc)), retry_after_s)

    app.add_exception_handler(GatewayError, on_gateway_error)
    app.add_exception_handler(InvalidCursor, on_invalid_cursor)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
