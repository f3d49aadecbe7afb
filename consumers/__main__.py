"""`python -m consumers --queue Q [--queue Q2 ...]`"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Annotated

import typer

from consumers.runner import run
from consumers.settings import ConsumerSettings
from hareway.errors import HarewayError

cli = typer.Typer(add_completion=False)


@cli.command()
def main(
    queue: Annotated[list[str], typer.Option("--queue", "-q", help="a queue to consume")],
) -> None:
    """Consume the named queues, persist every message, and ack only after the commit."""
    settings = ConsumerSettings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(run(settings, queue))
    except HarewayError as exc:
        print(f"consumers: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    cli()
