"""Each call of the API as data: what to send and how to read the answer. Both clients
(`Client`, `AsyncClient`) send these, so the two differ only in how they wait."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from hareway.client.errors import TransportError, problem_of
from hareway.client.models import (
    Batch,
    BatchResult,
    Message,
    Page,
    Published,
    batch,
    published,
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    method: str
    path: str
    read: Callable[[httpx.Response], T]
    json: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    resend_safe: bool = True
    timeout: float | None = None  # None: the client's own

    def answer(self, response: httpx.Response) -> T:
        if response.status_code >= 300:
            raise problem_of(response)
        return self.read(response)


def _segment(name: str) -> str:
    return quote(name, safe="")


def publish(exchange: str, message: Message, idempotency_key: str | None) -> Call[Published]:
    key = idempotency_key or message.message_id or str(uuid.uuid4())
    return Call(
        "POST",
        f"/v1/exchanges/{_segment(exchange)}/messages",
        lambda response: published(response.json(), response.headers),
        json=message.document(),
        headers={"Idempotency-Key": key},
    )


def publish_batch(
    exchange: str, messages: Sequence[Message], idempotency_key: str | None
) -> Call[Batch]:
    documents = [message.document() for message in messages]
    # Each message gets its own id now, so a retried batch publishes each message once
    # (the batch's own key makes the gateway replay the whole answer).
    for document in documents:
        document.setdefault("message_id", str(uuid.uuid4()))
    return Call(
        "POST",
        f"/v1/exchanges/{_segment(exchange)}/batch",
        lambda response: batch(response.json(), response.headers),
        json={"messages": documents},
        headers={"Idempotency-Key": idempotency_key or str(uuid.uuid4())},
    )


def message(message_id: str) -> Call[dict[str, Any]]:
    return Call("GET", f"/v1/messages/{_segment(message_id)}", lambda response: response.json())


def page(queue: str, after: str | None, limit: int, wait: float | None = None) -> Call[Page]:
    params: dict[str, Any] = {"limit": limit}
    if after is not None:
        params["after"] = after
    if wait:
        params["wait"] = wait
    return Call(
        "GET",
        f"/v1/queues/{_segment(queue)}/messages",
        lambda response: Page.of(response.json()),
        params=params,
        timeout=None if not wait else wait + 10,
    )


def dead_letters(queue: str, after: str | None, limit: int) -> Call[Page]:
    params: dict[str, Any] = {"limit": limit}
    if after is not None:
        params["after"] = after
    return Call(
        "GET",
        f"/v1/queues/{_segment(queue)}/dead-letters",
        lambda response: Page.of(response.json(), "dead_letters"),
        params=params,
    )


def redrive(queue: str, message_ids: Iterable[str] | None, limit: int) -> Call[dict[str, Any]]:
    ids = None if message_ids is None else list(message_ids)
    return Call(
        "POST",
        f"/v1/queues/{_segment(queue)}/dead-letters/redrive",
        lambda response: response.json(),
        json={"message_ids": ids, "limit": limit},
        resend_safe=False,
    )


def queues() -> Call[dict[str, Any]]:
    return Call("GET", "/v1/queues", lambda response: response.json())


def ready() -> Call[bool]:
    return Call("GET", "/readyz", lambda response: True)


def stream_path(queue: str) -> str:
    return f"/v1/queues/{_segment(queue)}/stream"


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def transport_error(exc: httpx.TransportError) -> TransportError:
    error = TransportError(str(exc) or type(exc).__name__)
    error.__cause__ = exc
    return error


@dataclass(frozen=True, slots=True)
class Retried:
    call: Call[Batch]
    indexes: list[int]  # where the retried messages sit in the first batch


def retry_of(first: Call[Batch], outcome: Batch) -> Retried | None:
    """A batch of the messages of `first` that failed in a way a retry can mend, under the
    message ids they already had (so a consumer stores each once), or None."""
    indexes = [result.index for result in outcome.results if result.retryable]
    if not indexes:
        return None
    documents = [first.json["messages"][index] for index in indexes]
    call = Call(
        first.method,
        first.path,
        first.read,
        json={"messages": documents},
        headers={"Idempotency-Key": str(uuid.uuid4())},
    )
    return Retried(call, indexes)


def merged(outcome: Batch, again: Batch, indexes: list[int]) -> Batch:
    results = list(outcome.results)
    for result in again.results:
        index = indexes[result.index]
        results[index] = BatchResult(index, result.message_id, result.status, result.error)
    return Batch(results, outcome.replayed)
