"""The bench's load: wrk's report parsed, its Lua script sending the body as given, and
the Python load generator chosen (and working) where wrk is not installed."""

from __future__ import annotations

import asyncio
import math
import re
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bench import wrk
from bench.__main__ import Bench
from bench.peers import management_url
from tests.support.tcp_server import listening

FIXTURES = Path(__file__).parent / "fixtures" / "wrk"


@pytest.mark.timeout(10)
def test_a_captured_report_of_202s_parses() -> None:
    result = wrk.parse((FIXTURES / "captured-202.txt").read_text())
    assert result["requests"] == 92
    assert result["elapsed_s"] == pytest.approx(1.0)
    assert result["rps"] == pytest.approx(91.81)
    assert result["ok_rps"] == pytest.approx(92.0)
    assert result["errors"] == 0
    assert result["p50_ms"] == pytest.approx(43.89)
    assert result["p99_ms"] == pytest.approx(44.12)


@pytest.mark.timeout(10)
def test_non_2xx_answers_are_errors_not_throughput() -> None:
    result = wrk.parse((FIXTURES / "captured-400.txt").read_text())
    assert result["errors"] == 92
    assert result["ok_rps"] == 0


@pytest.mark.timeout(10)
def test_socket_errors_and_every_time_unit() -> None:
    # wrk's own line formats (src/wrk.c), composed: socket errors, µs and s percentiles.
    result = wrk.parse((FIXTURES / "composed-errors.txt").read_text())
    assert result["errors"] == 7 + 3
    assert result["ok_rps"] == pytest.approx((25113 - 7) / 6.01)
    assert result["p50_ms"] == pytest.approx(0.95)
    assert result["p99_ms"] == pytest.approx(1200.0)


@pytest.mark.timeout(10)
def test_a_report_without_latency_percentiles_gives_nan_not_zero() -> None:
    text = (FIXTURES / "captured-202.txt").read_text()
    result = wrk.parse(re.sub(r"(?m)^\s+\d+%.*\n", "", text))
    assert math.isnan(result["p99_ms"])


@pytest.mark.timeout(10)
def test_what_is_not_a_report_is_refused() -> None:
    with pytest.raises(ValueError, match="not a wrk report"):
        wrk.parse("unable to connect to 127.0.0.1:1 Connection refused\n")


@pytest.mark.timeout(10)
def test_the_lua_script_carries_body_and_headers_byte_for_byte() -> None:
    body = '{"payload": "]] \\" é \\n"}'
    lua = wrk.script(body, {"Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="})

    def decoded(literal: str) -> str:
        return bytes(int(code) for code in literal.split("\\")[1:]).decode()

    strings = [decoded(literal) for literal in re.findall(r'"((?:\\\d+)+)"', lua)]
    assert 'wrk.method = "POST"' in lua
    assert strings == [
        body,
        "Content-Type",
        "application/json",
        "Authorization",
        "Basic Z3Vlc3Q6Z3Vlc3Q=",
    ]


class _Server:
    """A keep-alive HTTP/1.1 server answering every POST with 202, counting bodies."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])  # type: ignore[index]
                self.bodies.append(await reader.readexactly(length))
                writer.write(b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, _Server]]:
    target = _Server()
    async with listening(target.handle) as port:
        yield f"http://127.0.0.1:{port}/v1/exchanges/x/messages", target


def _bench(tmp_path: Path, which: wrk.Which) -> Bench:
    return Bench("amqp://guest:guest@127.0.0.1:5672/", None, 1.0, 1, tmp_path, which=which)


@pytest.mark.timeout(60)
async def test_without_wrk_the_python_generator_loads_and_says_so(
    tmp_path: Path, server: tuple[str, _Server]
) -> None:
    url, target = server
    bench = _bench(tmp_path, lambda _name: None)
    assert bench.wrk is None
    assert "Python load generator" in bench.load_generator
    assert "wrk is not installed" in bench.load_generator
    result = await bench.load(url, '{"a": 1}', 2, 0.5, headers={"X-Bench": "1"})
    assert result["ok_rps"] > 0
    assert result["errors"] == 0
    assert target.bodies
    assert set(target.bodies) == {b'{"a": 1}'}


@pytest.mark.timeout(60)
async def test_with_wrk_on_path_its_report_is_the_result(tmp_path: Path) -> None:
    # A stand-in `wrk` that checks its arguments and prints a captured report: which
    # binary runs is the lookup's choice, whatever is installed on this machine.
    fake = tmp_path / "wrk"
    fake.write_text(
        "#!/bin/sh\n"
        'case "$*" in *"--connections 64 --duration 3s"*"--latency --script"*) ;; '
        "*) echo bad arguments: $* >&2; exit 2;; esac\n"
        f"cat {FIXTURES / 'captured-202.txt'}\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    bench = _bench(tmp_path, lambda name: str(fake) if name == "wrk" else None)
    assert bench.wrk == str(fake)
    assert bench.load_generator.startswith("wrk")
    result = await bench.load("http://127.0.0.1:1/x", "{}", 64, 2.6)
    assert result["ok_rps"] == pytest.approx(92.0)
    assert result["cpu_s"] >= 0
    assert not _leftovers(tmp_path), "its script and report are removed"


def _leftovers(work: Path) -> list[Path]:
    return list(work.glob("wrk-*"))


@pytest.mark.timeout(60)
async def test_wrk_failing_stops_the_bench_with_its_output(tmp_path: Path) -> None:
    fake = tmp_path / "wrk"
    fake.write_text("#!/bin/sh\necho unable to connect >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    bench = _bench(tmp_path, lambda _name: str(fake))
    with pytest.raises(SystemExit, match="wrk failed \\(1\\): unable to connect"):
        await bench.load("http://127.0.0.1:1/x", "{}", 4, 1)


@pytest.mark.timeout(20)
async def test_the_management_probe_finds_nothing_where_nothing_answers() -> None:
    listening = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    listening.close()
    await listening.wait_closed()  # a port that was just free: nothing listens there
    assert await management_url("amqp://guest:guest@127.0.0.1:5672/", port) is None
    assert await management_url("amqp://guest:guest@rabbit.example:5672/", port) is None


@pytest.mark.timeout(20)
async def test_the_management_probe_finds_an_api_that_answers_200() -> None:
    seen: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
        await writer.drain()
        writer.close()

    listening = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    try:
        found = await management_url("amqp://guest:guest@127.0.0.1:5672/", port)
    finally:
        listening.close()
        await listening.wait_closed()
    assert found == f"http://127.0.0.1:{port}"
    assert seen[0].startswith(b"GET /api/overview ")
    assert b"\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n" in seen[0]  # guest:guest
