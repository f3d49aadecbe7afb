"""`python -m gateway` and `python -m consumers` as real processes: POST, then read it back."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from tests.conftest import Names
from tests.support.processes import eventually, start_consumer, start_gateway

pytestmark = pytest.mark.slow


@pytest.mark.timeout(90)
async def test_posted_message_is_readable_once_stored(
    rabbitmq_url: str, sqlite_url: str, topology_file: Path, names: Names, tmp_path: Path
) -> None:
    env = {
        "RABBITMQ_URL": rabbitmq_url,
        "DATABASE_URL": sqlite_url,
        "TOPOLOGY_FILE": str(topology_file),
    }
    consumer = await start_consumer([names.queue], env, tmp_path / "consumer.log")
    gateway, base_url = await start_gateway(env, tmp_path / "gateway.log")
    try:
        async with httpx.AsyncClient(base_url=base_url) as client:
            posted = await client.post(
                f"/v1/exchanges/{names.exchange}/messages",
                json={"routing_key": "order.created", "payload": {"order_id": 42}},
            )
            assert posted.status_code == 202, posted.text
            message_id = posted.json()["message_id"]

            async def readable() -> bool:
                return (await client.get(posted.headers["location"])).status_code == 200

            await eventually(readable, 30, "the message to be stored")
            listed = (await client.get(f"/v1/queues/{names.queue}/messages")).json()
            where = (await client.get(f"/v1/messages/{message_id}")).json()
    finally:
        gateway_exit = await gateway.stop()
        consumer_exit = await consumer.stop()
    # uvicorn re-raises SIGTERM once it has shut down cleanly.
    assert gateway_exit in (0, -signal.SIGTERM), gateway.output()
    assert "Application shutdown complete" in gateway.output()
    assert consumer_exit == 0, consumer.output()

    [message] = listed["messages"]
    assert message["message_id"] == message_id
    assert message["body"] == {"order_id": 42}
    assert where["deliveries"][0]["queue"] == names.queue
    assert where["deliveries"][0]["status"] == "persisted"
