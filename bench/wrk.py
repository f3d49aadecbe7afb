"""wrk (Debian's package) as the closed-loop load, where it is installed.

The Python load generator (`bench/loadgen.py`) spends ~20 µs of CPU per request, a share of
the two cores the gateway and the broker then lack; wrk, written in C, spends a fraction
of that. The bench uses wrk for every closed-loop HTTP row when `wrk` is on PATH and falls
back to the Python generator (saying so) when it is not; the open-loop end-to-end row
needs per-request records and stays on the Python generator.

wrk counts every 2xx/3xx answer as a success: the bench's targets answer 202 (or 200 for
the management plugin), anything else shows as an error.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

Which = Callable[[str], str | None]

_UNITS_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_TIME = r"([\d.]+)(us|ms|s|m|h)"


def find(which: Which = shutil.which) -> str | None:
    """wrk's path, or None: then the bench falls back to the Python load generator."""
    return which("wrk")


def _seconds(number: str, unit: str) -> float:
    return float(number) * _UNITS_S[unit]


def _lua_string(text: str) -> str:
    # Decimal escapes for every byte: no quoting rule of Lua's to get wrong.
    return '"' + "".join(f"\\{byte}" for byte in text.encode()) + '"'


def script(body: str, headers: Mapping[str, str]) -> str:
    """The Lua script that makes every request a POST of `body` with `headers`."""
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(body)}"]
    for name, value in {"Content-Type": "application/json", **headers}.items():
        lines.append(f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}")
    return "\n".join(lines) + "\n"


def parse(output: str) -> dict[str, float]:
    """wrk's `--latency` report as the Python generator's result keys (cpu_s aside)."""
    done = re.search(r"(\d+) requests in " + _TIME, output)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if done is None or rate is None:
        raise ValueError(f"not a wrk report: {output[:200]!r}")
    requests = int(done.group(1))
    elapsed = _seconds(done.group(2), done.group(3))
    percentiles = {
        int(match.group(1)): _seconds(match.group(2), match.group(3))
        for match in re.finditer(r"^\s+(\d+)%\s+" + _TIME, output, re.MULTILINE)
    }
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    failed = int(non_2xx.group(1)) if non_2xx else 0
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    socket_errors = sum(int(group) for group in sockets.groups()) if sockets else 0
    return {
        "requests": float(requests),
        "errors": float(failed + socket_errors),
        "elapsed_s": elapsed,
        "rps": float(rate.group(1)),
        "ok_rps": (requests - failed) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": percentiles.get(50, math.nan) * 1000,
        "p99_ms": percentiles.get(99, math.nan) * 1000,
    }


async def run(
    wrk: str,
    url: str,
    body: str,
    connections: int,
    duration: float,
    work: Path,
    headers: Mapping[str, str] | None = None,
) -> dict[str, float]:
    """One closed-loop run: `connections` keep-alive connections on one thread (on two
    cores a second thread would only take CPU from the gateway) for `duration` seconds,
    whole seconds as wrk takes them. Runs may overlap (the scale phase loads two gateways
    at once): each has its own script and output file and counts only its own CPU."""
    seconds = max(1, round(duration))
    argv = [wrk, "--threads", "1", "--connections", str(connections)]
    argv += ["--duration", f"{seconds}s", "--timeout", "10s", "--latency"]
    code, output, cpu_s = await asyncio.to_thread(
        _run_and_reap, argv, url, script(body, headers or {}), work
    )
    if code != 0:
        raise SystemExit(f"wrk failed ({code}): {output}")
    result = parse(output)
    result["cpu_s"] = cpu_s
    return result


def _run_and_reap(argv: list[str], url: str, lua: str, work: Path) -> tuple[int, str, float]:
    """wrk's exit code, report and CPU seconds: reaped here with wait4, whose resource
    usage is that one child's (a bounded run: wrk stops itself after --duration)."""
    name = uuid.uuid4().hex[:8]
    script_file, report = work / f"wrk-{name}.lua", work / f"wrk-{name}.out"
    script_file.write_text(lua)
    try:
        with report.open("wb") as out:
            process = subprocess.Popen(
                [*argv, "--script", str(script_file), url], stdout=out, stderr=subprocess.STDOUT
            )
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        return (
            process.returncode,
            report.read_text(errors="replace"),
            usage.ru_utime + usage.ru_stime,
        )
    finally:
        script_file.unlink(missing_ok=True)
        report.unlink(missing_ok=True)
