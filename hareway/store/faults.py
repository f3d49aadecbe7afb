"""The one classifier of store errors: the store is out (retry later), or this data can
never be stored (refuse it), or neither is known.

It reads the database's own words, never the Python class alone: SQLite raises
`OperationalError` for a locked file and for a missing table alike, and SQLAlchemy wraps
both drivers' errors in the same few classes. PostgreSQL names each failure with an
SQLSTATE whose class (the first two characters) says what kind it is; SQLite gives each
an extended result code whose low byte is the primary code.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator
from typing import Final

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from hareway.store.errors import StoreError, StoreRefused, StoreUnavailable


class Fault(enum.Enum):
    # The store cannot take writes now: connection lost, server shutting down, disk full,
    # file locked, deadlock. Retry the same thing later.
    OUTAGE = "outage"
    # These values can never be stored: NUL in a text column, a value too long, a broken
    # constraint, a statement that names no table. Retrying changes nothing.
    DATA = "data"
    # Neither is known: an error from code, not from the database.
    OTHER = "other"


# PostgreSQL classes that mean "not now": connection exception, transaction rollback
# (deadlock, serialization), object not in prerequisite state (lock not available),
# insufficient resources, operator intervention, system error, configuration file error,
# internal error. Every other class (22 data, 23 integrity, 42 syntax or undefined, ...)
# is about the statement or its values.
_PG_OUTAGE_CLASSES: Final = frozenset({"08", "40", "53", "55", "57", "58", "F0", "XX"})
_PG_OUTAGE_CODES: Final = frozenset({"25P03"})  # idle_in_transaction_session_timeout

# SQLite primary result codes about the values or the statement; the rest (BUSY, LOCKED,
# NOMEM, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, PROTOCOL, NOTADB, ...) are about the
# database file and its surroundings.
_SQLITE_DATA_CODES: Final = frozenset(
    {
        1,  # SQLITE_ERROR: SQL error, missing table or column
        18,  # SQLITE_TOOBIG
        19,  # SQLITE_CONSTRAINT
        20,  # SQLITE_MISMATCH
        25,  # SQLITE_RANGE
    }
)


def classify(exc: BaseException) -> Fault:
    for cause in _causes(exc):
        # Already the store's own (from any store, the in-memory one included).
        if isinstance(cause, StoreUnavailable):
            return Fault.OUTAGE
        if isinstance(cause, StoreRefused):
            return Fault.DATA
        if isinstance(cause, DBAPIError) and cause.connection_invalidated:
            return Fault.OUTAGE
        sqlstate = getattr(cause, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate:
            outage = sqlstate[:2] in _PG_OUTAGE_CLASSES or sqlstate in _PG_OUTAGE_CODES
            return Fault.OUTAGE if outage else Fault.DATA
        code = getattr(cause, "sqlite_errorcode", None)
        if isinstance(code, int):
            return Fault.DATA if code & 0xFF in _SQLITE_DATA_CODES else Fault.OUTAGE
    for cause in _causes(exc):
        if isinstance(cause, UnicodeError | OverflowError | RecursionError):
            # The driver could not encode a value (a lone surrogate, an integer past 64
            # bits, headers nested past Python's recursion limit) before the database saw it.
            return Fault.DATA
        if isinstance(cause, OperationalError | InterfaceError | OSError):
            return Fault.OUTAGE
    return Fault.OTHER


def is_outage(exc: BaseException) -> bool:
    return classify(exc) is Fault.OUTAGE


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The error, then what it wraps (SQLAlchemy's `orig`, then `__cause__`)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        yield cause
        orig = getattr(cause, "orig", None)
        cause = orig if isinstance(orig, BaseException) else cause.__cause__


@contextlib.contextmanager
def mapped() -> Iterator[None]:
    """Raise a database error that passes through as the store's own: `StoreUnavailable`
    (outage) or `StoreRefused` (data). An error from code, neither, goes on as it is."""
    try:
        yield
    except StoreError:
        raise
    except Exception as exc:
        fault = classify(exc)
        if fault is Fault.OUTAGE:
            raise StoreUnavailable(describe(exc)) from exc
        if fault is Fault.DATA:
            raise StoreRefused(describe(exc)) from exc
        raise


def describe(exc: BaseException) -> str:
    """The driver's own words, first line only: never the SQL and parameters SQLAlchemy
    appends, which can hold other messages' data."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else ''}"[:300]
