"""Graceful drain: SIGTERM fails readiness first, keeps answering, then stops and exits 0."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest
from aio_pika.abc import AbstractConnection

from tests.conftest import Names
from tests.support.broker import ready_count
from tests.support.processes import eventually, start_gateway

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(90)]

ORDER = {"routing_key": "order.created", "payload": {"n": 1}}


async def test_sigterm_under_load_fails_readiness_first_answers_everything_and_exits_0(
    rabbitmq_url: str,
    sqlite_url: str,
    topology_file: Path,
    names: Names,
    tmp_path: Path,
    amqp: AbstractConnection,
) -> None:
    env = {
        "RABBITMQ_URL": rabbitmq_url,
        "DATABASE_URL": sqlite_url,
        "TOPOLOGY_FILE": str(topology_file),
        "DRAIN_DELAY_S": "2",
    }
    gateway, base_url = await start_gateway(env, tmp_path / "gateway.log")
    answered: list[int] = []
    closing: list[bool] = []
    refused = 0
    # When the listening socket closes, connections still in the kernel's accept queue
    # are reset: the gateway never read those requests. Their times are checked below.
    reset_at: list[float] = []
    stop = asyncio.Event()

    async def load() -> None:
        nonlocal refused
        # One connection per request, as clients behind a load balancer make them.
        while not stop.is_set():
            try:
                async with httpx.AsyncClient(base_url=base_url) as client:
                    response = await client.post(
                        f"/v1/exchanges/{names.exchange}/messages", json=ORDER, timeout=10
                    )
            except httpx.ConnectError:
                refused += 1  # not read, not accepted: the listening socket was closed
                await asyncio.sleep(0.02)
                continue
            except (httpx.ReadError, httpx.RemoteProtocolError):
                reset_at.append(time.monotonic())
                await asyncio.sleep(0.02)
                continue
            answered.append(response.status_code)
            closing.append(response.headers.get("connection") == "close")

    loaders = [asyncio.create_task(load()) for _ in range(4)]
    try:
        async with httpx.AsyncClient(base_url=base_url) as probe:

            async def warmed_up() -> bool:
                return len(answered) >= 20

            await eventually(warmed_up, 20, "the first answers")
            assert (await probe.get("/readyz")).status_code == 200
            gateway.signal(signal.SIGTERM)
            signalled = time.monotonic()
            # Readiness fails first, while requests are still served.
            while (ready := await probe.get("/readyz")).status_code == 200:
                assert time.monotonic() - signalled < 1, "readiness never failed"
                await asyncio.sleep(0.02)
            assert ready.json()["type"] == "/problems/draining"
            served_while_draining = len(answered)
            await asyncio.sleep(1)
            assert len(answered) > served_while_draining, "no request served during the drain"
        exit_code = await gateway.wait(30)
    finally:
        stop.set()
        await asyncio.gather(*loaders)
        await gateway.stop()
    assert exit_code == 0, gateway.output()[-3000:]
    # Every request the gateway read got an answer, and every answer was a 202.
    assert set(answered) == {202}, {status: answered.count(status) for status in set(answered)}
    assert any(closing), "no answer during the drain said Connection: close"
    # A reset is only allowed once the gateway stopped accepting (DRAIN_DELAY_S after the
    # signal); during the drain every connection is accepted and answered.
    early = [round(at - signalled, 3) for at in reset_at if at - signalled < 2 - 0.05]
    assert not early, f"connections reset during the drain, s after the signal: {early}"
    assert await ready_count(amqp, names.queue) == len(answered)
