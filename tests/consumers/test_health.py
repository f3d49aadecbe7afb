"""The consumer's probe responder: plain asyncio, no web framework."""

from __future__ import annotations

import subprocess
import sys

import httpx

from consumers.health import serve_health
from consumers.metrics import ConsumerMetrics
from tests.support.processes import free_port


async def test_probes_answer_liveness_and_readiness_and_metrics() -> None:
    ready = True
    port = free_port()
    metrics = ConsumerMetrics()
    metrics.conflicts.labels("q1").inc(2)
    server = await serve_health("127.0.0.1", port, lambda: ready, metrics.render)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).json() == {"status": "ok"}
            ready = False
            assert (await client.get("/readyz")).status_code == 503
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/elsewhere")).status_code == 404
            scraped = await client.get("/metrics")
            assert scraped.status_code == 200
            assert scraped.headers["content-type"].startswith("text/plain; version=0.0.4")
            assert 'hareway_consumer_conflicts_total{queue="q1"} 2.0' in scraped.text
    finally:
        server.close()
        await server.wait_closed()


def test_the_consumer_runtime_never_imports_fastapi() -> None:
    # In a fresh interpreter: this test session has imported the gateway already.
    code = "import sys, consumers.__main__, consumers.runner; print('fastapi' in sys.modules)"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "False"
