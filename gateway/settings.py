"""The gateway process's settings, from the environment (and an optional `.env`)."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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
    # How long a client should wait before retrying a 503.
    retry_after_s: int = Field(default=1, ge=0)
    # Seconds an exchange found on the broker is trusted to exist without asking again.
    exchange_cache_ttl_s: float = Field(default=30.0, ge=0)
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
