"""What routes need from the app, built in the lifespan and handed over by FastAPI's `Depends`.

The providers are `async def` on purpose: FastAPI runs a plain `def` dependency in a worker
thread, and three thread hops per request cost more than the whole publish.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from consumers.store import Store
from gateway.publisher import Publisher
from gateway.settings import GatewaySettings


async def _publisher(request: Request) -> Publisher:
    publisher: Publisher = request.app.state.publisher
    return publisher


async def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def _settings(request: Request) -> GatewaySettings:
    settings: GatewaySettings = request.app.state.settings
    return settings


PublisherDep = Annotated[Publisher, Depends(_publisher)]
StoreDep = Annotated[Store, Depends(_store)]
SettingsDep = Annotated[GatewaySettings, Depends(_settings)]
