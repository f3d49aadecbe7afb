"""Finding the real services the tests need: a RabbitMQ and a PostgreSQL.

Order for each: an explicit URL from the environment, else the local default port, else a
testcontainers container where a Docker engine answers. With none, the tests fail with a
message that says how to get one; they never skip for want of a broker.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from hareway.broker import HOW_TO_GET_A_BROKER

LOCAL_RABBITMQ = "amqp://guest:guest@127.0.0.1:5672/"
LOCAL_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"

HOW_TO_GET_POSTGRES = """\
No PostgreSQL answers at {url}.
Start one, or point HAREWAY_TEST_POSTGRES_URL at one (postgresql+asyncpg://user:pw@host/db):
  * Docker:  docker compose -f infra/compose.yaml up -d postgres
  * Debian/Ubuntu:  sudo apt-get install postgresql && sudo pg_ctlcluster 15 main start
"""


class ServiceMissing(Exception):
    """No way to get the service; the message says how to get one."""


@dataclass
class Found:
    url: str
    origin: str  # "env", "local" or "container"
    stop: Callable[[], None] | None = None


def port_answers(url: str, default_port: int, timeout_s: float = 1.0) -> bool:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


@dataclass(frozen=True)
class _Service:
    name: str
    variable: str  # the environment variable that names an explicit URL
    local_url: str
    port: int
    how_to: str  # with {url}
    container: Callable[[], Found]


def _find(
    service: _Service,
    env: dict[str, str] | None,
    answers: Callable[[str, int], bool],
    docker: Callable[[], bool],
    start_container: Callable[[], Found] | None,
) -> Found:
    env = dict(os.environ) if env is None else env
    explicit = env.get(service.variable)
    if explicit:
        if not answers(explicit, service.port):
            raise ServiceMissing(
                f"{service.variable} is set but nothing answers there.\n"
                + service.how_to.format(url=explicit)
            )
        return Found(explicit, "env")
    if answers(service.local_url, service.port):
        return Found(service.local_url, "local")
    if docker():
        return (start_container or service.container)()
    raise ServiceMissing(
        service.how_to.format(url=service.local_url)
        + f"  * or start a Docker engine: the tests then run {service.name} in testcontainers"
    )


def find_rabbitmq(
    env: dict[str, str] | None = None,
    answers: Callable[[str, int], bool] = port_answers,
    docker: Callable[[], bool] = docker_answers,
    start_container: Callable[[], Found] | None = None,
) -> Found:
    service = _Service(
        "RabbitMQ", "RABBITMQ_URL", LOCAL_RABBITMQ, 5672, HOW_TO_GET_A_BROKER, _rabbitmq_container
    )
    return _find(service, env, answers, docker, start_container)


def find_postgres(
    env: dict[str, str] | None = None,
    answers: Callable[[str, int], bool] = port_answers,
    docker: Callable[[], bool] = docker_answers,
    start_container: Callable[[], Found] | None = None,
) -> Found:
    service = _Service(
        "PostgreSQL",
        "HAREWAY_TEST_POSTGRES_URL",
        LOCAL_POSTGRES,
        5432,
        HOW_TO_GET_POSTGRES,
        _postgres_container,
    )
    return _find(service, env, answers, docker, start_container)


def _rabbitmq_container() -> Found:
    from testcontainers.rabbitmq import RabbitMqContainer

    container = RabbitMqContainer("rabbitmq:3.13-management")
    container.start()
    host = container.get_container_host_ip()
    port = container.get_exposed_port(5672)
    return Found(f"amqp://guest:guest@{host}:{port}/", "container", container.stop)


def _postgres_container() -> Found:
    from testcontainers.postgres import PostgresContainer

    container = PostgresContainer("postgres:16", driver="asyncpg")
    container.start()
    return Found(container.get_connection_url(), "container", container.stop)


@contextlib.contextmanager
def stopping(found: Found) -> Iterator[Found]:
    try:
        yield found
    finally:
        if found.stop is not None:
            found.stop()
