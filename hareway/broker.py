"""Connecting to RabbitMQ, and the one message that says how to get a broker when none answers."""

from __future__ import annotations

import asyncio
import os
import socket
import sys

import aio_pika
import aiormq
from aio_pika.abc import AbstractConnection, AbstractRobustConnection
from aiormq.abc import FieldTable
from yarl import URL

from hareway.amqp import check_connection
from hareway.amqp.failover import FailoverConnection, addresses
from hareway.config import redact_url
from hareway.errors import ConfigError, HarewayError

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


class BrokerRefused(ConfigError):
    """The broker answered and said no: a wrong user name or password, an unknown vhost.
    Retrying changes nothing, so it is a configuration error."""


def redact(url: str) -> str:
    """The URL (or URLs) without the password, fit for logs and error messages."""
    return redact_url(url)


def vhost(url: str) -> str:
    """The virtual host a `RABBITMQ_URL` (its first address) connects to, as aiormq reads it."""
    path = URL(addresses(url)[0]).path
    return "/" if path in ("", "/") else path[1:].replace("%2F", "/")


def refusal(url: str, exc: BaseException) -> BrokerRefused | None:
    """What the broker's refusal of a connection to `url` means, or None if it is none."""
    parsed = URL(url)
    where = f"the broker at {parsed.host}:{parsed.port or 5672}"
    if isinstance(exc, aiormq.exceptions.ProbableAuthenticationError):
        return BrokerRefused(
            f"RABBITMQ_URL: {where} refused the login of user {parsed.user or 'guest'!r} "
            "(wrong user name or password)"
        )
    # RabbitMQ answers connection.open for a vhost that does not exist (or that the user
    # may not use) with connection.close, which aiormq reports as an unexpected frame.
    if isinstance(exc, aiormq.exceptions.InvalidFrameError) and "Connection.Close" in str(exc):
        vhost = parsed.path[1:] if len(parsed.path) > 1 else "/"
        return BrokerRefused(
            f"RABBITMQ_URL: {where} refused virtual host {vhost!r} "
            f"(it does not exist, or user {parsed.user or 'guest'!r} has no access to it)"
        )
    return None


async def connect(url: str, role: str, *, timeout_s: float = 10.0) -> AbstractRobustConnection:
    """A robust connection: aio-pika reconnects and restores channels after a broker outage,
    to another of the addresses `url` lists when there are several."""
    found = addresses(url)
    connection = FailoverConnection(found, client_properties=connection_name(role))
    try:
        await connection.connect(timeout=timeout_s)
    except asyncio.CancelledError:
        # Stopped while connecting (SIGTERM): no reconnect attempt may outlive this.
        await asyncio.shield(connection.close())
        raise
    except (OSError, TimeoutError, aiormq.exceptions.AMQPError) as exc:
        await connection.close()
        refused = refusal(found[0], exc)
        if refused is not None:
            raise refused from None
        raise BrokerUnreachable(url, exc) from exc
    if connection.transport is not None:
        check_connection(connection.transport.connection)
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
        except (OSError, TimeoutError, aiormq.exceptions.AMQPError) as exc:
            refused = refusal(address, exc)
            if refused is not None:
                raise refused from None
            failure = exc
    raise BrokerUnreachable(url, failure or "no address")


def main() -> None:
    """`python -m hareway.broker`: exit 1 with instructions when no broker answers."""
    url = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@localhost:5672/")
    try:
        asyncio.run(check(url))
    except BrokerRefused as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
    except BrokerUnreachable as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(1) from None
    print(f"RabbitMQ answers at {redact(url)}")


if __name__ == "__main__":
    main()
