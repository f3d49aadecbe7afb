"""What routes need from the app, built in the lifespan and handed over by FastAPI's `Depends`.

Every dependency is `async def`: FastAPI runs a plain `def` one in a worker thread. The
publish routes take none at all: FastAPI's dependency solving was a third of their CPU, so
they fetch one `PublishServices` bundle from the app state instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.types import Scope

from gateway.access import CARRIED
from gateway.announcer import Announcer
from gateway.auth import Authenticator, Caller
from gateway.compose import Context
from gateway.idempotency import Idempotency
from gateway.publisher import Publisher
from gateway.queues import KnownQueues
from gateway.schemas import Schemas
from gateway.settings import GatewaySettings
from hareway.store import Messages
from hareway.topology import Topology


@dataclass(frozen=True, slots=True)
class PublishServices:
    publisher: Publisher
    settings: GatewaySettings
    schemas: Schemas
    idempotency_keys: Idempotency
    authenticator: Authenticator

    def context(self, exchange: str, caller: Caller, scope: Scope) -> Context:
        """What every message of one publish request to `exchange` shares."""
        return Context(
            exchange,
            caller.name,
            self.schemas,
            self.settings.max_header_bytes,
            caller.key_owner,
            scope.get(CARRIED),
        )


def publish_services(request: Request) -> PublishServices:
    services: PublishServices = request.app.state.publish_services
    return services


async def _publisher(request: Request) -> Publisher:
    publisher: Publisher = request.app.state.publisher
    return publisher


async def _store(request: Request) -> Messages:
    store: Messages = request.app.state.store
    return store


async def _topology(request: Request) -> Topology:
    topology: Topology = request.app.state.topology
    return topology


async def _settings(request: Request) -> GatewaySettings:
    settings: GatewaySettings = request.app.state.settings
    return settings


async def _announcer(request: Request) -> Announcer:
    announcer: Announcer = request.app.state.announcer
    return announcer


async def _known_queues(request: Request) -> KnownQueues:
    queues: KnownQueues = request.app.state.known_queues
    return queues


AnnouncerDep = Annotated[Announcer, Depends(_announcer)]
KnownQueuesDep = Annotated[KnownQueues, Depends(_known_queues)]
PublisherDep = Annotated[Publisher, Depends(_publisher)]
StoreDep = Annotated[Messages, Depends(_store)]
SettingsDep = Annotated[GatewaySettings, Depends(_settings)]
TopologyDep = Annotated[Topology, Depends(_topology)]
