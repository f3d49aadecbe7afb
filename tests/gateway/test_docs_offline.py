"""`/docs` and `/redoc` work without internet: their assets come from a pip package's files,
and a headless Chromium (Debian's `chromium`) that may reach nothing but the gateway
renders the operations."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.chromium import CHROMIUM, MISSING, rendered
from tests.support.processes import start_gateway

pytestmark = [pytest.mark.broker, pytest.mark.slow]


@pytest.mark.timeout(150)
async def test_docs_and_redoc_render_the_operations_offline(
    rabbitmq_url: str, sqlite_url: str, topology_file: Path, tmp_path: Path
) -> None:
    env = {"RABBITMQ_URL": rabbitmq_url, "DATABASE_URL": sqlite_url}
    gateway, base_url = await start_gateway(
        {**env, "TOPOLOGY_FILE": str(topology_file)}, tmp_path / "gateway.log"
    )
    try:
        async with httpx.AsyncClient(base_url=base_url) as client:
            page = (await client.get("/docs")).text
            # Every script and stylesheet the pages load is the gateway's own.
            for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
                assert f'"/docs-assets/{asset}"' in page
                assert (await client.get(f"/docs-assets/{asset}")).status_code == 200
            assert "cdn" not in page.lower()
            assert "cdn" not in (await client.get("/redoc")).text.lower()
        # A missing browser fails, saying how to get one, as a missing broker does.
        assert CHROMIUM is not None, (
            f"no Chromium to render /docs in: {MISSING}; the assets above were checked without it"
        )
        swagger = await rendered(f"{base_url}/docs", tmp_path / "profile-docs")
        redoc = await rendered(f"{base_url}/redoc", tmp_path / "profile-redoc")
    finally:
        await gateway.stop()
    assert 'class="swagger-ui' in swagger, swagger[:2000]
    assert "/v1/exchanges/{exchange}/messages" in swagger
    assert "/v1/queues/{queue}/dead-letters" in swagger
    assert "Publish one message" in redoc, redoc[:2000]
