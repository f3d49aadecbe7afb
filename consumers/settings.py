"""The consumer process's settings, from the environment (and an optional `.env`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConsumerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    rabbitmq_url: str = "amqp://guest:guest@localhost:5672/"
    database_url: str = "sqlite+aiosqlite:///./hareway.db"
    topology_file: str | None = None

    # Deliveries the broker hands over before any is acked; also the most a batch can hold.
    prefetch: int = Field(default=500, ge=1, le=65535)
    # A batch commits when it holds this many messages or its oldest waited this long.
    # Half the prefetch: one batch fills while the one before commits.
    batch_size: int = Field(default=250, ge=1)
    batch_max_wait_ms: int = Field(default=20, ge=0)
    # A batch also commits once its bodies add up to this many bytes: a queue of large
    # messages commits in smaller transactions instead of holding them all in one.
    batch_max_bytes: int = Field(default=16 * 1024 * 1024, ge=1)
    # A body whose content_encoding (gzip, deflate) inflates past this is dead-lettered
    # instead of inflated: a small compressed message must not take the process's memory.
    max_decoded_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1)
    # A store that cannot commit: wait this long before requeueing, doubling up to the max.
    store_backoff_initial_s: float = Field(default=0.5, gt=0)
    store_backoff_max_s: float = Field(default=30.0, gt=0)
    log_level: str = "INFO"
    # Serve /healthz and /readyz on this port (see consumers/health.py); None: no probe.
    health_port: int | None = Field(default=None, ge=0, le=65535)
    health_host: str = "127.0.0.1"

    # Operability (docs/operations.md). `console` for a terminal, `json`: one object a line.
    log_format: Literal["console", "json"] = "console"
    # Seconds between summary lines (stored/s, retried, dead-lettered, lag); 0: none.
    summary_interval_s: float = Field(default=60.0, ge=0)
    # Seconds between samples of each queue's depth from the broker (the lag metric).
    queue_sample_s: float = Field(default=15.0, gt=0)
    # How often the store's retention is swept (the topology's `retention`).
    retention_sweep_s: float = Field(default=300.0, gt=0)
    # SIGTERM/SIGINT: longest the drain may take (a broker that is gone included) before
    # the process gives up on it and exits; what was not acked comes back from the queue.
    drain_timeout_s: float = Field(default=30.0, gt=0)
