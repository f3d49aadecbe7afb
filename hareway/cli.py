"""The `hareway` console script: `hareway topology apply | diff | export`.

`diff` exits 0 when the broker already matches the file, 2 when applying would create
something, 3 when something conflicts; `apply` applies nothing when anything conflicts.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import aio_pika
import typer

from hareway.broker import connect_plain
from hareway.definitions import export_definitions
from hareway.errors import HarewayError
from hareway.plan import Change, Plan, apply_topology, diff_topology
from hareway.topology import Topology, load_topology

app = typer.Typer(add_completion=False, no_args_is_help=True, help="hareway's operator tools")
topology_app = typer.Typer(no_args_is_help=True, help="declare, compare and export the topology")
app.add_typer(topology_app, name="topology")

T = TypeVar("T")

FileOption = Annotated[
    Path | None,
    typer.Option("--file", "-f", help="the topology YAML (default: $TOPOLOGY_FILE)"),
]
UrlOption = Annotated[
    str | None,
    typer.Option("--url", help="the broker (default: $RABBITMQ_URL, else local guest)"),
]


def _topology(file: Path | None) -> Topology:
    path = file or os.environ.get("TOPOLOGY_FILE")
    if not path:
        raise typer.BadParameter("give --file or set TOPOLOGY_FILE", param_hint="--file")
    try:
        return load_topology(path)
    except HarewayError as exc:
        print(f"hareway: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None


def _url(url: str | None) -> str:
    return url or os.environ.get("RABBITMQ_URL", "amqp://guest:guest@localhost:5672/")


def _run(work: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(work)
    except HarewayError as exc:
        print(f"hareway: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None


async def _with_broker(
    url: str, work: Callable[[aio_pika.abc.AbstractConnection], Awaitable[T]]
) -> T:
    connection = await connect_plain(url, client_properties={"connection_name": "hareway-cli"})
    try:
        return await work(connection)
    finally:
        await connection.close()


def _print(plan: Plan) -> None:
    for entry in plan.entries:
        reason = f"  ({entry.reason})" if entry.reason else ""
        typer.echo(f"{entry.change.value:<12} {entry.what}{reason}")
    counts = ", ".join(f"{len(plan.of(change))} {change.value}" for change in Change)
    typer.echo(counts)


@topology_app.command()
def diff(file: FileOption = None, url: UrlOption = None) -> None:
    """Dry run: what applying the file would create, what conflicts, what is unchanged."""
    topology = _topology(file)
    plan = _run(_with_broker(_url(url), lambda c: diff_topology(c, topology)))
    _print(plan)
    if plan.of(Change.CONFLICTING):
        raise typer.Exit(3)
    if plan.changes:
        raise typer.Exit(2)


@topology_app.command()
def apply(file: FileOption = None, url: UrlOption = None) -> None:
    """Declare the file's topology (idempotent); nothing at all when anything conflicts."""
    topology = _topology(file)
    plan = _run(_with_broker(_url(url), lambda c: apply_topology(c, topology)))
    _print(plan)


@topology_app.command()
def export(
    file: FileOption = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write here instead of stdout")
    ] = None,
    vhost: Annotated[str, typer.Option(help="the virtual host to export into")] = "/",
) -> None:
    """Write a RabbitMQ definitions.json (for `rabbitmqctl import_definitions`)."""
    topology = _topology(file)
    text = json.dumps(export_definitions(topology, vhost), indent=2) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
