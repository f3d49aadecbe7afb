"""One log format for every process: JSON lines that name their component, an access log
with the request id, and the request id carried into the stored message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Names
from tests.support.processes import Process, eventually, start_consumer, start_gateway

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def json_lines(process: Process) -> list[dict[str, Any]]:
    """Every line the process wrote, each of which must be one JSON object."""
    lines = [line for line in process.output().splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(
                f"{process.name} wrote a line that is not JSON: {line!r}"
            ) from None
    return parsed


@pytest.mark.timeout(120)
async def test_json_logs_access_log_and_request_id(
    rabbitmq_url: str, sqlite_url: str, topology_file: Path, names: Names, tmp_path: Path
) -> None:
    env = {
        "RABBITMQ_URL": rabbitmq_url,
        "DATABASE_URL": sqlite_url,
        "TOPOLOGY_FILE": str(topology_file),
        "LOG_FORMAT": "json",
        "ACCESS_LOG": "true",
        "SUMMARY_INTERVAL_S": "0.5",
    }
    consumer = await start_consumer([names.queue], env, tmp_path / "consumer.log")
    gateway, base_url = await start_gateway(env, tmp_path / "gateway.log")
    try:
        async with httpx.AsyncClient(base_url=base_url) as client:
            posted = await client.post(
                f"/v1/exchanges/{names.exchange}/messages",
                json={"routing_key": "order.created", "payload": {"order_id": 1}},
                headers={"X-Request-ID": "req-from-the-caller-1"},
            )
            assert posted.status_code == 202, posted.text
            assert posted.headers["x-request-id"] == "req-from-the-caller-1"
            made = await client.get("/healthz")
            assert len(made.headers["x-request-id"]) == 32  # made when none was sent

            async def stored() -> bool:
                return (await client.get(posted.headers["location"])).status_code == 200

            await eventually(stored, 30, "the message to be stored")
            [message] = (await client.get(f"/v1/queues/{names.queue}/messages")).json()["messages"]

            async def summarised() -> bool:
                return any(
                    line.get("event") == "consumer summary" and line.get("stored_per_s", 0) == 0
                    for line in json_lines(consumer)
                )

            await eventually(summarised, 10, "a consumer summary line")
    finally:
        await gateway.stop()
        await consumer.stop()

    assert message["headers"]["x-request-id"] == "req-from-the-caller-1"
    gateway_lines, consumer_lines = json_lines(gateway), json_lines(consumer)
    assert {line["component"] for line in gateway_lines} == {"gateway"}
    assert {line["component"] for line in consumer_lines} == {"consumer"}
    for line in gateway_lines + consumer_lines:
        assert {"timestamp", "level", "event", "logger"} <= line.keys(), line
    # uvicorn's own lines, in the same format
    assert any(line["logger"] == "uvicorn.error" for line in gateway_lines)
    [access] = [
        line for line in gateway_lines if line["event"] == "request" and line["method"] == "POST"
    ]
    assert access["path"] == f"/v1/exchanges/{names.exchange}/messages"
    assert access["status"] == 202
    assert access["request_id"] == "req-from-the-caller-1"
    assert access["exchange"] == names.exchange
    assert access["message_id"] == message["message_id"]
    assert access["duration_ms"] > 0
    # dependency noise stays out: alembic's "setup plugin" lines, aiormq's chatter
    for line in gateway_lines + consumer_lines:
        assert not line["logger"].startswith(("alembic", "aiormq")), line
    summary = next(line for line in consumer_lines if line["event"] == "consumer summary")
    assert summary["queue"] == names.queue
    assert {"stored_per_s", "retried", "dead_lettered", "lag"} <= summary.keys()


@pytest.mark.timeout(60)
async def test_console_logs_name_the_component_too(
    rabbitmq_url: str, sqlite_url: str, topology_file: Path, tmp_path: Path
) -> None:
    env = {
        "RABBITMQ_URL": rabbitmq_url,
        "DATABASE_URL": sqlite_url,
        "TOPOLOGY_FILE": str(topology_file),
    }
    gateway, _ = await start_gateway(env, tmp_path / "gateway.log")
    await gateway.stop()
    lines = [line for line in gateway.output().splitlines() if line.strip()]
    assert lines
    for line in lines:
        assert "component=gateway" in line, line
        assert not line.startswith("INFO:"), line  # uvicorn's own format is gone
