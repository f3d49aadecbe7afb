"""The `hareway` commands for people, against a gateway: `publish`, `tail`, `dlq list`,
`dlq redrive`, `status`. They use the client (hareway/client) with the gateway at
`$HAREWAY_URL` (default http://127.0.0.1:8000) and the API key in `$HAREWAY_API_KEY`.

Exit codes: 0 done, 1 the gateway refused or failed (its problem on stderr), 2 bad usage.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from hareway.client import Client, HarewayError, ProblemError, RetryPolicy, StoredMessage
from hareway.client.policy import DEFAULT_RETRY

dlq_app = typer.Typer(no_args_is_help=True, help="dead letters: list and redrive")

GatewayOption = Annotated[
    str | None,
    typer.Option("--gateway", help="the gateway's URL (default: $HAREWAY_URL)"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")]
# `tail` follows through a gateway restart of any length.
FOLLOWING = RetryPolicy(attempts=1_000_000, max_wait_s=5.0)
# A redrive of thousands goes in requests of this many ids, with progress between them.
REDRIVE_CHUNK = 500


@contextmanager
def _client(gateway: str | None, retry: RetryPolicy = DEFAULT_RETRY) -> Iterator[Client]:
    url = gateway or os.environ.get("HAREWAY_URL", "http://127.0.0.1:8000")
    api_key = os.environ.get("HAREWAY_API_KEY") or None
    try:
        with Client(url, api_key=api_key, retry=retry) as client:
            yield client
    except ProblemError as exc:
        print(f"hareway: {exc}", file=sys.stderr)
        for error in exc.errors:
            print(f"  {error.get('field', '')}: {error.get('message', '')}", file=sys.stderr)
        raise typer.Exit(1) from None
    except HarewayError as exc:
        print(f"hareway: {url}: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None


def _data(data: str | None) -> Any:
    """`--data` as curl takes it: JSON, `@file`, or `@-` for stdin."""
    if data is None:
        return None
    if data.startswith("@"):
        data = sys.stdin.read() if data == "@-" else Path(data[1:]).read_text()
    try:
        return json.loads(data)
    except ValueError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint="--data") from None


def _headers(pairs: list[str]) -> dict[str, Any] | None:
    headers: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--header")
        headers[name] = value
    return headers or None


def publish(
    exchange: str,
    routing_key: str,
    data: Annotated[
        str | None, typer.Option("--data", "-d", help="the payload: JSON, @file or @- (stdin)")
    ] = None,
    header: Annotated[
        list[str] | None, typer.Option("--header", "-H", help="an AMQP header NAME=VALUE")
    ] = None,
    message_id: Annotated[str | None, typer.Option("--id", help="the message id")] = None,
    gateway: GatewayOption = None,
) -> None:
    """Publish one message; prints the gateway's answer once the broker confirmed it."""
    payload, headers = _data(data), _headers(header or [])
    with _client(gateway) as client:
        published = client.publish(
            exchange, routing_key, payload, headers=headers, message_id=message_id
        )
    print(json.dumps({"message_id": published.message_id, "status": published.status}))


def tail(
    queue: str,
    after: Annotated[str | None, typer.Option(help="start after this cursor")] = None,
    count: Annotated[int | None, typer.Option(help="stop after this many")] = None,
    as_json: JsonOption = False,
    gateway: GatewayOption = None,
) -> None:
    """Follow a queue's stored messages as they are committed (Server-Sent Events)."""
    seen = 0
    with _client(gateway, retry=FOLLOWING) as client:
        for stored in client.stream(queue, after):
            print(_line(stored, as_json), flush=True)
            seen += 1
            if count is not None and seen >= count:
                return


def _line(stored: StoredMessage, as_json: bool) -> str:
    if as_json:
        return json.dumps(stored.raw)
    body = stored.body
    shown = body.decode(errors="replace") if isinstance(body, bytes) else json.dumps(body)
    where = f"{stored.cursor:>8}  {stored.persisted_at}  {stored.message_id}"
    return f"{where}  {stored.routing_key}  {shown}"


@dlq_app.command("list")
def dlq_list(queue: str, as_json: JsonOption = False, gateway: GatewayOption = None) -> None:
    """Every dead letter of a queue with its last error."""
    with _client(gateway) as client:
        for stored in _all_dead_letters(client, queue):
            if as_json:
                print(json.dumps(stored.raw))
            else:
                print(
                    f"{stored.message_id}  attempts {stored.attempts}  {stored.routing_key}  "
                    f"{stored.last_error or ''}"
                )


def _all_dead_letters(client: Client, queue: str) -> Iterator[StoredMessage]:
    after = None
    while True:
        page = client.dead_letters(queue, after, limit=1000)
        yield from page.messages
        if not page.messages or page.next_cursor is None:
            return
        after = page.next_cursor


@dlq_app.command("redrive")
def dlq_redrive(
    queue: str,
    message_id: Annotated[
        list[str] | None, typer.Option("--id", help="only these (repeat); default: all")
    ] = None,
    gateway: GatewayOption = None,
) -> None:
    """Re-publish dead letters to their original exchange; progress on stderr, a summary
    at the end (exit 1 when any failed)."""
    with _client(gateway) as client:
        ids = message_id or [stored.message_id for stored in _all_dead_letters(client, queue)]
        confirmed, failed, missing = 0, 0, 0
        for start in range(0, len(ids), REDRIVE_CHUNK):
            answer = client.redrive(queue, ids[start : start + REDRIVE_CHUNK])
            for result in answer.get("results", []):
                if result.get("status") == "confirmed":
                    confirmed += 1
                else:
                    failed += 1
                    print(
                        f"hareway: {result['message_id']}: {result.get('error')}", file=sys.stderr
                    )
            missing += len(answer.get("not_found", []))
            print(f"redriven {confirmed + failed} of {len(ids)}", file=sys.stderr, flush=True)
    print(json.dumps({"redriven": confirmed, "failed": failed, "not_found": missing}))
    if failed:
        raise typer.Exit(1)


def status(as_json: JsonOption = False, gateway: GatewayOption = None) -> None:
    """The broker, the store, and every queue you may read: depth, consumers, messages on
    the retry ladder, dead letters."""
    with _client(gateway) as client:
        ready = client.ready()
        document = client.queues()
    document["gateway"] = "ready" if ready else "not ready"
    if as_json:
        print(json.dumps(document))
        return
    print(f"gateway {document['gateway']}, broker {document['broker']}, store {document['store']}")
    columns = ("queue", "type", "messages", "consumers", "retrying", "dead_letters")
    rows = [[_cell(queue.get(column)) for column in columns] for queue in document["queues"]]
    widths = [max(len(column), *(len(row[n]) for row in rows)) for n, column in enumerate(columns)]
    for row in [[column.replace("_", " ") for column in columns], *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)
