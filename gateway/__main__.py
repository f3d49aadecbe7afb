"""`python -m gateway [--host H] [--port P]`"""

from __future__ import annotations

import logging
from typing import Annotated

import typer
import uvicorn

from gateway.settings import GatewaySettings

cli = typer.Typer(add_completion=False)


@cli.command()
def main(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
    access_log: Annotated[bool, typer.Option(help="log every request")] = False,
) -> None:
    """Serve the hareway HTTP API."""
    settings = GatewaySettings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    uvicorn.run(
        "gateway.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=access_log,
        log_level=settings.log_level.lower(),
        # uvloop and httptools when installed (uvicorn[standard] brings both).
        loop="auto",
        http="auto",
    )


if __name__ == "__main__":
    cli()
