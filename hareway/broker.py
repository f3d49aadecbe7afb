"""Connecting to RabbitMQ, and the one message that says how to get a broker when none answers."""

from __future__ import annotations

import asyncio
import os
import socket
import sys

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractRobustConnection
from aiormq.abc import FieldTable

from hareway.errors import HarewayError
from hareway.failover import FailoverConnection, addresses

HOW_TO_GET_A_BROKER = """\
No RabbitMQ answers at {url}.
Start one of these, then try again (or point RABBITMQ_URL at a broker you have):
  * Docker:  docker compose -f infra/compose.yaml up -d rabbitmq
  * Debian/Ubuntu:  sudo apt-get install rabbitmq-server && sudo rabbitmq-server -detached
"""


class BrokerUnreachable(HarewayError):
    def __init__(self, url: str, reason: BaseException | str) -> None:
        super().__init__(HOW_TO_GET_A_BROKER.format(url=redact(url)) + f"(reason: {reason})")
        self.url = url


def redact(url: str) -> str:
    """The URL (or URLs) without the password, fit for logs and error messages."""
    return ",".join(_redact_one(address) for address in addresses(url))


def _redact_one(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"


async def connect(url: str, role: str, *, timeout_s: float = 10.0) -> AbstractRobustConnection:
    """A robust connection: aio-pika reconnects and restores channels after a broker outage,
    to another of the addresses `url` lists when there are several."""
    connection = FailoverConnection(addresses(url), client_properties=connection_name(role))
    try:
        await connection.connect(timeout=timeout_s)
    except (OSError, TimeoutError, aio_pika.exceptions.AMQPConnectionError) as exc:
        await connection.close()
        raise BrokerUnreachable(url, exc) from exc
    return connection


def connection_name(role: str) -> FieldTable:
    # The management UI lists connections by this name: say which process holds each one.
    return {"connection_name": f"hareway-{role} {socket.gethostname()}:{os.getpid()}"}


async def check(url: str, timeout_s: float = 3.0) -> None:
    """Raise `BrokerUnreachable` unless one of the addresses answers a plain connection."""
    await (await connect_plain(url, timeout_s=timeout_s)).close()


async def connect_plain(
    url: str, *, timeout_s: float = 10.0, client_properties: FieldTable | None = None
) -> AbstractConnection:
    """A plain connection (no recovery) to the first of the addresses that answers."""
    failure: BaseException | None = None
    for address in addresses(url):
        try:
            return await aio_pika.connect(
                address, timeout=timeout_s, client_properties=client_properties
            )
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPConnectionError) as exc:
            failure = exc
    raise BrokerUnreachable(url, failure or "no address")


def main() -> None:
    """`python -m hareway.broker`: exit 1 with instructions when no broker answers."""
    url = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@localhost:5672/")
    try:
        asyncio.run(check(url))
    except BrokerUnreachable as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(1) from None
    print(f"RabbitMQ answers at {redact(url)}")


if __name__ == "__main__":
    main()
