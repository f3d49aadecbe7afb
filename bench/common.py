"""What the bench's phases share: a table row, and stopping a process."""

from __future__ import annotations

import asyncio
import signal
import socket
from dataclasses import dataclass


@dataclass
class Row:
    name: str
    value: float
    unit: str
    reference: str = ""
    ratio: float | None = None
    target: str = ""
    ok: bool | None = None


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
