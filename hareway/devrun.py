"""`make run`: the gateway and one consumer, on a RabbitMQ node of their own when none answers.

With `RABBITMQ_URL` set, that broker is used, and one that does not answer stops the run
with the message that says how to get one. Without it, the default address
(`HAREWAY_DEFAULT_RABBITMQ_URL`, else `amqp://guest:guest@localhost:5672/`) is tried, and
when nothing answers there and Debian's `rabbitmq-server` is installed, a private node is
started under `.hareway/rabbitmq/` (its own node name, ports, data and Erlang cookie, the
management UI on), as the tests start theirs, and stopped by its process id on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from hareway import broker

DEFAULT_URL = "amqp://guest:guest@localhost:5672/"
RABBITMQ_BIN = Path(os.environ.get("HAREWAY_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LocalNode:
    """A RabbitMQ node of `make run`'s own, under `base`."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = _free_port()
        self.management_port = _free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self.management_url = f"http://127.0.0.1:{self.management_port}/"
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return (RABBITMQ_BIN / "rabbitmq-server").exists()

    def start(self, timeout_s: float = 90) -> None:
        base = self.base
        base.mkdir(parents=True, exist_ok=True)
        (base / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\n"
            f"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {self.management_port}\n"
        )
        (base / "enabled_plugins").write_text("[rabbitmq_management].\n")
        (base / "rabbitmq-env.conf").write_text("")
        cookie = base / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(uuid.uuid4().hex.upper())
            cookie.chmod(0o400)
        env = {
            **os.environ,
            "HOME": str(base),
            "RABBITMQ_NODENAME": "hareway-run@localhost",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(_free_port()),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }
        with (base / "server.out").open("ab") as log:
            self._process = subprocess.Popen(
                [str(RABBITMQ_BIN / "rabbitmq-server")],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as one
            )
        deadline = time.monotonic() + timeout_s
        while True:
            if self._process.poll() is not None:
                raise SystemExit(f"run: the RabbitMQ node exited; see {base / 'server.out'}")
            try:
                asyncio.run(broker.check(self.url, timeout_s=2))
                return
            except broker.BrokerUnreachable:
                if time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit(
                        f"run: the RabbitMQ node did not answer in {timeout_s}s"
                    ) from None
                time.sleep(0.5)

    def stop(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(30)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def pick_broker(run_dir: Path) -> tuple[str, LocalNode | None]:
    explicit = os.environ.get("RABBITMQ_URL")
    url = explicit or os.environ.get("HAREWAY_DEFAULT_RABBITMQ_URL") or DEFAULT_URL
    try:
        asyncio.run(broker.check(url, timeout_s=3))
        return url, None
    except broker.BrokerRefused as exc:
        print(f"run: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except broker.BrokerUnreachable as exc:
        if explicit or not LocalNode.available():
            print(exc, file=sys.stderr)
            raise SystemExit(1) from None
    print(f"run: no RabbitMQ answers at {broker.redact(url)}; starting one under {run_dir}")
    node = LocalNode(run_dir / "rabbitmq")
    node.start()
    print(f"run: RabbitMQ at {node.url}, management UI at {node.management_url} (guest/guest)")
    return node.url, node


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m hareway.devrun")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", default="8000")
    parser.add_argument("--queue", default="orders.persist")
    parser.add_argument("--run-dir", default=os.environ.get("HAREWAY_RUN_DIR", ".hareway"))
    args = parser.parse_args()
    url, node = pick_broker(Path(args.run_dir).resolve())
    env = {**os.environ, "RABBITMQ_URL": url}
    children: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        python = sys.executable
        children.append(
            subprocess.Popen([python, "-m", "consumers", "--queue", args.queue], env=env)
        )
        children.append(
            subprocess.Popen(
                [python, "-m", "gateway", "--host", args.host, "--port", args.port], env=env
            )
        )
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.2)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(60)
            except subprocess.TimeoutExpired:
                child.kill()
        if node is not None:
            print("run: stopping the RabbitMQ node")
            node.stop()
    codes = [child.returncode for child in children]
    raise SystemExit(0 if stopping else max((code for code in codes if code), default=0))


if __name__ == "__main__":
    main()
