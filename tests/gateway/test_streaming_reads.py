"""Long polls, Server-Sent Events, unknown queues and `retrying`, against real processes: a
`python -m gateway` and a `python -m consumers` on the real broker, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import signal
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aio_pika.abc import AbstractConnection

from tests.conftest import Names
from tests.consumers.support import cleanup, retry_topology, write_topology
from tests.support.processes import Process, eventually, start, start_consumer, start_gateway

pytestmark = pytest.mark.slow


def env_for(rabbitmq_url: str, database_url: str, topology: Path, **more: str) -> dict[str, str]:
    return {
        "RABBITMQ_URL": rabbitmq_url,
        "DATABASE_URL": database_url,
        "TOPOLOGY_FILE": str(topology),
        "DRAIN_DELAY_S": "0.2",
        **more,
    }


async def post(client: httpx.AsyncClient, names: Names, payload: Any) -> str:
    posted = await client.post(
        f"/v1/exchanges/{names.exchange}/messages",
        json={"routing_key": "order.created", "payload": payload},
    )
    assert posted.status_code == 202, posted.text
    message_id: str = posted.json()["message_id"]
    return message_id


@dataclass
class Event:
    id: str | None = None
    event: str | None = None
    data: list[str] = field(default_factory=list)


class Stream:
    """An SSE response read line by line: the events, and the comment lines (heartbeats)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.comments = 0
        self._lines = response.aiter_lines()

    async def next_event(self) -> Event | None:
        """The next event, or None once the stream ended."""
        event = Event()
        async for line in self._lines:
            if not line:
                if event.data or event.id is not None:
                    return event
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                event.data.append(value)
            elif name == "id":
                event.id = value
            elif name == "event":
                event.event = value
        return None


async def read_events(stream: Stream, count: int, timeout_s: float = 20) -> list[Event]:
    events: list[Event] = []
    async with asyncio.timeout(timeout_s):
        while len(events) < count:
            event = await stream.next_event()
            assert event is not None, f"the stream ended after {len(events)} events"
            events.append(event)
    return events


@pytest.mark.timeout(120)
async def test_long_poll_answers_within_100ms_of_the_commit(
    rabbitmq_url: str, database_url: str, topology_file: Path, names: Names, tmp_path: Path
) -> None:
    env = env_for(rabbitmq_url, database_url, topology_file)
    consumer = await start_consumer([names.queue], env, tmp_path / "consumer.log")
    gateway, base_url = await start_gateway(env, tmp_path / "gateway.log")
    latencies: list[float] = []
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            path = f"/v1/queues/{names.queue}/messages"
            cursor: str | None = None
            for n in range(9):
                params: dict[str, Any] = {"wait": 20}
                if cursor is not None:
                    params["after"] = cursor
                polling = asyncio.create_task(client.get(path, params=params))
                # The poll is waiting (nothing was posted after its cursor yet)...
                await asyncio.sleep(0.3)
                assert not polling.done(), polling.result().text
                message_id = await post(client, names, {"n": n})
                answer = await polling
                answered_at = time.time()
                assert answer.status_code == 200, answer.text
                [message] = answer.json()["messages"]
                assert message["message_id"] == message_id
                cursor = message["cursor"]
                # persisted_at is stamped as the consumer writes the rows, before it
                # commits: the latency from the commit is at most this.
                stored_at = datetime.fromisoformat(message["persisted_at"]).timestamp()
                latencies.append(answered_at - stored_at)
    finally:
        await gateway.stop()
        await consumer.stop()
    # The median is the claim; single tries on a shared 2-core machine may be late.
    assert statistics.median(latencies) < 0.1, latencies
    assert max(latencies) < 1.0, latencies


@pytest.mark.timeout(90)
async def test_long_poll_waits_its_seconds_then_answers_empty_and_bounds_wait(
    rabbitmq_url: str, database_url: str, topology_file: Path, names: Names, tmp_path: Path
) -> None:
    env = env_for(rabbitmq_url, database_url, topology_file)
    gateway, base_url = await start_gateway(env, tmp_path / "gateway.log")
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            path = f"/v1/queues/{names.queue}/messages"
            began = time.monotonic()
            empty = await client.get(path, params={"wait": 1.5})
            took = time.monotonic() - began
            too_long = await client.get(path, params={"wait": 31})
            negative = await client.get(path, params={"wait": -1})
            typo = await client.get(f"/v1/queues/{names.queue}x/messages")
            typo_poll = await client.get(f"/v1/queues/{names.queue}x/messages?wait=5")
            typo_dead = await client.get(f"/v1/queues/{names.queue}x/dead-letters")
            typo_stream = await client.get(f"/v1/queues/{names.queue}x/stream")
            typo_redrive = await client.post(f"/v1/queues/{names.queue}x/dead-letters/redrive")
    finally:
        await gateway.stop()
    assert empty.status_code == 200, empty.text
    assert empty.json() == {"messages": [], "next_cursor": None}
    assert 1.5 <= took < 3.0, took
    for refused in (too_long, negative):
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
    for missing in (typo, typo_poll, typo_dead, typo_stream, typo_redrive):
        assert missing.status_code == 404, missing.text
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.json()["type"].endswith("/problems/queue-not-found")


@pytest.mark.timeout(90)
async def test_a_queue_only_on_the_broker_is_known(
    rabbitmq_url: str,
    sqlite_url: str,
    topology_file: Path,
    names: Names,
    amqp: AbstractConnection,
    tmp_path: Path,
) -> None:
    channel = await amqp.channel()
    other = f"{names.prefix}.declared.elsewhere"
    await channel.declare_queue(other, durable=True)
    env = env_for(rabbitmq_url, sqlite_url, topology_file)
    gateway, base_url = await start_gateway(env, tmp_path / "gateway.log")
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            known = await client.get(f"/v1/queues/{other}/messages")
            # A lookup of a missing queue leaves the publishing untouched.
            missing = await client.get(f"/v1/queues/{other}.nope/messages")
            await post(client, names, {"n": 1})
            ready = await client.get("/readyz")
    finally:
        await gateway.stop()
        await channel.queue_delete(other)
        await channel.close()
    assert known.status_code == 200, known.text
    assert known.json()["messages"] == []
    assert missing.status_code == 404, missing.text
    assert ready.status_code == 200, ready.text


@pytest.mark.timeout(150)
async def test_stream_resumed_with_last_event_id_misses_and_repeats_nothing_across_restart(
    rabbitmq_url: str, database_url: str, topology_file: Path, names: Names, tmp_path: Path
) -> None:
    env = env_for(
        rabbitmq_url, database_url, topology_file, STREAM_HEARTBEAT_S="0.5", STREAM_PAGE_SIZE="3"
    )
    consumer = await start_consumer([names.queue], env, tmp_path / "consumer.log")
    first, first_url = await start_gateway(env, tmp_path / "first.log")
    second: Process | None = None
    try:
        posted = []
        async with httpx.AsyncClient(base_url=first_url, timeout=30) as client:
            posted += [await post(client, names, {"n": n}) for n in range(7)]
            async with client.stream("GET", f"/v1/queues/{names.queue}/stream") as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                stream = Stream(response)
                # Seven stored before the stream began (pages of three), then live ones.
                seen = await read_events(stream, 7)
                posted += [await post(client, names, {"n": n}) for n in range(7, 10)]
                seen += await read_events(stream, 3)
                # Idle now: heartbeats come, no event.
                before = stream.comments
                idle = asyncio.create_task(stream.next_event())
                await asyncio.sleep(1.5)
                assert not idle.done()
                assert stream.comments > before
                # SIGTERM ends the stream: the gateway drains and exits 0 without hanging.
                first.signal(signal.SIGTERM)
                began = time.monotonic()
                assert await asyncio.wait_for(idle, 15) is None
                assert await first.wait(15) == 0, first.output()
                assert time.monotonic() - began < 10
        second, second_url = await start_gateway(env, tmp_path / "second.log")
        async with httpx.AsyncClient(base_url=second_url, timeout=30) as client:
            posted += [await post(client, names, {"n": n}) for n in range(10, 15)]
            headers = {"Last-Event-ID": seen[-1].id or ""}
            # `after` is the stream's first URL, kept by a browser's EventSource: the
            # Last-Event-ID wins over it.
            async with client.stream(
                "GET",
                f"/v1/queues/{names.queue}/stream",
                params={"after": seen[2].id},
                headers=headers,
            ) as response:
                assert response.status_code == 200
                seen += await read_events(Stream(response), 5)
            resumed_from_nothing = await client.get(
                f"/v1/queues/{names.queue}/stream", headers={"Last-Event-ID": "x"}
            )
    finally:
        if second is not None:
            await second.stop()
        await first.stop()
        await consumer.stop()
    messages = [orjson.loads("\n".join(event.data)) for event in seen]
    assert [message["message_id"] for message in messages] == posted
    assert [event.event for event in seen] == ["message"] * 15
    assert [event.id for event in seen] == [message["cursor"] for message in messages]
    cursors = [int(message["cursor"]) for message in messages]
    assert cursors == sorted(set(cursors))
    assert [message["body"] for message in messages] == [{"n": n} for n in range(15)]
    assert resumed_from_nothing.status_code == 422, resumed_from_nothing.text


@pytest.fixture
async def ladder(names: Names, amqp: AbstractConnection, tmp_path: Path) -> AsyncIterator[Path]:
    document = retry_topology(names, delays=["2s"], max_attempts=2)
    yield write_topology(tmp_path / "topology.yaml", document)
    await cleanup(amqp, document)


@pytest.mark.timeout(120)
async def test_a_message_on_the_retry_ladder_is_retrying_with_its_attempts(
    rabbitmq_url: str, database_url: str, ladder: Path, names: Names, tmp_path: Path
) -> None:
    env = env_for(rabbitmq_url, database_url, ladder, HAREWAY_TEST_QUEUE=names.queue)
    # tests/consumers/flaky_app.py: n % 3 == 1 fails its first attempt, n % 3 == 0 always.
    consumer = await start(
        "consumers", ["--app", "tests.consumers.flaky_app:app"], env, tmp_path / "consumer.log"
    )
    await consumer.wait_for_output("consumer ready")
    gateway, base_url = await start_gateway(env, tmp_path / "gateway.log")
    seen: dict[str, list[dict[str, Any]]] = {"late": [], "never": []}
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            ids = {
                "late": await post(client, names, {"n": 1}),
                "never": await post(client, names, {"n": 3}),
            }

            async def settled() -> bool:
                for name, message_id in ids.items():
                    answer = await client.get(f"/v1/messages/{message_id}")
                    if answer.status_code == 200:
                        [delivery] = answer.json()["deliveries"]
                        if not seen[name] or seen[name][-1]["status"] != delivery["status"]:
                            seen[name].append(delivery)
                    else:
                        assert answer.status_code == 404, answer.text
                return all(seen[name] and seen[name][-1]["status"] != "retrying" for name in seen)

            await eventually(settled, 60, "both messages to leave the ladder", poll_s=0.05)
    finally:
        await gateway.stop()
        await consumer.stop()
    retrying, persisted = seen["late"]
    assert retrying["status"] == "retrying"
    assert retrying["attempts"] == 1
    assert "second attempt" in retrying["last_error"]
    assert retrying["next_attempt_at"] > retrying["persisted_at"]
    assert retrying["queue"] == names.queue
    assert persisted["status"] == "persisted"
    assert persisted["attempts"] == 2
    retrying, dead = seen["never"]
    assert (retrying["status"], retrying["attempts"]) == ("retrying", 1)
    assert (dead["status"], dead["attempts"]) == ("dead_lettered", 2)
