"""`python -m gateway [--host H] [--port P] [--workers N] [--access-log]`"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import resource
import shutil
import sys
import tempfile
from typing import Annotated

import typer
import uvicorn

from gateway.direct import GatewayHttpProtocol
from gateway.http_bounds import check_uvicorn
from gateway.metrics import MULTIPROCESS_DIR
from gateway.settings import GatewaySettings
from hareway import amqp as amqp_internals
from hareway import broker, logs
from hareway.amqp import AmqpInternalsChanged
from hareway.config import (
    check_broker_url,
    check_database_url,
    exit_on_config_error,
    load_settings,
    unknown_variable_warnings,
)
from hareway.errors import ConfigError, HarewayError
from hareway.tracing import Tracing
from hareway.versioning import VersionOption

log = logging.getLogger("gateway")

# Descriptors beyond the connections: the broker, the store, logs, the listening socket.
_SPARE_FDS = 64

cli = typer.Typer(add_completion=False)


@cli.command()
def main(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
    access_log: Annotated[
        bool | None, typer.Option(help="log every request (default: ACCESS_LOG)")
    ] = None,
    version: VersionOption = False,
) -> None:
    """Serve the hareway HTTP API."""
    if access_log is not None:
        # Through the environment, so `--workers` processes read it too.
        os.environ["ACCESS_LOG"] = str(access_log).lower()
    with exit_on_config_error("gateway"):
        settings = load_settings(GatewaySettings)
        check(settings)
    logs.configure("gateway", settings.log_level, settings.log_format)
    for warning in unknown_variable_warnings():
        log.warning(warning)
    check_uvicorn()
    try:
        # Here, not only in the lifespan: uvicorn would print a failed startup's traceback.
        # Before the broker check, which connects through the internals it checks.
        amqp_internals.prepare()
    except AmqpInternalsChanged as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    with exit_on_config_error("gateway"):
        _check_broker(settings.rabbitmq_url)
    _allow_descriptors(settings.max_connections + _SPARE_FDS)
    if workers > 1:
        _share_metrics()
    uvicorn.run(
        "gateway.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        # The gateway's own access log (ACCESS_LOG) replaces uvicorn's.
        access_log=False,
        # The one log format, in this process and in every worker (hareway/logs.py).
        log_config=logs.dict_config("gateway", settings.log_level, settings.log_format),
        log_level=settings.log_level.lower(),
        # uvloop when installed (uvicorn[standard] brings it, and httptools).
        loop="auto",
        # httptools with the gateway's bounds on headers, timeouts and connections.
        http=GatewayHttpProtocol,
        timeout_keep_alive=settings.keep_alive_timeout_s,
        # After the drain (gateway/drain.py): time for every request already read to be
        # answered, a slow body and a publish's confirm wait included.
        timeout_graceful_shutdown=int(settings.body_timeout_s + settings.publish_timeout_s) + 1,
    )


def check(settings: GatewaySettings) -> None:
    """Everything that can be known wrong before serving, as a `ConfigError`."""
    from gateway.schemas import Schemas
    from hareway.topology import load_topology

    check_broker_url(settings.rabbitmq_url)
    check_database_url(settings.database_url)
    try:
        topology = load_topology(settings.topology_file)
        Schemas(topology.schemas)
    except HarewayError as exc:
        raise ConfigError(f"TOPOLOGY_FILE: {exc}") from None
    Tracing.from_environment("hareway-gateway").shutdown()


def _check_broker(url: str) -> None:
    """A broker that refuses the login or the vhost is a configuration error (exit 2); one
    that does not answer says how to get one (exit 1)."""
    try:
        asyncio.run(broker.check(url, timeout_s=10))
    except broker.BrokerUnreachable as exc:
        print(exc, file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def _share_metrics() -> None:
    """prometheus-client's multiprocess mode: set before any worker imports it."""
    if os.environ.get(MULTIPROCESS_DIR):
        return  # the operator chose the directory
    directory = tempfile.mkdtemp(prefix="hareway-metrics-")
    os.environ[MULTIPROCESS_DIR] = directory
    atexit.register(shutil.rmtree, directory, ignore_errors=True)


def _allow_descriptors(needed: int) -> None:
    """Raise the soft limit on open files towards `needed`: distributions default to 1024,
    below MAX_CONNECTIONS' default, and a full table makes accept() fail before the gateway
    can even answer 503. Worker processes inherit the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed or soft == resource.RLIM_INFINITY:
        return
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if wanted < needed:
        log.warning(
            "open files are limited to %d: MAX_CONNECTIONS is effectively %d per process",
            wanted,
            wanted - _SPARE_FDS,
        )


if __name__ == "__main__":
    cli()
