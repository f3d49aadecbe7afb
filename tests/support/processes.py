"""Running `python -m consumers` and `python -m gateway` as real processes in tests."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx


class Process:
    """A child process whose output goes to a log file the test can read on failure."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path, name: str) -> None:
        self.proc = proc
        self.log = log
        self.name = name

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def wait_for_output(self, needle: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while needle not in self.output():
            if self.proc.returncode is not None:
                raise AssertionError(f"{self.name} exited early:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} never printed {needle!r}:\n{self.output()}")
            await asyncio.sleep(0.05)

    def signal(self, signum: int) -> None:
        if self.proc.returncode is None:
            os.kill(self.proc.pid, signum)

    async def wait(self, timeout_s: float = 30.0) -> int:
        return await asyncio.wait_for(self.proc.wait(), timeout_s)

    async def stop(self) -> int | None:
        """SIGTERM, and SIGKILL if it does not exit in time; by process id, never by name."""
        if self.proc.returncode is None:
            self.signal(signal.SIGTERM)
            try:
                await self.wait(20)
            except TimeoutError:
                self.signal(signal.SIGKILL)
                await self.wait(10)
        return self.proc.returncode


# Settings a test's process must get from the test, never from the shell running pytest
# (a TOPOLOGY_FILE there would declare that topology on the shared broker).
_NOT_INHERITED = ("TOPOLOGY_FILE", "DATABASE_URL", "API_KEYS")


def inherited_env() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name not in _NOT_INHERITED}


async def start(module: str, args: list[str], env: dict[str, str], log: Path) -> Process:
    handle = log.open("ab")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        env={**inherited_env(), **env},
        stdout=handle,
        stderr=asyncio.subprocess.STDOUT,
    )
    handle.close()
    return Process(proc, log, module)


async def start_consumer(queues: list[str], env: dict[str, str], log: Path) -> Process:
    args = [arg for queue in queues for arg in ("--queue", queue)]
    process = await start("consumers", args, env, log)
    await process.wait_for_output("consumer ready")
    return process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def start_gateway(env: dict[str, str], log: Path) -> tuple[Process, str]:
    port = free_port()
    process = await start("gateway", ["--host", "127.0.0.1", "--port", str(port)], env, log)
    base_url = f"http://127.0.0.1:{port}"
    await process.wait_for_output("Application startup complete")
    async with httpx.AsyncClient(base_url=base_url) as client:
        response = await client.get("/healthz")
        assert response.status_code == 200, response.text
    return process, base_url


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout_s: float, what: str, poll_s: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(poll_s)
