"""A PostgreSQL of the test's own (Debian's binaries, its own port and data directory), so a
test can stop it mid-stream without touching the machine's PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path

from tests.support.processes import free_port

BIN = Path(os.environ.get("HAREWAY_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
USER = "postgres"


class PgNode:
    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.data = directory / "data"
        self.port = port
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"

    @classmethod
    async def start(cls) -> PgNode:
        # Not under pytest's tmp_path: that is private to root, and initdb refuses root.
        directory = Path(tempfile.mkdtemp(prefix="hareway-pg-"))
        shutil.chown(directory, USER, USER)
        node = cls(directory, free_port())
        await node._as_postgres(
            BIN / "initdb", "-D", node.data, "-U", "postgres", "-A", "trust", "--no-sync"
        )
        await node.resume()
        return node

    async def resume(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
        log = self.directory / "server.log"
        await self._as_postgres(
            BIN / "pg_ctl", "-D", self.data, "-o", options, "-l", log, "-w", "start"
        )

    async def crash(self) -> None:
        """Stop at once, as a crash or a network cut would: no goodbye to clients."""
        await self._as_postgres(BIN / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")

    async def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            await self.crash()
        shutil.rmtree(self.directory, ignore_errors=True)

    async def _as_postgres(self, *command: object) -> None:
        process = await asyncio.create_subprocess_exec(
            "runuser",
            "-u",
            USER,
            "--",
            *map(str, command),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"{command[0]} failed ({process.returncode}):\n{output.decode()}")
