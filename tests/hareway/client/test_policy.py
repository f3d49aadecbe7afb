"""The client's retries, against httpx's MockTransport: which answers are sent again, with
which key, after how long. (What the gateway does with them: test_against_the_gateway.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import httpx
import pytest

from hareway.client import (
    AsyncClient,
    Client,
    Conflict,
    Message,
    NotFound,
    RetryPolicy,
    TransportError,
    Unavailable,
    Unroutable,
)

pytestmark = pytest.mark.timeout(20)

FAST = RetryPolicy(attempts=4, backoff_s=0.001, max_wait_s=0.05)


def problem(status: int, kind: str, retryable: bool, **headers: str) -> httpx.Response:
    body = {"type": f"/problems/{kind}", "title": kind, "status": status, "retryable": retryable}
    return httpx.Response(
        status, json=body, headers={"content-type": "application/problem+json", **headers}
    )


def confirmed(request: httpx.Request) -> httpx.Response:
    sent = json.loads(request.content)
    return httpx.Response(
        202,
        json={
            "message_id": request.headers["idempotency-key"],
            "exchange": "orders",
            "routing_key": sent["routing_key"],
            "status": "confirmed",
        },
        headers={"location": "/v1/messages/x"},
    )


def answers(
    *script: Callable[[httpx.Request], httpx.Response],
) -> tuple[list[httpx.Request], httpx.MockTransport]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return script[min(len(seen), len(script)) - 1](request)

    return seen, httpx.MockTransport(handle)


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def cut_off(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("no answer", request=request)


async def test_a_publish_is_retried_on_503_with_the_same_key_after_retry_after() -> None:
    seen, transport = answers(
        lambda _: problem(503, "broker-unavailable", True, **{"retry-after": "0.01"}),
        cut_off,
        confirmed,
    )
    async with AsyncClient("http://gw", retry=FAST, transport=transport) as client:
        published = await client.publish("orders", "order.created", {"n": 1})
    assert len(seen) == 3
    keys = {request.headers["idempotency-key"] for request in seen}
    assert len(keys) == 1
    assert published.message_id == keys.pop()
    assert published.location == "/v1/messages/x"


async def test_the_attempts_run_out_into_the_typed_error() -> None:
    seen, transport = answers(lambda _: problem(503, "store-unavailable", True))
    async with AsyncClient("http://gw", retry=FAST, transport=transport) as client:
        with pytest.raises(Unavailable) as caught:
            await client.publish("orders", "order.created")
    assert len(seen) == FAST.attempts
    assert caught.value.type == "/problems/store-unavailable"
    assert caught.value.retryable


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (problem(404, "exchange-not-found", False), NotFound),
        (problem(422, "unroutable", False), Unroutable),
        (problem(409, "idempotency-key-reused", False), Conflict),
    ],
)
async def test_answers_a_retry_cannot_mend_are_raised_at_once(
    answer: httpx.Response, error: type[Exception]
) -> None:
    seen, transport = answers(lambda _: answer)
    async with AsyncClient("http://gw", retry=FAST, transport=transport) as client:
        with pytest.raises(error):
            await client.publish("orders", "order.created")
    assert len(seen) == 1


def test_a_redrive_is_not_sent_twice_when_its_answer_was_lost() -> None:
    seen, transport = answers(cut_off, lambda _: httpx.Response(200, json={"results": []}))
    with (
        Client("http://gw", retry=FAST, transport=transport) as client,
        pytest.raises(TransportError),
    ):
        client.redrive("orders.persist")
    assert len(seen) == 1


def test_a_redrive_is_sent_again_when_the_connection_was_refused() -> None:
    seen, transport = answers(refused, lambda _: httpx.Response(200, json={"results": []}))
    with Client("http://gw", retry=FAST, transport=transport) as client:
        assert client.redrive("orders.persist") == {"results": []}
    assert len(seen) == 2


def test_a_batch_sends_again_only_what_a_retry_can_mend_under_the_same_ids() -> None:
    def first(request: httpx.Request) -> httpx.Response:
        ids = [m["message_id"] for m in json.loads(request.content)["messages"]]
        nacked = {"type": "/problems/nacked", "status": 503, "retryable": True}
        invalid = {"type": "/problems/validation", "status": 422, "retryable": False}
        return httpx.Response(
            207,
            json={
                "results": [
                    {"index": 0, "message_id": ids[0], "status": "confirmed"},
                    {"index": 1, "message_id": ids[1], "status": "nacked", "error": nacked},
                    {"index": 2, "message_id": ids[2], "status": "invalid", "error": invalid},
                ]
            },
        )

    def second(request: httpx.Request) -> httpx.Response:
        ids = [m["message_id"] for m in json.loads(request.content)["messages"]]
        return httpx.Response(
            202, json={"results": [{"index": 0, "message_id": ids[0], "status": "confirmed"}]}
        )

    seen, transport = answers(first, second)
    messages = [Message("order.created", {"n": n}) for n in range(3)]
    with Client("http://gw", retry=FAST, transport=transport) as client:
        outcome = client.publish_batch("orders", messages)
    sent = [json.loads(request.content)["messages"] for request in seen]
    assert [m["message_id"] for m in sent[1]] == [sent[0][1]["message_id"]]
    assert seen[0].headers["idempotency-key"] != seen[1].headers["idempotency-key"]
    assert [result.status for result in outcome.results] == ["confirmed", "confirmed", "invalid"]
    assert [result.index for result in outcome.results] == [0, 1, 2]
    assert [result.index for result in outcome.failed] == [2]


def test_the_client_imports_no_server_package() -> None:
    code = (
        "import sys, hareway.client; "
        "print(sorted(m for m in ('fastapi', 'aio_pika', 'sqlalchemy', 'uvicorn', 'gateway',"
        " 'consumers', 'aiormq', 'asyncpg') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == "[]"
