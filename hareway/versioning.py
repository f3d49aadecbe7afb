"""`--version` for every hareway command: the one `hareway.__version__`."""

from __future__ import annotations

from typing import Annotated

import typer

from hareway import __version__


def _show(value: bool) -> None:
    if value:
        typer.echo(f"hareway {__version__}")
        raise typer.Exit()


VersionOption = Annotated[
    bool,
    typer.Option("--version", callback=_show, is_eager=True, help="Show the version and exit."),
]
