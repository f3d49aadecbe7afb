"""The read side's new inputs, sent by a caller who misbehaves while the good one publishes:
long polls and streams held open by the hundred, waits and cursors out of range, queue names
no broker takes, event ids that are no cursor. Each is answered (a page, a stream, or a 4xx
problem), and the good caller's stream is all confirmed and stored once, on both stores."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.hostile.conftest import Stack, problem

pytestmark = [pytest.mark.hostile, pytest.mark.slow, pytest.mark.timeout(120)]

HUGE = "9" * 40  # past every integer column


@pytest.mark.parametrize(
    ("params", "headers", "status", "kind"),
    [
        ({"wait": "31"}, {}, 422, "/validation"),
        ({"wait": "-1"}, {}, 422, "/validation"),
        ({"wait": "1e400"}, {}, 422, "/validation"),
        ({"wait": "nan"}, {}, 422, "/validation"),
        ({"after": "-1", "wait": "1"}, {}, 422, "/validation"),
        ({"after": HUGE, "wait": "1"}, {}, 422, "/validation"),
    ],
)
async def test_a_long_poll_out_of_range_is_a_problem(
    stack: Stack, params: dict[str, str], headers: dict[str, str], status: int, kind: str
) -> None:
    bad = stack.client("bad")
    async with stack.unhurt():
        response = await bad.get(
            f"/v1/queues/{stack.names.orders_queue}/messages", params=params, headers=headers
        )
        problem(response, status, kind)


@pytest.mark.parametrize("last_event_id", ["x", "-1", HUGE, "1" * 5000])
async def test_a_stream_resumed_from_no_cursor_is_a_problem(
    stack: Stack, last_event_id: str
) -> None:
    bad = stack.client("bad")
    async with stack.unhurt():
        response = await bad.get(
            f"/v1/queues/{stack.names.orders_queue}/stream",
            headers={"Last-Event-ID": last_event_id},
        )
        problem(response, 422, "/validation")


@pytest.mark.parametrize(
    "queue", ["nope\x00nul", "q" * 300, "amq.rabbitmq.trace", "a b/c#d", "é" * 200]
)
async def test_reads_of_queues_no_broker_has_are_404(stack: Stack, queue: str) -> None:
    bad = stack.client("bad")
    async with stack.unhurt():
        for path in ("messages", "dead-letters", "stream"):
            response = await bad.get(
                f"/v1/queues/{quote(queue, safe='')}/{path}",
                params={"wait": "1"} if path == "messages" else {},
            )
            problem(response, 404, "/queue-not-found")


async def test_hundreds_of_waiting_reads_take_nothing_from_the_good_caller(
    stack: Stack,
) -> None:
    limits = httpx.Limits(max_connections=300, max_keepalive_connections=0)
    headers = {"Authorization": f"Bearer {stack.keys['bad']}"}
    queue = stack.names.orders_queue
    async with (
        httpx.AsyncClient(
            base_url=stack.gateway_url, headers=headers, limits=limits, timeout=30
        ) as bad,
        stack.unhurt(overlap_s=4),
    ):
        # Long polls from far ahead of the queue: each wakes on every good commit and
        # finds nothing, until its deadline.
        ahead = str(2**62)

        async def poll() -> int:
            answer = await bad.get(
                f"/v1/queues/{queue}/messages", params={"after": ahead, "wait": "3"}
            )
            assert answer.json()["messages"] == []
            return answer.status_code

        async def stream() -> int:
            async with bad.stream("GET", f"/v1/queues/{queue}/stream") as answer:
                async for line in answer.aiter_lines():
                    if line.startswith("id:"):
                        break  # and leave mid-stream
                return answer.status_code

        async def listing() -> int:
            return (await bad.get("/v1/queues")).status_code

        work: list[Any] = [poll() for _ in range(150)]
        work += [stream() for _ in range(50)]
        work += [listing() for _ in range(30)]
        statuses = await asyncio.gather(*work)
    assert set(statuses) == {200}
