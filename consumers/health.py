"""`--health-port`: a tiny HTTP responder for probes, so `consumers` needs no web framework.

`GET /healthz` answers 200 while the process runs; `GET /readyz` answers 200 while the
broker connection is up and every queue's store commits succeed, else 503; `GET /metrics`
is the Prometheus text format (consumers/metrics.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

_STATUS = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}
_METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def serve_health(
    host: str, port: int, ready: Callable[[], bool], metrics: Callable[[], bytes]
) -> asyncio.Server:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request_line = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # headers: nothing in them changes the answer
            parts = request_line.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else ""
            content_type = "application/json"
            if path == "/healthz":
                status = 200
            elif path == "/readyz":
                status = 200 if ready() else 503
            else:
                status = 200 if path == "/metrics" else 404
            body = f'{{"status": "{_STATUS[status].lower()}"}}\n'.encode()
            if path == "/metrics":
                body, content_type = metrics(), _METRICS_TYPE
            head = (
                f"HTTP/1.1 {status} {_STATUS[status]}\r\n"
                f"Content-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError, asyncio.LimitOverrunError):
            pass  # a probe that did not finish its request, or sent an endless line
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return await asyncio.start_server(answer, host, port)
