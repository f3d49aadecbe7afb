"""A Python client of the gateway (docs/client.md), sync and async, on httpx.

    from hareway.client import AsyncClient, Message

    async with AsyncClient("http://127.0.0.1:8000", api_key=...) as hareway:
        await hareway.publish("orders", "order.created", {"order_id": 42})
        async for message in hareway.stream("orders.persist"):
            ...

Every publish carries an Idempotency-Key, kept across the client's retries (503, 429 with
`Retry-After`, a connection that broke): the gateway publishes it once. Errors are typed
from the gateway's problem documents (hareway/client/errors.py has the tree). This package
imports httpx and httpx-sse only: `pip install 'hareway[client]'` is all a caller needs
(the server's own packages come with the base install today; see docs/client.md).
"""

from hareway.client.async_client import AsyncClient
from hareway.client.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    HarewayError,
    NotFound,
    PayloadTooLarge,
    ProblemError,
    RateLimited,
    TransportError,
    Unauthenticated,
    Unavailable,
    Unroutable,
    ValidationFailed,
)
from hareway.client.models import Batch, BatchResult, Message, Page, Published, StoredMessage
from hareway.client.policy import NO_RETRY, RetryPolicy
from hareway.client.sync_client import Client

__all__ = [
    "NO_RETRY",
    "AsyncClient",
    "BadRequest",
    "Batch",
    "BatchResult",
    "Client",
    "Conflict",
    "Forbidden",
    "Gone",
    "HarewayError",
    "Message",
    "NotFound",
    "Page",
    "PayloadTooLarge",
    "ProblemError",
    "Published",
    "RateLimited",
    "RetryPolicy",
    "StoredMessage",
    "TransportError",
    "Unauthenticated",
    "Unavailable",
    "Unroutable",
    "ValidationFailed",
]
