"""A ledger of every answer under load, and a checker of the store against it.

`run` publishes unique messages to a gateway at a fixed rate (an open loop: a slow or
failing gateway does not slow the sending down) and writes one line per request: its
message id, when it was sent and answered, and how it ended: the HTTP status, or
`refused` (no connection: the gateway never read it) or `no-answer` (sent, and the
connection ended or timed out without an answer, which a gateway must never do to a
request it read). `check` then holds the store to the ledger: every 2xx stored exactly
once, and says when the failures were.

    python -m bench.ledger run --gateway http://gw:8000 --exchange orders \\
        --routing-key order.created --rate 400 --seconds 60 --out ledger.jsonl
    python -m bench.ledger check --ledger ledger.jsonl --queue orders.persist \\
        --database-url postgresql+asyncpg://...

The cluster suite (tests/cluster/) uses the same two functions in process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import re
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import sqlalchemy as sa

from hareway.store import open_store
from hareway.store.schema import conflicts, messages

# The store's `IN (...)` lists stay well inside every driver's parameter limit.
_CHUNK = 500
_DURATIONS = re.compile(r"dur=([0-9.]+)")
# How long an idle connection is reused: well under a gateway's keep-alive timeout.
_IDLE_S = 2.0


@dataclass(frozen=True, slots=True)
class Entry:
    message_id: str
    sent_at: float  # wall clock, seconds
    answered_at: float
    outcome: str  # "202", "503", ..., "refused", "no-answer"
    # The gateway's own account of its time (its Server-Timing), when it answered.
    gateway_ms: float | None = None

    @property
    def confirmed(self) -> bool:
        return self.outcome.startswith("2")


@dataclass
class Ledger:
    entries: list[Entry] = field(default_factory=list)

    @property
    def confirmed(self) -> list[str]:
        return [entry.message_id for entry in self.entries if entry.confirmed]

    def outcomes(self) -> dict[str, int]:
        counted: dict[str, int] = {}
        for entry in self.entries:
            counted[entry.outcome] = counted.get(entry.outcome, 0) + 1
        return counted

    def failure_windows(self) -> list[tuple[float, float]]:
        """Spans (first failure, first 2xx sent after it) of the failed answers, by send
        time; a run of failures still going at the end closes at the last send."""
        windows: list[tuple[float, float]] = []
        start: float | None = None
        for entry in sorted(self.entries, key=lambda e: e.sent_at):
            if entry.confirmed:
                if start is not None:
                    windows.append((start, entry.sent_at))
                    start = None
            elif start is None:
                start = entry.sent_at
        if start is not None:
            windows.append((start, max(entry.sent_at for entry in self.entries)))
        return windows

    def first_confirmed_after(self, moment: float) -> float | None:
        """How long after `moment` the first request sent then was confirmed."""
        sent = [e.sent_at for e in self.entries if e.confirmed and e.sent_at >= moment]
        return min(sent) - moment if sent else None

    def write(self, path: Path) -> None:
        with path.open("w") as out:
            for entry in self.entries:
                out.write(json.dumps(asdict(entry)) + "\n")

    @classmethod
    def read(cls, path: Path) -> Ledger:
        with path.open() as lines:
            return cls([Entry(**json.loads(line)) for line in lines if line.strip()])


class _Gateway:
    """Keep-alive HTTP/1.1 connections to one gateway, cheap enough that the ledger's own
    CPU never becomes the latency it records (httpx costs milliseconds per request at a
    few hundred in flight)."""

    def __init__(self, url: str, headers: dict[str, str], timeout_s: float) -> None:
        parts = urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self._timeout_s = timeout_s
        # (reader, writer, idle since): kept for less than any server's keep-alive timeout.
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    async def ready(self) -> bool:
        """`GET /readyz` on a connection of its own, as a load balancer's probe."""
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(2):
                reader, writer = await asyncio.open_connection(self._host, self._port)
                writer.write(f"GET /readyz HTTP/1.1\r\nHost: {self._host}\r\n\r\n".encode())
                head = await reader.readuntil(b"\r\n\r\n")
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            return False
        finally:
            # Also when the probe is cancelled mid-read: a writer left to the garbage
            # collector holds its socket until then, and warns.
            if writer is not None:
                writer.close()
        return head[9:12] == b"200"

    async def post(self, path: str, body: bytes) -> tuple[str, float | None]:
        """The outcome (a status, `refused` or `no-answer`) and the gateway's own time."""
        connection = self._reused()
        if connection is None:
            try:
                connection = await asyncio.wait_for(
                    asyncio.open_connection(self._host, self._port), self._timeout_s
                )
            except (OSError, TimeoutError):
                return "refused", None
        reader, writer = connection
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {self._host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n{self._extra}\r\n"
        ).encode() + body
        try:
            writer.write(request)
            async with asyncio.timeout(self._timeout_s):
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
                length = int(_header(head, "content-length") or 0)
                await reader.readexactly(length)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            writer.close()
            return "no-answer", None
        except BaseException:
            writer.close()
            raise
        if _header(head, "connection") == "close":
            writer.close()
        else:
            self._idle.append((reader, writer, time.monotonic()))
        timing = _header(head, "server-timing") or ""
        gateway_ms = sum(float(ms) for ms in _DURATIONS.findall(timing)) or None
        return head[9:12], gateway_ms

    def _reused(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """An idle connection the server cannot have closed for idleness yet (uvicorn's
        keep-alive timeout is 5 s by default): a request written to one it had closed
        would read as `no-answer` although the server never saw it."""
        now = time.monotonic()
        while self._idle:
            reader, writer, since = self._idle.pop()
            if now - since < _IDLE_S and not reader.at_eof():
                return reader, writer
            writer.close()
        return None

    def close(self) -> None:
        for _, writer, _ in self._idle:
            writer.close()


def _header(head: str, name: str) -> str | None:
    marker = head.find(f"\r\n{name}:")
    if marker < 0:
        return None
    start = marker + len(name) + 3
    return head[start : head.find("\r\n", start)].strip()


async def run(
    gateways: Sequence[str],
    exchange: str,
    routing_key: str,
    *,
    rate: float,
    seconds: float | None = None,
    stop: asyncio.Event | None = None,
    api_key: str | None = None,
    timeout_s: float = 15.0,
    in_flight: int = 512,
    balance: bool = False,
) -> Ledger:
    """Publish `rate` messages per second (to the gateways in turn) for `seconds`, or
    until `stop` is set; every request's outcome is in the ledger.

    `balance`: as a load balancer would, probe each gateway's `/readyz` every 0.2 s and
    send only to the ready ones (to all when none is).
    """
    run_id = uuid.uuid4().hex[:10]
    ledger = Ledger()
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    limit = asyncio.Semaphore(in_flight)
    targets = [_Gateway(url, headers, timeout_s) for url in gateways]
    path = f"/v1/exchanges/{exchange}/messages"
    pending: set[asyncio.Task[None]] = set()
    in_rotation = list(targets)

    async def probe() -> None:
        nonlocal in_rotation
        while True:
            ready = [target for target in targets if await target.ready()]
            in_rotation = ready or list(targets)
            await asyncio.sleep(0.2)

    async def one(target: _Gateway, number: int) -> None:
        message_id = f"ledger-{run_id}-{number}"
        body = json.dumps(
            {"routing_key": routing_key, "payload": {"n": number}, "message_id": message_id}
        ).encode()
        async with limit:
            sent = time.time()
            outcome, gateway_ms = await target.post(path, body)
            ledger.entries.append(Entry(message_id, sent, time.time(), outcome, gateway_ms))

    prober = asyncio.create_task(probe()) if balance else None
    started = time.monotonic()
    try:
        for number in itertools.count():
            due = started + number / rate
            if (seconds is not None and due - started >= seconds) or (stop and stop.is_set()):
                break
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            target = in_rotation[number % len(in_rotation)]
            task = asyncio.create_task(one(target, number))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
    finally:
        if prober is not None:
            prober.cancel()
            # Until its probe in flight has closed its connection.
            with contextlib.suppress(asyncio.CancelledError):
                await prober
        for target in targets:
            target.close()
    return ledger


@dataclass(frozen=True, slots=True)
class Report:
    confirmed: int
    lost: list[str]  # confirmed, not stored
    duplicated: list[str]  # stored more than once (also as a conflict)
    unknown_stored: int  # not confirmed (503, no answer), stored anyway: allowed
    outcomes: dict[str, int]

    @property
    def ok(self) -> bool:
        return not self.lost and not self.duplicated


async def check(ledger: Ledger, database_url: str, queue: str) -> Report:
    ids = [entry.message_id for entry in ledger.entries]
    store = await open_store(database_url)
    counts: dict[str, int] = {}
    try:
        async with store.engine.connect() as connection:
            for table in (messages, conflicts):
                for start in range(0, len(ids), _CHUNK):
                    statement = sa.select(table.c.message_id).where(
                        table.c.queue == queue, table.c.message_id.in_(ids[start : start + _CHUNK])
                    )
                    for (message_id,) in await connection.execute(statement):
                        counts[message_id] = counts.get(message_id, 0) + 1
    finally:
        await store.close()
    confirmed = set(ledger.confirmed)
    return Report(
        confirmed=len(confirmed),
        lost=sorted(mid for mid in confirmed if mid not in counts),
        duplicated=sorted(mid for mid, count in counts.items() if count > 1),
        unknown_stored=sum(1 for mid in counts if mid not in confirmed),
        outcomes=ledger.outcomes(),
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ledger", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    publish = commands.add_parser("run", help="publish at a rate and record every answer")
    publish.add_argument("--gateway", action="append", required=True, help="base URL (repeat)")
    publish.add_argument("--exchange", required=True)
    publish.add_argument("--routing-key", required=True)
    publish.add_argument("--rate", type=float, default=200)
    publish.add_argument("--seconds", type=float, default=30)
    publish.add_argument("--api-key")
    publish.add_argument(
        "--balance", action="store_true", help="send only to gateways whose /readyz is 200"
    )
    publish.add_argument("--out", type=Path, required=True)
    verify = commands.add_parser("check", help="hold the store to a ledger")
    verify.add_argument("--ledger", type=Path, required=True)
    verify.add_argument("--database-url", required=True)
    verify.add_argument("--queue", required=True)
    args = parser.parse_args(argv)
    if args.command == "run":
        ledger = asyncio.run(
            run(
                args.gateway,
                args.exchange,
                args.routing_key,
                rate=args.rate,
                seconds=args.seconds,
                api_key=args.api_key,
                balance=args.balance,
            )
        )
        ledger.write(args.out)
        windows = [f"{end - start:.2f}s" for start, end in ledger.failure_windows()]
        print(json.dumps({"outcomes": ledger.outcomes(), "failure_windows": windows}))
        return
    report = asyncio.run(check(Ledger.read(args.ledger), args.database_url, args.queue))
    print(json.dumps(asdict(report) | {"ok": report.ok}, indent=2))
    if not report.ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
