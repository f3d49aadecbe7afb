"""Reading a request body with the size limit enforced while it streams in, not after."""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request

from gateway.errors import ClientDisconnected, PayloadTooLarge, ValidationFailed


async def read_capped(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ValidationFailed(f"Content-Length {declared!r} is not a number") from None
        if size > limit:
            raise PayloadTooLarge(f"the body has {size} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise PayloadTooLarge(f"the body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        # The client left, or gateway.http_bounds answered 408: no one waits for an answer.
        raise ClientDisconnected(f"after {received} bytes of the body") from None
    return b"".join(chunks)
