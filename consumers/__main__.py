"""`python -m consumers --queue Q [--queue Q2 ...] [--app module:consumer] [--health-port P]`"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import sys
from collections.abc import Coroutine, Sequence
from typing import Annotated, Any

import typer

from consumers.app import Consumer
from consumers.errors import HandlerError
from consumers.runner import run
from consumers.settings import ConsumerSettings
from hareway.errors import HarewayError

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
) -> None:
    """Consume the named queues, persist every message, and ack only after the commit."""
    try:
        consumer = load_app(app) if app else None
    except HandlerError as exc:
        print(f"consumers: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    queues = list(queue or []) or (list(consumer.handlers) if consumer else [])
    if not queues:
        raise typer.BadParameter("name at least one --queue (or an --app with handlers)")
    serve(queues, consumer, health_port=health_port)


def serve(queues: Sequence[str], app: Consumer | None, *, health_port: int | None = None) -> None:
    """Run the consumer process in the foreground until SIGTERM or SIGINT."""
    settings = (app.settings if app is not None else None) or ConsumerSettings()
    if health_port is not None:
        settings = settings.model_copy(update={"health_port": health_port})
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        _run_loop(_serve(settings, queues, app))
    except HarewayError as exc:
        print(f"consumers: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


async def _serve(settings: ConsumerSettings, queues: Sequence[str], app: Consumer | None) -> None:
    started = asyncio.Event()

    async def freeze_when_started() -> None:
        await started.wait()
        # Everything built so far (modules, engine, channels) lives as long as the
        # process: out of the collector's sight, a full collection no longer walks it.
        # It did every few thousand messages, a 50 ms pause each time and half the
        # collector's cost per message.
        gc.freeze()

    freezer = asyncio.create_task(freeze_when_started())
    try:
        await run(settings, queues, app, started=started)
    finally:
        freezer.cancel()


def _run_loop(main: Coroutine[Any, Any, None]) -> None:
    # uvloop where installed (uvicorn[standard] brings it): the consume path is mostly
    # event-loop work per delivery, which uvloop does in C.
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


def load_app(reference: str) -> Consumer:
    module_name, _, attribute = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise HandlerError(f"cannot import {module_name!r} for --app: {exc}") from exc
    found = getattr(module, attribute or "app", None)
    if not isinstance(found, Consumer):
        raise HandlerError(f"--app {reference!r} names no consumers.Consumer")
    return found


if __name__ == "__main__":
    cli()
