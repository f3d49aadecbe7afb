"""CPU seconds used by the processes of a phase: the gateway (with its workers) and the broker.

Throughput on a shared 2-core machine says how fast; CPU per request says where the cores
went. With both, a missed target can be told apart from a ceiling: if gateway, broker and
load generator together need C µs of CPU per request, two cores allow at most 2e6 / C
requests per second, whatever the code does.
"""

from __future__ import annotations

import os
from pathlib import Path

_PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_LISTEN = "0A"


def tree_cpu_s(pid: int) -> float:
    """User + system seconds of `pid` and its living descendants (uvicorn's workers)."""
    total = 0.0
    for member in [pid, *_descendants(pid)]:
        fields = _stat(member)
        if fields is not None:
            total += (int(fields[11]) + int(fields[12])) / _TICKS
    return total


def listening_pid(port: int) -> int | None:
    """The process listening on TCP `port` on this machine (the broker), if it can be seen."""
    inodes = set()
    for table in ("net/tcp", "net/tcp6"):
        try:
            lines = (_PROC / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == _LISTEN and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{inode}]")
    if not inodes:
        return None
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(entry.name)
        except OSError:
            continue
    return None


def _stat(pid: int) -> list[str] | None:
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces; fields after it are fixed. Index 0 is the state.
    return text.rsplit(")", 1)[1].split()


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
