"""Settings that fail fast and clearly: one line naming the variable, exit code 2.

Every process loads its settings class through `load_settings`, checks the URLs it will
use with `check_broker_url` and `check_database_url` before connecting, and runs under
`exit_on_config_error`, which turns a `ConfigError` into that one line. No message here
ever holds a value that could be a secret: pydantic's own messages quote the input
(a raw API key pasted into `API_KEYS`), so only the field and the reason are kept, and
URLs are printed with their passwords masked.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import TypeVar
from urllib.parse import urlsplit

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsError

from hareway.amqp.failover import addresses
from hareway.errors import ConfigError

S = TypeVar("S", bound=BaseSettings)

# Every variable of both settings classes (gateway/settings.py, consumers/settings.py).
# Each process warns about the other's too: one .env or environment often serves both,
# and neither imports the other. tests/test_readme_settings.py keeps it equal to them.
EVERY_SETTING = frozenset(
    {
        "ACCESS_LOG",
        "API_KEYS",
        "BATCH_MAX_BYTES",
        "BATCH_MAX_WAIT_MS",
        "BATCH_SIZE",
        "BODY_TIMEOUT_S",
        "CORS_ALLOW_ORIGINS",
        "DATABASE_URL",
        "DRAIN_DELAY_S",
        "DRAIN_TIMEOUT_S",
        "EXCHANGE_CACHE_TTL_S",
        "EXCHANGE_MISSING_TTL_S",
        "QUEUE_CACHE_TTL_S",
        "QUEUE_MISSING_TTL_S",
        "COMMIT_POLL_S",
        "STREAM_HEARTBEAT_S",
        "STREAM_PAGE_SIZE",
        "HEADER_TIMEOUT_S",
        "HEALTH_HOST",
        "HEALTH_PORT",
        "IDEMPOTENCY_PURGE_S",
        "IDEMPOTENCY_TTL_S",
        "KEEP_ALIVE_TIMEOUT_S",
        "LOG_FORMAT",
        "LOG_LEVEL",
        "MAX_BATCH",
        "MAX_BATCH_BYTES",
        "MAX_CONNECTIONS",
        "MAX_DECODED_BODY_BYTES",
        "MAX_HEADER_BYTES",
        "MAX_IN_FLIGHT",
        "MAX_MESSAGE_BYTES",
        "MAX_REQUEST_HEADERS",
        "MAX_REQUEST_HEADER_BYTES",
        "PREFETCH",
        "PUBLISH_CHANNELS",
        "PUBLISH_TIMEOUT_S",
        "QUEUE_SAMPLE_S",
        "RABBITMQ_URL",
        "RATE_LIMIT_BURST",
        "RATE_LIMIT_PER_S",
        "RETENTION_SWEEP_S",
        "RETRY_AFTER_S",
        "STORE_BACKOFF_INITIAL_S",
        "STORE_BACKOFF_MAX_S",
        "SUMMARY_INTERVAL_S",
        "TOPOLOGY_FILE",
    }
)
# Variables other parts of hareway (or its libraries) read, beside the settings classes.
KNOWN_ELSEWHERE = frozenset(
    {
        "HAREWAY_DEFAULT_RABBITMQ_URL",
        "HAREWAY_RABBITMQ_BIN",
        "HAREWAY_RUN_DIR",
        "HAREWAY_TEST_POSTGRES_URL",
        "HAREWAY_TEST_RABBITMQ_BIN",
        "PROMETHEUS_MULTIPROC_DIR",
    }
)
# Names that are ours (or look like ours) when they start so; `OTEL_*` are the SDK's.
_OUR_PREFIXES = ("HAREWAY_", "RABBIT", "AMQP_")


def variable(field: str) -> str:
    return field.upper()


def load_settings(cls: type[S]) -> S:
    """`cls()` from the environment; a `ConfigError` naming each bad variable otherwise."""
    try:
        return cls()
    except ValidationError as exc:
        raise ConfigError(describe_validation(exc)) from None
    except SettingsError as exc:
        # pydantic-settings' own words name the field but not the variable, and never
        # the value: "error parsing value for field "api_keys" from source ...".
        field = str(exc).split('"')[1] if '"' in str(exc) else ""
        name = variable(field) if field else "a setting"
        raise ConfigError(f"{name}: not valid JSON (a list or object is expected)") from None


def describe_validation(exc: ValidationError) -> str:
    """`PUBLISH_TIMEOUT_S: Input should be a valid number; API_KEYS[0].sha256: ...`,
    without the input values pydantic would quote."""
    parts: list[str] = []
    for error in exc.errors(include_input=False, include_url=False):
        location = [str(part) for part in error["loc"]]
        name = variable(location[0]) if location else "settings"
        for part in location[1:]:
            name += f"[{part}]" if part.isdigit() else f".{part}"
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{name}: {message}")
    return "; ".join(parts)


def check_broker_url(url: str, name: str = "RABBITMQ_URL") -> None:
    """Refuse what can never be a broker address, instead of retrying it forever."""
    try:
        found = addresses(url)
    except ValueError:
        raise ConfigError(f"{name}: names no broker address") from None
    for address in found:
        shown = redact_url(address)
        try:
            parts = urlsplit(address)
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"{name}: {shown!r} is not a URL ({exc})") from None
        if parts.scheme not in ("amqp", "amqps"):
            raise ConfigError(
                f"{name}: {shown!r} is not an amqp:// or amqps:// URL "
                "(several addresses are separated by commas, each with its scheme)"
            )
        if not parts.hostname:
            raise ConfigError(f"{name}: {shown!r} names no host")
        if port == 0:
            raise ConfigError(f"{name}: {shown!r}: port 0")


def check_database_url(url: str, name: str = "DATABASE_URL") -> None:
    """A URL SQLAlchemy can open with an async driver hareway supports."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown = redact_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"{name}: {shown!r} is not a database URL; use sqlite+aiosqlite:///path.db "
            "or postgresql+asyncpg://user:password@host/db"
        ) from None
    if parsed.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        raise ConfigError(
            f"{name}: driver {parsed.drivername!r} is not supported; use sqlite+aiosqlite "
            "or postgresql+asyncpg"
        )
    try:
        parsed.get_dialect()
    except NoSuchModuleError as exc:  # pragma: no cover - both drivers are dependencies
        raise ConfigError(f"{name}: {exc}") from None


def redact_url(text: str) -> str:
    """`text` with the password of every URL in it masked (`user:***@host`)."""
    return ",".join(_redact_one(part) for part in _url_parts(text))


def _url_parts(text: str) -> list[str]:
    try:
        return addresses(text)
    except ValueError:
        return [text]


def _redact_one(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        # No scheme: the part after the last `@`, if any, is all that is safe to show.
        credentials, at, host = url.rpartition("@")
        return f"***@{host}" if at else url
    # The last `@` before the path ends the credentials (a password may hold `@` or `/`).
    credentials, at, host = rest.rpartition("@")
    if not at:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"


def unknown_variables(
    known: Iterable[str], environ: Mapping[str, str] | None = None
) -> list[tuple[str, str | None]]:
    """Variables set in the environment that look like hareway's but are none of them:
    (the name, the setting it is probably meant to be, or None)."""
    environ = os.environ if environ is None else environ
    names = {name.upper() for name in known} | KNOWN_ELSEWHERE
    found: list[tuple[str, str | None]] = []
    for name in sorted(environ):
        upper = name.upper()
        if upper in names or upper.startswith("OTEL_"):
            continue
        close = difflib.get_close_matches(upper, names, n=1, cutoff=0.8)
        if close or upper.startswith(_OUR_PREFIXES):
            found.append((name, close[0] if close else None))
    return found


def setting_names(*classes: type[BaseSettings]) -> set[str]:
    return {variable(field) for cls in classes for field in cls.model_fields}


def unknown_variable_warnings() -> list[str]:
    warnings: list[str] = []
    for name, meant in unknown_variables(EVERY_SETTING):
        hint = f"; did you mean {meant}?" if meant else ""
        warnings.append(f"{name} is set but is no hareway setting, so it is ignored{hint}")
    return warnings


@contextlib.contextmanager
def exit_on_config_error(component: str) -> Iterator[None]:
    """A `ConfigError` inside becomes one line on stderr and exit code 2."""
    try:
        yield
    except ConfigError as exc:
        print(f"{component}: configuration error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
