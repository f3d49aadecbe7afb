"""A push target for the tests: a real HTTP server (uvicorn, on 127.0.0.1) that checks every
request's signature with the `standardwebhooks` package, an implementation hareway did
not write, and answers as the test tells it: a status (with `Retry-After`), slowly, never
(it hangs), or not at all (it drops the connection)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from standardwebhooks import Webhook, WebhookVerificationError
from uvicorn.protocols.http.h11_impl import H11Protocol

from tests.support.uvicorn_server import serving_config


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True)
class Plan:
    """How to answer one request."""

    status: int = 204
    retry_after: str | None = None
    delay_s: float = 0.0
    hang: bool = False  # answer only when the receiver stops
    drop: bool = False  # close the connection without an answer
    body: bytes = b""


@dataclass(frozen=True)
class Received:
    webhook_id: str
    headers: dict[str, str]
    body: bytes
    at: float
    # The secrets (by position) whose signature checked out: never empty, or the test fails.
    verified_by: tuple[int, ...]


@dataclass
class Receiver:
    secrets: list[str]
    plan: Plan = field(default_factory=Plan)
    # Decides per request when set (a message failing twice, then passing).
    plan_for: Callable[[Received], Plan] | None = None
    received: list[Received] = field(default_factory=list)
    # Requests whose signature none of the secrets verified: must stay empty.
    unverified: list[str] = field(default_factory=list)
    # (webhook-id, status) of every answer sent, in the order sent.
    answered: list[tuple[str, int]] = field(default_factory=list)
    dropped: int = 0
    url: str = ""
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    def ids(self) -> list[str]:
        return [request.webhook_id for request in self.received]

    def delivered_ids(self) -> set[str]:
        """Ids answered 2xx."""
        return {webhook_id for webhook_id, status in self.answered if 200 <= status < 300}

    def _plan(self, request: Received) -> Plan:
        return self.plan_for(request) if self.plan_for is not None else self.plan

    def _verify(self, body: bytes, headers: dict[str, str]) -> tuple[int, ...]:
        passed = []
        for index, secret in enumerate(self.secrets):
            try:
                Webhook(secret).verify(body, headers, json_parse=False)
            except WebhookVerificationError:
                continue
            passed.append(index)
        return tuple(passed)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
        }
        verified = self._verify(body, headers)
        request = Received(headers.get("webhook-id", ""), headers, body, time.monotonic(), verified)
        if not verified:
            self.unverified.append(request.webhook_id)
        plan = self._plan(request)
        self.received.append(request)
        if plan.hang:
            await self._released.wait()
        if plan.delay_s:
            await asyncio.sleep(plan.delay_s)
        answer = [(b"content-type", b"text/plain")]
        if plan.retry_after is not None:
            answer.append((b"retry-after", plan.retry_after.encode()))
        await send({"type": "http.response.start", "status": plan.status, "headers": answer})
        await send({"type": "http.response.body", "body": plan.body})
        self.answered.append((request.webhook_id, plan.status))


def _protocol(receiver: Receiver) -> type[H11Protocol]:
    class Dropping(H11Protocol):
        # uvicorn's own protocol, closing the connection unanswered when told to: what a
        # crashing target or a proxy cutting it off looks like from the client.
        def data_received(self, data: bytes) -> None:
            if receiver.plan_for is None and receiver.plan.drop:
                receiver.dropped += 1
                self.transport.close()
                return
            super().data_received(data)

    return Dropping


@contextlib.asynccontextmanager
async def serving(receiver: Receiver, port: int = 0) -> AsyncIterator[Receiver]:
    """Serve `receiver` on 127.0.0.1 (any free port, or `port`) until the block ends."""
    config = uvicorn.Config(
        receiver,
        host="127.0.0.1",
        port=port,
        http=_protocol(receiver),
        lifespan="off",
        log_level="warning",
        timeout_graceful_shutdown=2,
    )
    async with serving_config(config, stop_s=10) as bound:
        receiver.url = f"http://127.0.0.1:{bound}/hooks"
        receiver._released.clear()
        try:
            yield receiver
        finally:
            receiver._released.set()  # hung requests answer now
