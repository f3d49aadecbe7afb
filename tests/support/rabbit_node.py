"""A RabbitMQ node of a test's own, for fault tests: kill it, restart it, raise its alarms.

It runs Debian's start script directly (the one on PATH switches user) with its own node
name, ports, data and log directories, config and Erlang cookie, so the system broker is
never touched. It is stopped by process id, never by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
import uuid
from pathlib import Path

import aio_pika

from tests.support.processes import free_port

RABBITMQ_BIN = Path(os.environ.get("HAREWAY_TEST_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))


class RabbitNodeError(Exception):
    pass


class RabbitNode:
    def __init__(
        self,
        base: Path,
        *,
        name: str | None = None,
        cookie: str | None = None,
        config: tuple[str, ...] = (),
    ) -> None:
        """`name`, `cookie` and `config` (more rabbitmq.conf lines) for a cluster's nodes."""
        if not (RABBITMQ_BIN / "rabbitmq-server").exists():
            raise RabbitNodeError(
                f"no rabbitmq-server in {RABBITMQ_BIN}: install Debian's rabbitmq-server "
                "(apt-get install rabbitmq-server) or set HAREWAY_TEST_RABBITMQ_BIN"
            )
        self.base = base
        self.name = name or f"hw{uuid.uuid4().hex[:8]}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self._process: asyncio.subprocess.Process | None = None
        base.mkdir(parents=True, exist_ok=True)
        lines = (f"listeners.tcp.1 = 127.0.0.1:{self.port}", *config)
        (base / "rabbitmq.conf").write_text("".join(f"{line}\n" for line in lines))
        (base / "enabled_plugins").write_text("[].\n")
        (base / "rabbitmq-env.conf").write_text("")
        cookie_file = base / ".erlang.cookie"
        cookie_file.write_text(cookie or uuid.uuid4().hex.upper())
        cookie_file.chmod(0o400)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(self.base),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.base / "rabbitmq.pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    @classmethod
    async def start(cls, base: Path, timeout_s: float = 60.0) -> RabbitNode:
        node = cls(base)
        await node.start_again(timeout_s)
        return node

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start_again(self, timeout_s: float = 60.0) -> None:
        """Start the node (again, on the same data directory and port)."""
        log = (self.base / "server.out").open("ab")
        self._process = await asyncio.create_subprocess_exec(
            str(RABBITMQ_BIN / "rabbitmq-server"),
            env=self.env,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # so a test's Ctrl-C does not reach it first
        )
        log.close()
        await self._wait_until_it_answers(timeout_s)

    async def _wait_until_it_answers(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self._process is not None and self._process.returncode is not None:
                raise RabbitNodeError(f"node {self.name} exited:\n{self.output()}")
            try:
                # The port first: aiormq logs an error for every refused connection.
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                connection = await aio_pika.connect(self.url, timeout=2)
            except Exception:
                if time.monotonic() > deadline:
                    raise RabbitNodeError(
                        f"node {self.name} did not answer in {timeout_s}s:\n{self.output()}"
                    ) from None
                await asyncio.sleep(0.3)
                continue
            await connection.close()
            return

    def output(self) -> str:
        path = self.base / "server.out"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    async def kill(self) -> None:
        """SIGKILL the node's process group (script, Erlang VM, helpers), as a crash would."""
        if self._process is None or self._process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        await self._process.wait()
        await self._wait_until_refused(10)

    async def _wait_until_refused(self, timeout_s: float) -> None:
        """The script exits before the Erlang VM it ran is reaped: a crash is complete once
        the AMQP port refuses connections."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                return
            writer.close()
            await writer.wait_closed()
            await asyncio.sleep(0.05)
        raise AssertionError(f"{self.name} still accepts connections {timeout_s} s after SIGKILL")

    def freeze(self) -> None:
        """SIGSTOP the node's processes: alive to TCP, answering nothing (a hung machine)."""
        assert self._process is not None
        os.killpg(self._process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self._process is not None
        os.killpg(self._process.pid, signal.SIGCONT)

    async def stop(self) -> None:
        """Stop the node cleanly (SIGTERM to its process group), SIGKILL if it lingers."""
        if self._process is None or self._process.returncode is not None:
            return
        try:
            os.killpg(self._process.pid, signal.SIGTERM)
            await asyncio.wait_for(self._process.wait(), 30)
        except ProcessLookupError:
            return
        except TimeoutError:
            await self.kill()

    async def ctl(self, *args: str, timeout_s: float = 60.0) -> str:
        """Run `rabbitmqctl -n NODE ARGS...` against this node and return its output."""
        proc = await asyncio.create_subprocess_exec(
            str(RABBITMQ_BIN / "rabbitmqctl"),
            "-n",
            self.name,
            *args,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
        text = out.decode(errors="replace")
        if proc.returncode != 0:
            raise RabbitNodeError(f"rabbitmqctl {' '.join(args)} failed:\n{text}")
        return text

    def remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)
