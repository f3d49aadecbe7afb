"""CORS on `/v1` for browser callers (`CORS_ALLOW_ORIGINS`), in-process on the real broker:
preflights, exposed headers, `Timing-Allow-Origin`, and nothing at all when it is off or the
origin is not allowed. tests/gateway/test_browser_cors.py does the same from Chromium."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import httpx
import pytest
from aio_pika.abc import AbstractConnection

from gateway.app import create_app
from gateway.fastpath import Gateway
from gateway.settings import ApiKey, GatewaySettings
from tests.conftest import Names

APP = "https://app.example.com"
ELSEWHERE = "https://elsewhere.example"
PREFLIGHT_HEADERS = (
    "content-type, authorization, idempotency-key, x-request-id, traceparent, last-event-id, "
    "ce-specversion, ce-id, ce-source, ce-type, ce-myextension"
)
EXPOSED = {"location", "server-timing", "idempotent-replayed", "retry-after", "x-request-id"}

pytestmark = pytest.mark.timeout(60)


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {
        name: value
        for name, value in response.headers.items()
        if name.startswith("access-control-") or name == "timing-allow-origin"
    }


def names_in(header: str) -> set[str]:
    return {name.strip().lower() for name in header.split(",")}


async def serving(settings: GatewaySettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client


@pytest.fixture
async def cors_client(gateway_settings: GatewaySettings) -> AsyncIterator[httpx.AsyncClient]:
    # What the environment would give: the validator splits and normalises the list.
    settings = GatewaySettings.model_validate(
        {**gateway_settings.model_dump(), "cors_allow_origins": f"{APP}:443, http://localhost:3000"}
    )
    assert settings.cors_allow_origins == (APP, "http://localhost:3000")
    async for client in serving(settings):
        yield client


def preflight(
    origin: str, method: str = "POST", headers: str = PREFLIGHT_HEADERS
) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


PUBLISH = {"routing_key": "order.created", "payload": {"order_id": 42}}


async def test_a_preflight_from_an_allowed_origin_is_answered(
    cors_client: httpx.AsyncClient, names: Names
) -> None:
    response = await cors_client.options(
        f"/v1/exchanges/{names.exchange}/messages", headers=preflight(APP)
    )
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == APP
    assert {"GET", "POST", "OPTIONS"} <= set(
        response.headers["access-control-allow-methods"].split(", ")
    )
    allowed = {
        name.strip().lower() for name in response.headers["access-control-allow-headers"].split(",")
    }
    assert names_in(PREFLIGHT_HEADERS) <= allowed
    assert int(response.headers["access-control-max-age"]) > 0
    assert "Origin" in response.headers["vary"]
    assert "x-request-id" in response.headers  # observed like every request


async def test_a_cross_origin_publish_exposes_its_headers_and_timing(
    cors_client: httpx.AsyncClient, names: Names, amqp: AbstractConnection
) -> None:
    response = await cors_client.post(
        f"/v1/exchanges/{names.exchange}/messages",
        json=PUBLISH,
        headers={"Origin": APP, "Idempotency-Key": "cors-1"},
    )
    assert response.status_code == 202, response.text
    assert response.headers["access-control-allow-origin"] == APP
    assert response.headers["timing-allow-origin"] == APP
    exposed = {
        name.strip().lower()
        for name in response.headers["access-control-expose-headers"].split(",")
    }
    assert exposed == EXPOSED
    assert "Origin" in response.headers["vary"]
    # The headers it exposes are there, and the fast path really published.
    assert response.headers["location"].startswith("/v1/messages/")
    assert "confirm;" in response.headers["server-timing"]
    channel = await amqp.channel()
    queue = await channel.declare_queue(names.queue, passive=True)
    message = await queue.get(timeout=5)
    assert message.message_id == response.json()["message_id"]
    await message.ack()
    await channel.close()

    again = await cors_client.post(
        f"/v1/exchanges/{names.exchange}/messages",
        json=PUBLISH,
        headers={"Origin": APP, "Idempotency-Key": "cors-1"},
    )
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["timing-allow-origin"] == APP


async def test_errors_and_other_v1_routes_carry_cors_too(
    cors_client: httpx.AsyncClient, names: Names
) -> None:
    # A problem answer a page must be able to read, through FastAPI's routing this time.
    missing = await cors_client.get("/v1/messages/nope", headers={"Origin": APP})
    assert missing.status_code == 404
    assert missing.headers["access-control-allow-origin"] == APP
    assert missing.headers["timing-allow-origin"] == APP
    invalid = await cors_client.post(
        f"/v1/exchanges/{names.exchange}/batch", content=b"{", headers={"Origin": APP}
    )
    assert invalid.status_code == 400
    assert invalid.headers["access-control-allow-origin"] == APP
    # CORS is on /v1 only.
    health = await cors_client.get("/healthz", headers={"Origin": APP})
    assert cors_headers(health) == {}


async def test_an_origin_not_allowed_gets_no_cors_headers(
    cors_client: httpx.AsyncClient, names: Names
) -> None:
    refused = await cors_client.options(
        f"/v1/exchanges/{names.exchange}/messages", headers=preflight(ELSEWHERE)
    )
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"].endswith("/cors-refused")
    assert ELSEWHERE in refused.json()["detail"]
    assert cors_headers(refused) == {}
    # Browsers would block it; a client that is no browser still gets its answer, unmarked.
    answered = await cors_client.post(
        f"/v1/exchanges/{names.exchange}/messages",
        json=PUBLISH,
        headers={"Origin": ELSEWHERE},
    )
    assert answered.status_code == 202
    assert cors_headers(answered) == {}
    assert "Origin" in answered.headers["vary"]


@pytest.mark.parametrize(
    ("method", "headers", "named"),
    [("PUT", "content-type", "method 'PUT'"), ("POST", "content-type, x-secret", "x-secret")],
)
async def test_a_preflight_asking_for_too_much_is_refused(
    cors_client: httpx.AsyncClient, names: Names, method: str, headers: str, named: str
) -> None:
    response = await cors_client.options(
        f"/v1/exchanges/{names.exchange}/messages", headers=preflight(APP, method, headers)
    )
    assert response.status_code == 403
    assert named in response.json()["detail"]
    assert cors_headers(response) == {}


async def test_without_the_setting_nothing_changes(client: httpx.AsyncClient, names: Names) -> None:
    # `client` is the gateway with default settings: CORS_ALLOW_ORIGINS empty.
    response = await client.options(
        f"/v1/exchanges/{names.exchange}/messages", headers=preflight(APP)
    )
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    assert cors_headers(response) == {}
    published = await client.post(
        f"/v1/exchanges/{names.exchange}/messages", json=PUBLISH, headers={"Origin": APP}
    )
    assert published.status_code == 202
    assert cors_headers(published) == {}
    assert "vary" not in published.headers


def test_without_the_setting_no_cors_is_built() -> None:
    # Nothing in front of any path, the publish fast path included.
    off = create_app(GatewaySettings(_env_file=None))
    on = create_app(GatewaySettings(cors_allow_origins=(APP,), _env_file=None))
    assert isinstance(off, Gateway)
    assert isinstance(on, Gateway)
    assert off.cors is None
    assert on.cors is not None
    assert off.user_middleware == on.user_middleware


async def test_any_origin_with_a_star(gateway_settings: GatewaySettings, names: Names) -> None:
    settings = gateway_settings.model_copy(update={"cors_allow_origins": ("*",)})
    async for client in serving(settings):
        response = await client.post(
            f"/v1/exchanges/{names.exchange}/messages",
            json=PUBLISH,
            headers={"Origin": ELSEWHERE},
        )
        assert response.status_code == 202
        assert response.headers["access-control-allow-origin"] == "*"
        assert response.headers["timing-allow-origin"] == "*"
        answered = await client.options(
            f"/v1/exchanges/{names.exchange}/messages", headers=preflight(ELSEWHERE)
        )
        assert answered.status_code == 200
        assert answered.headers["access-control-allow-origin"] == "*"


async def test_preflights_need_no_api_key_and_refusals_are_readable(
    gateway_settings: GatewaySettings, names: Names
) -> None:
    # A browser sends no Authorization on a preflight: it must not meet a 401.
    key = ApiKey(name="page", sha256=hashlib.sha256(b"k").hexdigest(), scopes=("admin",))
    settings = gateway_settings.model_copy(
        update={"cors_allow_origins": (APP,), "api_keys": (key,)}
    )
    async for client in serving(settings):
        path = f"/v1/exchanges/{names.exchange}/messages"
        answered = await client.options(path, headers=preflight(APP))
        assert answered.status_code == 200
        unauthenticated = await client.post(path, json=PUBLISH, headers={"Origin": APP})
        assert unauthenticated.status_code == 401
        assert unauthenticated.headers["access-control-allow-origin"] == APP
        published = await client.post(
            path, json=PUBLISH, headers={"Origin": APP, "Authorization": "Bearer k"}
        )
        assert published.status_code == 202
        assert published.headers["timing-allow-origin"] == APP
