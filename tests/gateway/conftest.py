"""An in-process gateway on the real broker, reached through httpx's ASGI transport."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings


@pytest.fixture
def gateway_settings(rabbitmq_url: str, sqlite_url: str, topology_file: Path) -> GatewaySettings:
    return GatewaySettings(
        rabbitmq_url=rabbitmq_url,
        database_url=sqlite_url,
        topology_file=str(topology_file),
        _env_file=None,
    )


@pytest.fixture
async def client(gateway_settings: GatewaySettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(gateway_settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client
