"""`python -m consumers --queue Q [--queue Q2 ...] [--app module:consumer] [--health-port P]`"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated

import typer
from pydantic import ValidationError

from consumers.app import Consumer
from consumers.errors import HandlerError
from consumers.process import serve
from hareway.config import describe_validation, exit_on_config_error
from hareway.errors import ConfigError
from hareway.versioning import VersionOption

cli = typer.Typer(add_completion=False)


@cli.command()
def main(
    queue: Annotated[
        list[str] | None,
        typer.Option("--queue", "-q", help="a queue to consume (default: every handler's)"),
    ] = None,
    app: Annotated[
        str | None,
        typer.Option("--app", help="user handlers: `package.module:consumer` (a Consumer)"),
    ] = None,
    health_port: Annotated[
        int | None, typer.Option(help="serve /healthz and /readyz on this port")
    ] = None,
    version: VersionOption = False,
) -> None:
    """Consume the named queues, persist every message, and ack only after the commit."""
    try:
        with exit_on_config_error("consumers"):
            consumer = load_app(app) if app else None
    except HandlerError as exc:
        print(f"consumers: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    queues = list(queue or []) or (list(consumer.handlers) if consumer else [])
    if not queues:
        raise typer.BadParameter("name at least one --queue (or an --app with handlers)")
    serve(queues, consumer, health_port=health_port)


def load_app(reference: str) -> Consumer:
    module_name, _, attribute = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise HandlerError(f"cannot import {module_name!r} for --app: {exc}") from exc
    except ValidationError as exc:
        # The app module built its ConsumerSettings at import: the environment is wrong.
        raise ConfigError(describe_validation(exc)) from None
    found = getattr(module, attribute or "app", None)
    if not isinstance(found, Consumer):
        raise HandlerError(f"--app {reference!r} names no consumers.Consumer")
    return found


if __name__ == "__main__":
    cli()
