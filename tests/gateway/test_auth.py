"""API keys, scopes and rate limits: refused requests reach nothing."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from aio_pika.abc import AbstractConnection

from gateway.app import create_app
from gateway.settings import ApiKey, GatewaySettings
from tests.conftest import Names
from tests.support.broker import ready_count

ORDER = {"routing_key": "order.created", "payload": {"order_id": 42}}
PUBLISHER_KEY = "orders-service-secret"
READER_KEY = "reporting-secret"
SLOW_KEY = "slow-secret"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture
async def secured(
    gateway_settings: GatewaySettings, names: Names
) -> AsyncIterator[httpx.AsyncClient]:
    keys = (
        ApiKey(
            name="orders-service",
            sha256=digest(PUBLISHER_KEY),
            scopes=(f"publish:{names.prefix}.*",),
        ),
        ApiKey(name="reporting", sha256=digest(READER_KEY), scopes=("read:*",)),
        ApiKey(
            name="slow",
            sha256=digest(SLOW_KEY),
            scopes=("admin",),
            rate_per_s=0.5,
            burst=3,
        ),
    )
    app = create_app(gateway_settings.model_copy(update={"api_keys": keys}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield client


async def test_no_key_is_401_and_nothing_is_published(
    secured: httpx.AsyncClient, names: Names, amqp: AbstractConnection
) -> None:
    response = await secured.post(f"/v1/exchanges/{names.exchange}/messages", json=ORDER)
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    unknown = await secured.post(
        f"/v1/exchanges/{names.exchange}/messages", json=ORDER, headers={"X-API-Key": "guess"}
    )
    assert unknown.status_code == 401
    assert await ready_count(amqp, names.queue) == 0


async def test_key_without_the_scope_is_403_and_nothing_is_published(
    secured: httpx.AsyncClient, names: Names, amqp: AbstractConnection
) -> None:
    response = await secured.post(
        f"/v1/exchanges/{names.exchange}/messages",
        json=ORDER,
        headers={"Authorization": f"Bearer {READER_KEY}"},
    )
    assert response.status_code == 403, response.text
    assert response.json()["type"].endswith("/forbidden")
    batch = await secured.post(
        f"/v1/exchanges/{names.exchange}/batch",
        json={"messages": [ORDER]},
        headers={"X-API-Key": READER_KEY},
    )
    assert batch.status_code == 403
    # The publisher's glob covers this test's exchanges, not others.
    elsewhere = await secured.post(
        "/v1/exchanges/amq.topic/messages", json=ORDER, headers={"X-API-Key": PUBLISHER_KEY}
    )
    assert elsewhere.status_code == 403
    assert await ready_count(amqp, names.queue) == 0


async def test_key_with_the_scope_publishes_under_its_name(
    secured: httpx.AsyncClient, names: Names, amqp: AbstractConnection
) -> None:
    for headers in ({"Authorization": f"Bearer {PUBLISHER_KEY}"}, {"X-API-Key": PUBLISHER_KEY}):
        response = await secured.post(
            f"/v1/exchanges/{names.exchange}/messages", json=ORDER, headers=headers
        )
        assert response.status_code == 202, response.text
    channel = await amqp.channel()
    message = await (await channel.get_queue(names.queue)).get(timeout=5)
    assert message is not None
    await message.ack()
    await channel.close()
    assert message.app_id == "orders-service"


async def test_read_scope_covers_reading_only(secured: httpx.AsyncClient, names: Names) -> None:
    reader = {"X-API-Key": READER_KEY}
    publisher = {"X-API-Key": PUBLISHER_KEY}
    assert (
        await secured.get(f"/v1/queues/{names.queue}/messages", headers=reader)
    ).status_code == 200
    assert (
        await secured.get(f"/v1/queues/{names.queue}/messages", headers=publisher)
    ).status_code == 403
    assert (await secured.get(f"/v1/queues/{names.queue}/messages")).status_code == 401
    # Health and the API document stay open.
    assert (await secured.get("/healthz")).status_code == 200
    assert (await secured.get("/openapi.json")).status_code == 200


async def test_over_the_rate_is_429_with_retry_after(
    secured: httpx.AsyncClient, names: Names, amqp: AbstractConnection
) -> None:
    statuses = []
    for _ in range(5):
        response = await secured.post(
            f"/v1/exchanges/{names.exchange}/messages", json=ORDER, headers={"X-API-Key": SLOW_KEY}
        )
        statuses.append(response.status_code)
    assert statuses[:3] == [202, 202, 202]
    assert statuses[3:] == [429, 429]
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["type"].endswith("/rate-limited")
    assert await ready_count(amqp, names.queue) == 3


async def test_open_gateway_warns_and_no_key_is_logged(
    gateway_settings: GatewaySettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    app = create_app(gateway_settings)
    async with app.router.lifespan_context(app):
        pass
    assert any(
        record.levelno == logging.WARNING and "WITHOUT authentication" in record.message
        for record in caplog.records
    )
    secured = gateway_settings.model_copy(
        update={"api_keys": (ApiKey(name="svc", sha256=digest(PUBLISHER_KEY)),)}
    )
    caplog.clear()
    app = create_app(secured)
    async with app.router.lifespan_context(app):
        pass
    assert not any("WITHOUT" in record.message for record in caplog.records)
    assert PUBLISHER_KEY not in caplog.text


def test_plaintext_keys_are_refused_in_settings() -> None:
    with pytest.raises(ValueError, match="SHA-256"):
        ApiKey(name="svc", sha256=PUBLISHER_KEY)


def test_api_keys_come_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "API_KEYS", f'[{{"name": "svc", "sha256": "{digest("k")}", "scopes": ["admin"]}}]'
    )
    settings = GatewaySettings(_env_file=None)
    assert settings.api_keys[0].scopes == ("admin",)


async def test_dead_letters_need_the_read_scope_and_redrive_the_admin_scope(
    secured: httpx.AsyncClient, names: Names
) -> None:
    reader = {"X-API-Key": READER_KEY}
    publisher = {"X-API-Key": PUBLISHER_KEY}
    admin = {"X-API-Key": SLOW_KEY}
    listing = f"/v1/queues/{names.queue}/dead-letters"
    redrive = f"{listing}/redrive"

    assert (await secured.get(listing, headers=reader)).status_code == 200
    assert (await secured.get(listing, headers=publisher)).status_code == 403
    assert (await secured.post(redrive, json={}, headers=reader)).status_code == 403
    # The key's name, not a header the caller chose, records who redrove.
    done = await secured.post(
        redrive, json={}, headers={**admin, "X-Hareway-Actor": "someone-else"}
    )
    assert done.status_code == 200, done.text
    assert done.json()["redriven_by"] == "slow"
