"""The consumer process in the foreground: settings, logging, signals, the event loop, and
the runner, until SIGTERM or SIGINT. `python -m consumers` and `Consumer.run()` both come
here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from consumers.handlers import Handlers
from consumers.runner import run
from consumers.settings import ConsumerSettings
from hareway import logs
from hareway.config import (
    check_broker_url,
    check_database_url,
    exit_on_config_error,
    load_settings,
    unknown_variable_warnings,
)
from hareway.errors import ConfigError, HarewayError
from hareway.heap import freeze_startup_heap
from hareway.topology import load_topology
from hareway.tracing import Tracing

log = logging.getLogger("consumers")


def serve(queues: Sequence[str], app: Handlers | None, *, health_port: int | None = None) -> None:
    """Run the consumer process in the foreground until SIGTERM or SIGINT."""
    with exit_on_config_error("consumers"):
        settings = (app.settings if app is not None else None) or load_settings(ConsumerSettings)
        if health_port is not None:
            settings = settings.model_copy(update={"health_port": health_port})
        check(settings)
    logs.configure("consumer", settings.log_level, settings.log_format)
    for warning in unknown_variable_warnings():
        log.warning(warning)
    try:
        with exit_on_config_error("consumers"):
            _run_loop(_serve(settings, queues, app))
    except HarewayError as exc:
        print(f"consumers: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def check(settings: ConsumerSettings) -> None:
    """Everything that can be known wrong before connecting, as a `ConfigError`."""
    check_broker_url(settings.rabbitmq_url)
    check_database_url(settings.database_url)
    try:
        load_topology(settings.topology_file)
    except HarewayError as exc:
        raise ConfigError(f"TOPOLOGY_FILE: {exc}") from None
    Tracing.from_environment("hareway-consumer").shutdown()


async def _serve(settings: ConsumerSettings, queues: Sequence[str], app: Handlers | None) -> None:
    """`run` under this process's signals: SIGTERM or SIGINT while it still connects stops
    it at once (nothing taken, nothing to drain); later they drain, for at most
    `DRAIN_TIMEOUT_S`, a broker that is gone included."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    started = asyncio.Event()

    async def freeze_when_started() -> None:
        await started.wait()
        freeze_startup_heap()

    freezer = asyncio.create_task(freeze_when_started())
    runner = asyncio.create_task(run(settings, queues, app, stop=stop, started=started))
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({runner, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not runner.done():
            if not started.is_set():
                log.info("stopped while starting: nothing was taken, nothing to drain")
                runner.cancel()
                grace = 5.0
            else:
                grace = settings.drain_timeout_s
            done, _ = await asyncio.wait({runner}, timeout=grace)
            if not done:
                # A connect attempt (aio-pika's) that does not give way to cancellation
                # must not keep the process: the deliveries not acked come back anyway.
                log.warning(
                    "the drain did not end within %gs (DRAIN_TIMEOUT_S): exiting now; what "
                    "was not acked comes back from the queues",
                    grace,
                )
                logging.shutdown()
                os._exit(0)
        if not runner.cancelled():
            runner.result()
    finally:
        freezer.cancel()
        stopping.cancel()


def _run_loop(main: Coroutine[Any, Any, None]) -> None:
    # uvloop where installed (uvicorn[standard] brings it): the consume path is mostly
    # event-loop work per delivery, which uvloop does in C.
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(main)
    finally:
        _end_leftovers(loop)
        loop.close()


def _end_leftovers(loop: asyncio.AbstractEventLoop, timeout_s: float = 2.0) -> None:
    """Cancel what still runs and wait for it, briefly. `asyncio.run` would wait for ever:
    a connect attempt cut short by SIGTERM leaves aio-pika tasks that make new ones as
    they are cancelled; their connection is gone with the process either way."""
    leftovers = asyncio.all_tasks(loop)
    for task in leftovers:
        task.cancel()
    if leftovers:
        loop.run_until_complete(asyncio.wait(leftovers, timeout=timeout_s))
    loop.run_until_complete(loop.shutdown_asyncgens())
