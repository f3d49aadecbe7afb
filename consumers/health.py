"""`--health-port`: a tiny HTTP responder for probes, so `consumers` needs no web framework.

`GET /healthz` answers 200 while the process runs; `GET /readyz` answers 200 while the
broker connection is up and every queue's store commits succeed, else 503.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

_STATUS = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}


async def serve_health(host: str, port: int, ready: Callable[[], bool]) -> asyncio.Server:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request_line = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # headers: nothing in them changes the answer
            parts = request_line.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else ""
            if path == "/healthz":
                status = 200
            elif path == "/readyz":
                status = 200 if ready() else 503
            else:
                status = 404
            body = f'{{"status": "{_STATUS[status].lower()}"}}\n'.encode()
            head = (
                f"HTTP/1.1 {status} {_STATUS[status]}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return await asyncio.start_server(answer, host, port)
