"""Push subscriptions in the topology file: a queue whose messages the consumers POST to
an HTTP target, signed by the Standard Webhooks specification (docs/push.md).

The model lives in `hareway` because the topology file is read by every process (the
gateway and `hareway topology` validate it too); only the consumers deliver. The secret
is never in the file: it names an environment variable or a file, read by the consumer
that delivers, so validating a topology needs no secret at all.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator, model_validator

from hareway.errors import ConfigError

SECRET_PREFIX = "whsec_"

# Headers the delivery itself sets: an extra header of the same name would forge or break
# them (a second Content-Length, a signature of someone else's).
_RESERVED = re.compile(
    r"^(webhook-.*|ce-.*|hareway-.*|content-.*|host|connection|transfer-encoding"
    r"|keep-alive|upgrade|te|trailer|traceparent|tracestate)$",
    re.IGNORECASE,
)
# An HTTP field name (RFC 9110 token) and a value without control characters.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_VALUE = re.compile(r"^[\t\x20-\x7e]*$")


class SecretMissing(ConfigError):
    """A subscription's secret cannot be read, or is not a Standard Webhooks secret."""


class BreakerSpec(BaseModel):
    """After `failures` consecutive failed deliveries (timeouts, connection errors, 408,
    429, 5xx) the subscription stops taking messages and probes the target every
    `probe_s` with the first message it holds; the first 2xx resumes it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    failures: int = Field(default=5, ge=1)
    probe_s: float = Field(default=5.0, gt=0)


def _default_permanent() -> tuple[int, ...]:
    # 408 (the target timed out reading) and 429 (slow down) say "try again".
    return tuple(status for status in range(400, 500) if status not in (408, 429))


class SubscriptionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    queue: str = Field(min_length=1, max_length=255)
    url: AnyHttpUrl
    # Exactly one of them: the variable or the file holding "whsec_<base64>", or two such
    # secrets separated by a space while rotating (every request is signed with both).
    secret_env: str | None = Field(default=None, min_length=1)
    secret_file: Path | None = None
    timeout_s: float = Field(default=5.0, gt=0, le=300)
    # Deliveries in flight at once; 1 posts one at a time in the queue's order.
    concurrency: int = Field(default=1, ge=1, le=1000)
    headers: dict[str, str] = Field(default_factory=dict)
    # Statuses that dead-letter at once; any other non-2xx goes down the retry ladder.
    permanent_statuses: tuple[Annotated[int, Field(ge=300, le=599)], ...] = Field(
        default_factory=_default_permanent
    )
    breaker: BreakerSpec = BreakerSpec()

    @field_validator("headers")
    @classmethod
    def _headers_are_fields(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if not _TOKEN.match(name):
                raise ValueError(f"header name {name!r} is not an HTTP field name")
            if _RESERVED.match(name):
                raise ValueError(f"header {name!r} is set by the delivery itself")
            if not _VALUE.match(value):
                raise ValueError(f"header {name!r}: only printable ASCII in a value")
        return headers

    @model_validator(mode="after")
    def _one_secret(self) -> SubscriptionSpec:
        if (self.secret_env is None) == (self.secret_file is None):
            raise ValueError(
                f"subscription of {self.queue!r}: give exactly one of secret_env, secret_file"
            )
        return self

    @property
    def secret_source(self) -> str:
        return f"${self.secret_env}" if self.secret_env is not None else str(self.secret_file)

    def describe(self) -> str:
        """One line for `hareway topology diff/apply`: what is pushed where (no secret)."""
        order = "in order" if self.concurrency == 1 else f"concurrency {self.concurrency}"
        return (
            f"{self.queue!r} -> {self.url} ({order}, timeout {self.timeout_s:g}s, "
            f"secret from {self.secret_source})"
        )


def read_secrets(spec: SubscriptionSpec) -> tuple[bytes, ...]:
    """The subscription's signing keys, from its variable or file (blocking: a file read).

    Raises `SecretMissing` naming where it looked, never the secret."""
    if spec.secret_env is not None:
        text = os.environ.get(spec.secret_env)
        if text is None:
            raise SecretMissing(f"push {spec.describe()}: ${spec.secret_env} is not set")
    else:
        assert spec.secret_file is not None
        try:
            text = spec.secret_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise SecretMissing(f"push {spec.describe()}: cannot read the secret: {exc}") from None
    try:
        return parse_secrets(text)
    except ValueError as exc:
        raise SecretMissing(f"push {spec.describe()}: {exc}") from None


def parse_secrets(text: str) -> tuple[bytes, ...]:
    """`whsec_<base64>`, or two of them separated by whitespace (rotation)."""
    words = text.split()
    if not 1 <= len(words) <= 2:
        raise ValueError(f"expected one or two whsec_ secrets, found {len(words)} words")
    keys = []
    for word in words:
        if not word.startswith(SECRET_PREFIX):
            raise ValueError(f"a secret must start with {SECRET_PREFIX!r}")
        try:
            key = base64.b64decode(word[len(SECRET_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("a secret is not base64 after whsec_") from None
        # The specification's bounds: fewer bytes is a secret a guess can find.
        if not 24 <= len(key) <= 64:
            raise ValueError(f"a secret of {len(key)} bytes; the specification asks 24 to 64")
        keys.append(key)
    return tuple(keys)
