"""The app's lifespan: what it leaves the process with once it has started."""

from __future__ import annotations

import gc

import httpx
import pytest


@pytest.mark.timeout(30)
async def test_the_startup_heap_is_frozen_out_of_the_collectors_sight(
    client: httpx.AsyncClient,
) -> None:
    # Full collections walk every tracked object; a started gateway keeps its start-up
    # objects in the permanent generation, so they walk only what requests made.
    assert gc.get_freeze_count() > 0
    answer = await client.get("/healthz")
    assert answer.status_code == 200
