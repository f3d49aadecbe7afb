"""The `hareway` console script: `hareway topology apply | diff | export | asyncapi`, and
the commands against a gateway (`publish`, `tail`, `dlq`, `status`: hareway/cli_gateway.py).

`diff` exits 0 when the broker already matches the file, 2 when applying would create
something, 3 when something conflicts; `apply` applies nothing when anything conflicts.
Both also print the store's retention per queue, which no broker holds: the consumers'
sweep applies it (`export --retention` writes it as JSON).
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

from hareway import cli_gateway
from hareway.asyncapi import asyncapi_document
from hareway.broker import connect_plain
from hareway.definitions import export_definitions
from hareway.errors import HarewayError
from hareway.plan import Change, Plan, apply_topology, delete_topology, diff_topology
from hareway.topology import Topology, load_topology
from hareway.versioning import VersionOption

app = typer.Typer(add_completion=False, no_args_is_help=True)
topology_app = typer.Typer(no_args_is_help=True, help="declare, compare and export the topology")
app.add_typer(topology_app, name="topology")
app.command()(cli_gateway.publish)
app.command()(cli_gateway.tail)
app.command()(cli_gateway.status)
app.add_typer(cli_gateway.dlq_app, name="dlq")


@app.callback()
def main(version: VersionOption = False) -> None:
    """hareway's operator tools."""


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


def _print(plan: Plan, dry_run: bool = False) -> None:
    def said(change: Change) -> str:
        # A dry run created nothing: it says what applying would do.
        return "would create" if dry_run and change is Change.CREATED else change.value

    for entry in plan.entries:
        reason = f"  ({entry.reason})" if entry.reason else ""
        typer.echo(f"{said(entry.change):<12} {entry.what}{reason}")
    counts = ", ".join(f"{len(plan.of(change))} {said(change)}" for change in Change)
    typer.echo(counts)


def _print_retention(topology: Topology) -> None:
    for queue in topology.queues:
        policy = topology.retention_of(queue.name).describe()
        typer.echo(f"{'retention':<12} queue {queue.name!r}: {policy}")
    typer.echo(f"{'retention':<12} any other queue: {topology.retention.describe()}")


def retention_document(topology: Topology) -> dict[str, Any]:
    """The retention the consumers' sweep applies, per declared queue and by default."""
    return {
        "default": topology.retention.model_dump(mode="json"),
        "queues": {
            queue.name: topology.retention_of(queue.name).model_dump(mode="json")
            for queue in topology.queues
        },
    }


def _print_subscriptions(topology: Topology) -> None:
    # Not broker entities: nothing to create or compare, but an operator reading a diff
    # should see where the consumers will push.
    for subscription in topology.subscriptions:
        typer.echo(f"{'push':<12} {subscription.describe()}")


@topology_app.command()
def diff(file: FileOption = None, url: UrlOption = None) -> None:
    """Dry run: what applying the file would create, what conflicts, what is unchanged."""
    topology = _topology(file)
    plan = _run(_with_broker(_url(url), lambda c: diff_topology(c, topology)))
    _print(plan, dry_run=True)
    _print_retention(topology)
    _print_subscriptions(topology)
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
    _print_retention(topology)
    _print_subscriptions(topology)


@topology_app.command()
def delete(file: FileOption = None, url: UrlOption = None) -> None:
    """Delete the file's exchanges and queues (retry and dead-letter ones included) from
    the broker, messages and all: what `make clean` does to what `make run` declared."""
    topology = _topology(file)
    for line in _run(_with_broker(_url(url), lambda c: delete_topology(c, topology))):
        typer.echo(line)


OutputOption = Annotated[
    Path | None, typer.Option("--output", "-o", help="write here instead of stdout")
]


def _write(document: dict[str, Any], output: Path | None) -> None:
    text = json.dumps(document, indent=2) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")


@topology_app.command()
def export(
    file: FileOption = None,
    output: OutputOption = None,
    vhost: Annotated[str, typer.Option(help="the virtual host to export into")] = "/",
    retention: Annotated[
        bool, typer.Option("--retention", help="the store's retention instead (JSON)")
    ] = False,
) -> None:
    """Write a RabbitMQ definitions.json (for `rabbitmqctl import_definitions`), or with
    `--retention` the store's retention per queue."""
    topology = _topology(file)
    document = retention_document(topology) if retention else export_definitions(topology, vhost)
    _write(document, output)


@topology_app.command()
def asyncapi(
    file: FileOption = None,
    output: OutputOption = None,
    vhost: Annotated[str, typer.Option(help="the virtual host the bindings name")] = "/",
) -> None:
    """Write the AsyncAPI 3.0 document of the topology (JSON): the gateway serves the same
    at /asyncapi.json."""
    _write(asyncapi_document(_topology(file), vhost), output)
