"""What routes need from the app, built in the lifespan and handed over by FastAPI's `Depends`.

Every dependency is `async def`: FastAPI runs a plain `def` one in a worker thread. The
publish routes take none at all: FastAPI's dependency solving was a third of their CPU, so
they fetch one `PublishServices` bundle from the app state instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from consumers.store import Store
from gateway.auth import Authenticator
from gateway.idempotency import IdempotencyKeys
from gateway.publisher import Publisher
from gateway.schemas import Schemas
from gateway.settings import GatewaySettings


@dataclass(frozen=True, slots=True)
class PublishServices:
    publisher: Publisher
    settings: GatewaySettings
    schemas: Schemas
    idempotency_keys: IdempotencyKeys
    authenticator: Authenticator


def publish_services(request: Request) -> PublishServices:
    services: PublishServices = request.app.state.publish_services
    return services


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
