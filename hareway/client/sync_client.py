"""`Client`: the gateway's API for blocking code, on httpx.Client (the same calls as
`AsyncClient`, hareway/client/async_client.py)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

import httpx
from httpx_sse import connect_sse

import hareway.client.calls as calls
from hareway.client.errors import ProblemError, TransportError, problem_of
from hareway.client.models import Batch, Message, Page, Published, StoredMessage
from hareway.client.policy import DEFAULT_RETRY, RetryPolicy
from hareway.client.stream import StreamCursor

T = TypeVar("T")


class Client:
    """`base_url` is the gateway's; `api_key` goes as `Authorization: Bearer`. A
    `transport` (httpx) lets tests and applications route the calls elsewhere."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retry = retry
        self._http = httpx.Client(
            base_url=base_url,
            headers=calls.auth_headers(api_key),
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- publishing ----------------------------------------------------------------------
    def publish(
        self,
        exchange: str,
        routing_key: str,
        payload: Any = None,
        *,
        headers: dict[str, Any] | None = None,
        message_id: str | None = None,
        correlation_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Published:
        """Publish one message; returns once the broker confirmed it (a 202)."""
        message = Message(routing_key, payload, headers, message_id, correlation_id)
        return self.send(calls.publish(exchange, message, idempotency_key))

    def publish_message(
        self, exchange: str, message: Message, *, idempotency_key: str | None = None
    ) -> Published:
        return self.send(calls.publish(exchange, message, idempotency_key))

    def publish_batch(self, exchange: str, messages: Sequence[Message]) -> Batch:
        """Publish messages together; the messages the broker did not confirm but a retry
        can help (nacked, timeout) are sent again, each under its own message id."""
        call = calls.publish_batch(exchange, messages, None)
        outcome = self.send(call)
        for attempt in range(1, self.retry.attempts):
            again = calls.retry_of(call, outcome)
            if again is None:
                break
            time.sleep(self.retry.backoff(attempt))
            outcome = calls.merged(outcome, self.send(again.call), again.indexes)
        return outcome

    # -- reading -------------------------------------------------------------------------
    def message(self, message_id: str) -> dict[str, Any]:
        """Where a message is (`GET /v1/messages/{id}`)."""
        return self.send(calls.message(message_id))

    def page(
        self, queue: str, after: str | None = None, *, limit: int = 100, wait: float = 0
    ) -> Page:
        return self.send(calls.page(queue, after, limit, wait))

    def read(
        self, queue: str, after: str | None = None, *, limit: int = 100, wait: float = 0
    ) -> Iterator[StoredMessage]:
        """The queue's stored messages from `after` on, page by page. With `wait` (seconds,
        at most 30) it never ends: each page is a long poll for what comes next."""
        while True:
            page = self.page(queue, after, limit=limit, wait=wait)
            yield from page.messages
            after = page.next_cursor or (page.messages[-1].cursor if page.messages else after)
            if not page.messages and not wait:
                return

    def stream(self, queue: str, after: str | None = None) -> Iterator[StoredMessage]:
        """Server-Sent Events of the queue's stored messages; a broken stream is opened
        again after the last event seen (`Last-Event-ID`), so none is missed or repeated."""
        cursor = StreamCursor(after)
        attempt = 0
        while True:
            try:
                with connect_sse(
                    self._http,
                    "GET",
                    calls.stream_path(queue),
                    params=cursor.params(),
                    headers=cursor.headers(),
                    timeout=httpx.Timeout(self._http.timeout.connect, read=None),
                ) as source:
                    if source.response.status_code >= 300:
                        source.response.read()
                        raise problem_of(source.response)
                    for event in source.iter_sse():
                        stored = cursor.take(event)
                        if stored is not None:
                            attempt = 0
                            yield stored
                # The gateway ended the stream (it drains to restart): open it again.
                attempt += 1
                time.sleep(self.retry.backoff(attempt))
            except (httpx.TransportError, ProblemError) as exc:
                error = calls.transport_error(exc) if isinstance(exc, httpx.TransportError) else exc
                attempt += 1
                wait = self.retry.wait(attempt, error, resend_safe=True)
                if wait is None:
                    raise error from exc
                time.sleep(wait)

    def dead_letters(self, queue: str, after: str | None = None, *, limit: int = 100) -> Page:
        return self.send(calls.dead_letters(queue, after, limit))

    def redrive(
        self, queue: str, message_ids: Iterable[str] | None = None, *, limit: int = 1000
    ) -> dict[str, Any]:
        """Re-publish dead letters (all, or these ids); the gateway's answer, per message."""
        return self.send(calls.redrive(queue, message_ids, limit))

    def queues(self) -> dict[str, Any]:
        """The topology's queues with depth, consumers, retrying and dead letters."""
        return self.send(calls.queues())

    def ready(self) -> bool:
        try:
            return self.send(calls.ready(), retry=RetryPolicy(attempts=1))
        except (ProblemError, TransportError):
            return False

    # -- the one place requests go out ---------------------------------------------------
    def send(self, call: calls.Call[T], *, retry: RetryPolicy | None = None) -> T:
        policy = retry or self.retry
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.request(
                    call.method,
                    call.path,
                    json=call.json,
                    params=call.params,
                    headers=call.headers,
                    timeout=call.timeout or self._http.timeout,
                )
                return call.answer(response)
            except httpx.TransportError as exc:
                error: ProblemError | TransportError = calls.transport_error(exc)
            except ProblemError as exc:
                error = exc
            wait = policy.wait(attempt, error, resend_safe=call.resend_safe)
            if wait is None:
                raise error
            time.sleep(wait)
