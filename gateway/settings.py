"""The gateway process's settings, from the environment (and an optional `.env`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    log_level: str = "INFO"
