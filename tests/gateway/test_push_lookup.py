"""`GET /v1/messages/{id}` shows where a pushed message is with its subscription."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import httpx
import pytest

from gateway.settings import GatewaySettings
from hareway.store import DeliveryRecord, PushRecord, open_store


@pytest.mark.timeout(30)
async def test_a_retrying_push_shows_its_attempt_next_try_and_last_status(
    client: httpx.AsyncClient, gateway_settings: GatewaySettings
) -> None:
    store = await open_store(gateway_settings.database_url)
    stored = DeliveryRecord(
        queue="orders.push",
        message_id="p-1",
        exchange="orders",
        routing_key="order.created",
        headers={},
        content_type="application/json",
        body=b"{}",
        attempts=2,
    )
    await store.save([stored, dataclasses.replace(stored, queue="orders.audit")])
    next_at = datetime(2030, 1, 1, tzinfo=UTC)
    await store.record_pushes(
        [PushRecord("orders.push", "p-1", "retrying", 2, 503, "push: HTTP 503", next_at)]
    )
    await store.close()

    response = await client.get("/v1/messages/p-1")

    assert response.status_code == 200, response.text
    pushed, audit = response.json()["deliveries"]
    assert pushed["push"]["status"] == "retrying"
    assert pushed["push"]["attempts"] == 2
    assert pushed["push"]["last_status"] == 503
    assert pushed["push"]["next_attempt_at"] == "2030-01-01T00:00:00+00:00"
    assert "push" not in audit
