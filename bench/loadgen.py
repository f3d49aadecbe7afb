"""An HTTP/1.1 keep-alive load generator, run in a process of its own.

Closed loop (`--connections N --duration S`): each connection sends its next request as soon
as the previous answer arrived. Open loop (`--rate R --count N`): requests start on a fixed
schedule whatever the answers do, so a slow server shows as latency, not as fewer requests.
Prints one JSON object: counts, throughput, latency percentiles, and per-request records
in open-loop mode. Only loopback targets are accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

_LOOPBACK = ("127.", "localhost", "::1")


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    records: list[tuple[str, float, float]] = field(default_factory=list)


def build_request(host: str, path: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


async def exchange_one(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    marker = head.find(b"content-length:")
    if marker < 0:
        marker = head.lower().find(b"content-length:")
    length = int(head[marker + 15 : head.find(b"\r\n", marker)])
    await reader.readexactly(length)
    return status


async def closed_loop(
    host: str, port: int, request: bytes, connections: int, duration: float, expect: int
) -> Tally:
    tally = Tally()
    deadline = time.perf_counter() + duration

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    status = await exchange_one(reader, writer, request)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    tally.errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                tally.latencies.append(time.perf_counter() - started)
                tally.statuses[status] = tally.statuses.get(status, 0) + 1
                if status != expect:
                    tally.errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return tally


async def open_loop(
    host: str,
    port: int,
    path: str,
    body_template: str,
    rate: float,
    count: int,
    connections: int,
    expect: int,
) -> Tally:
    """Request i starts at start + i/rate; its body's {id} is `e2e-i`."""
    tally = Tally()
    pending: asyncio.Queue[int] = asyncio.Queue()
    start = time.perf_counter()
    wall_start = time.time()

    async def schedule() -> None:
        for index in range(count):
            delay = start + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.put_nowait(index)
        for _ in range(connections):
            pending.put_nowait(-1)

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        while (index := await pending.get()) >= 0:
            message_id = f"e2e-{index}"
            body = body_template.replace("{id}", message_id).encode()
            sent = time.perf_counter()
            status = await exchange_one(reader, writer, build_request(host, path, body))
            done = time.perf_counter()
            tally.latencies.append(done - sent)
            tally.statuses[status] = tally.statuses.get(status, 0) + 1
            if status != expect:
                tally.errors += 1
            # Wall-clock send time, comparable with the store's persisted_at.
            tally.records.append((message_id, wall_start + (sent - start), done - sent))
        writer.close()

    await asyncio.gather(schedule(), *(connection() for _ in range(connections)))
    return tally


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", required=True, help="request body; {id} is replaced in open loop")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--expect", type=int, default=202)
    parser.add_argument(
        "--header", action="append", default=[], help="'Name: value', sent with every request"
    )
    args = parser.parse_args()
    parts = urlsplit(args.url)
    host, port = parts.hostname or "", parts.port or 80
    if not host.startswith(_LOOPBACK):
        sys.exit("loadgen: only loopback targets")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    started = time.perf_counter()
    if args.rate:
        tally = asyncio.run(
            open_loop(
                host,
                port,
                parts.path,
                args.body,
                args.rate,
                args.count,
                args.connections,
                args.expect,
            )
        )
    else:
        extra = "".join(f"{header}\r\n" for header in args.header)
        request = build_request(host, parts.path, args.body.encode(), extra)
        tally = asyncio.run(
            closed_loop(host, port, request, args.connections, args.duration, args.expect)
        )
    elapsed = time.perf_counter() - started
    print(
        json.dumps(
            {
                "requests": len(tally.latencies),
                "errors": tally.errors,
                "statuses": tally.statuses,
                "elapsed_s": elapsed,
                "rps": len(tally.latencies) / elapsed,
                # Only answers with the expected status count as throughput.
                "ok_rps": tally.statuses.get(args.expect, 0) / elapsed,
                "p50_ms": percentile(tally.latencies, 0.50) * 1000,
                "p99_ms": percentile(tally.latencies, 0.99) * 1000,
                "records": tally.records,
                # Its own CPU, so the bench can say what the load itself cost.
                "cpu_s": time.process_time(),
            }
        )
    )


if __name__ == "__main__":
    main()
