"""The gateway process's settings, from the environment (and an optional `.env`)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from hareway.wire import short_string_problem

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class ApiKey(BaseModel):
    """One caller's key: only its SHA-256 is configured, so config and logs never hold it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=255, description="the caller; becomes app_id")
    sha256: str = Field(description="hex SHA-256 of the key the caller sends")
    scopes: tuple[str, ...] = Field(
        default=(), description="publish:<exchange glob>, read:<queue glob>, admin"
    )
    # Requests per second and burst; None takes the gateway's default.
    rate_per_s: float | None = Field(default=None, gt=0)
    burst: int | None = Field(default=None, ge=1)

    @field_validator("name")
    @classmethod
    def _name_fits(cls, name: str) -> str:
        # It is the app_id of every message (an AMQP short string) and the namespace of
        # the key's Idempotency-Keys (`<name>:<key>`), which a colon would make ambiguous.
        problem = short_string_problem(name)
        if problem is not None:
            raise ValueError(f"an AMQP short string: {problem}")
        if ":" in name:
            raise ValueError("no colon: it separates the name from an Idempotency-Key")
        return name

    @field_validator("sha256")
    @classmethod
    def _is_a_digest(cls, value: str) -> str:
        value = value.lower()
        if not _SHA256_HEX.fullmatch(value):
            raise ValueError("must be 64 hex digits: the SHA-256 of the key, never the key")
        return value

    @field_validator("scopes")
    @classmethod
    def _known_scopes(cls, scopes: tuple[str, ...]) -> tuple[str, ...]:
        for scope in scopes:
            if scope != "admin" and not scope.startswith(("publish:", "read:")):
                raise ValueError(f"unknown scope {scope!r}: publish:<glob>, read:<glob>, admin")
        return scopes


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    rabbitmq_url: str = "amqp://guest:guest@localhost:5672/"
    database_url: str = "sqlite+aiosqlite:///./hareway.db"
    topology_file: str | None = None

    max_message_bytes: int = Field(default=1024 * 1024, ge=1)
    max_batch: int = Field(default=1000, ge=1)
    # Longest a request waits for the broker (connection, channel, confirm) before a 503.
    publish_timeout_s: float = Field(default=5.0, gt=0)
    # Confirm channels publishes are spread over; confirms are in flight on all of them.
    publish_channels: int = Field(default=4, ge=1, le=64)
    # On SIGTERM, how long /readyz answers 503 (and answers close their connections) while
    # the gateway still serves, before it stops accepting: a load balancer's time to notice.
    drain_delay_s: float = Field(default=5.0, ge=0)
    # How long a client should wait before retrying a 503.
    retry_after_s: int = Field(default=1, ge=0)
    # Seconds an exchange found on the broker is trusted to exist without asking again.
    exchange_cache_ttl_s: float = Field(default=30.0, ge=0)
    # Seconds an exchange found missing (or refused by the broker) is answered 404 (403)
    # without asking again: a flood of publishes to made-up names costs one lookup each.
    exchange_missing_ttl_s: float = Field(default=2.0, ge=0)
    # Seconds a queue found on the broker (or in the store) is trusted to exist, and one
    # found nowhere is answered 404 without asking again, for reads (gateway/queues.py).
    queue_cache_ttl_s: float = Field(default=30.0, ge=0)
    queue_missing_ttl_s: float = Field(default=2.0, ge=0)
    # Long polls and streams (gateway/announcer.py): on SQLite, how often the gateway looks
    # for new commits while anyone waits (PostgreSQL announces them: LISTEN/NOTIFY).
    commit_poll_s: float = Field(default=0.05, gt=0, le=5)
    # Seconds between a stream's heartbeats (SSE comment lines) that keep proxies from
    # closing an idle stream; and how many messages a stream reads from the store at once.
    stream_heartbeat_s: float = Field(default=15.0, gt=0)
    stream_page_size: int = Field(default=100, ge=1, le=1000)
    # A batch body may be larger than one message; it is capped while it streams in too.
    max_batch_bytes: int = Field(default=16 * 1024 * 1024, ge=1)
    # Encoded size of a message's headers; well under RabbitMQ's 128 KiB frame.
    max_header_bytes: int = Field(default=16 * 1024, ge=1)
    # Publishes waiting for a confirm, across all requests; more are refused with 503.
    max_in_flight: int = Field(default=10_000, ge=1)
    # How long an Idempotency-Key's answer is kept, and so recognised.
    idempotency_ttl_s: float = Field(default=24 * 3600, gt=0)
    # How often expired keys are deleted from the store.
    idempotency_purge_s: float = Field(default=600, gt=0)
    # API keys, as JSON in API_KEYS; none configured means no authentication at all.
    api_keys: tuple[ApiKey, ...] = ()
    # Per-key token bucket when a key names none; 0 means unlimited.
    rate_limit_per_s: float = Field(default=0, ge=0)
    rate_limit_burst: int = Field(default=100, ge=1)
    log_level: str = "INFO"
    # Request line plus headers in bytes; more is 431 (httptools would buffer any size).
    max_request_header_bytes: int = Field(default=32 * 1024, ge=1024)
    # Header fields per request; more is 431, before a huge list is built.
    max_request_headers: int = Field(default=100, ge=1)
    # Connection (or a next request's first byte) to complete headers, else 408: slowloris.
    header_timeout_s: float = Field(default=10.0, gt=0)
    # Complete headers to complete body, else 408; allow the largest body at the slowest client.
    body_timeout_s: float = Field(default=30.0, gt=0)
    # Open connections per gateway process; a new one beyond it gets 503 at once, unread.
    max_connections: int = Field(default=1024, ge=1)
    # Idle seconds between requests before a keep-alive connection closes (uvicorn's own).
    # Longer than the idle expiry of the clients' pools (httpx 5 s, aiohttp 15 s): a client
    # must drop an idle connection before the gateway does, or a request it writes as the
    # gateway closes is reset, neither answered nor safe to send again.
    keep_alive_timeout_s: int = Field(default=20, ge=1)

    # Operability (docs/operations.md). `console` for a terminal, `json`: one object a line.
    log_format: Literal["console", "json"] = "console"
    # One line per request: method, path, status, duration, request id, exchange, message id.
    access_log: bool = False
    # Browser callers (docs/browser.md): origins allowed to call /v1 cross-origin, comma
    # separated (`https://app.example.com,http://localhost:3000`), or `*` for any; empty,
    # the default, builds no CORS at all.
    cors_allow_origins: Annotated[tuple[str, ...], NoDecode] = ()

    @field_validator("cors_allow_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("cors_allow_origins")
    @classmethod
    def _origins(cls, origins: tuple[str, ...]) -> tuple[str, ...]:
        if "*" in origins:
            if len(origins) > 1:
                raise ValueError("`*` (any origin) stands alone")
            return origins
        return tuple(dict.fromkeys(_origin(origin) for origin in origins))


def _origin(text: str) -> str:
    """An origin as browsers send it: `scheme://host[:port]`, lower case, no default port."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r} is not an origin (scheme://host[:port])") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{text!r} is not an origin: http(s)://host[:port]")
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{text!r} is not an origin: scheme://host[:port], nothing after it")
    scheme, host = parts.scheme.lower(), parts.hostname
    if ":" in host:
        host = f"[{host}]"  # IPv6
    default = {"http": 80, "https": 443}[scheme]
    return f"{scheme}://{host}" + (f":{port}" if port is not None and port != default else "")
