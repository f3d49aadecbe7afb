"""Making a SQLite store's file unusable under the connections that have it open."""

from __future__ import annotations

from pathlib import Path


def ruin(database: Path) -> None:
    """Overwrite the file with bytes that are no database, empty its write-ahead log and
    zero its shared index: an open connection's next transaction sees the ruin (SQLITE_NOTADB)
    instead of pages it had cached."""
    database.write_bytes(b"not a database " * 512)
    wal, shm = Path(f"{database}-wal"), Path(f"{database}-shm")
    if wal.exists():
        wal.write_bytes(b"")
    if shm.exists():
        shm.write_bytes(b"\0" * shm.stat().st_size)
