"""API keys, scopes and per-key rate limits, as FastAPI dependencies on the /v1 routes.

A key is looked up by its SHA-256, so neither the settings nor the logs ever hold it.
Scopes: `publish:<exchange glob>`, `read:<queue glob>`, `admin` (everything).

Globs are `fnmatch` patterns matched against the whole name, case-sensitively: `*` is any
run of characters, dots and dashes included, `?` one character, `[seq]` one of seq. So
`publish:orders*` covers `orders`, `orders.eu` and also `orders-secret`; to mean `orders`
and its dotted children only, grant `publish:orders` and `publish:orders.*`.

Some exchanges no pattern reaches (see `reserved_exchange`): the broker's own
`amq.rabbitmq.*` and the consumer runtime's `<queue>.retry` exchanges are refused for
every caller, admin and open access included; the default exchange (`amq.default`) needs
the literal scope `publish:amq.default` or `admin` (`publish:*` does not reach it), and
never takes a routing key that names a retry or dead-letter queue.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Annotated

from fastapi import Depends, Request

from gateway.errors import ExchangeForbidden, Forbidden, RateLimited, Unauthenticated
from gateway.ratelimit import TokenBucket, retry_after_s
from gateway.settings import ApiKey, GatewaySettings
from hareway.wire import DEFAULT_EXCHANGE_ALIAS

log = logging.getLogger(__name__)

ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Caller:
    name: str
    scopes: tuple[str, ...]
    open_access: bool = False

    @property
    def key_owner(self) -> str | None:
        """Whose namespace this caller's Idempotency-Keys live in (None: open access)."""
        return None if self.open_access else self.name

    def may(self, kind: str, name: str) -> bool:
        if self.open_access or "admin" in self.scopes:
            return True
        prefix = kind + ":"
        if kind == "publish" and name == DEFAULT_EXCHANGE_ALIAS:
            # It reaches every queue by name: only a grant that names it says so.
            return prefix + name in self.scopes
        return any(
            scope.startswith(prefix) and fnmatchcase(name, scope[len(prefix) :])
            for scope in self.scopes
        )


# The broker's internal exchanges (trace, log, event): a publish to one closes the channel.
_BROKER_INTERNAL_PREFIX = "amq.rabbitmq."
# The consumer runtime's retry exchange of each queue (`<queue>.retry`), and the delay and
# dead-letter queues it feeds, which the default exchange would reach by name.
_RETRY_EXCHANGE_SUFFIX = ".retry"
_RUNTIME_QUEUE = re.compile(r".+\.(dlq|retry\.[0-9]+(ms|s|m|h))")


def reserved_exchange(exchange: str) -> str | None:
    """Why no caller may publish to `exchange`, or None."""
    if exchange.startswith(_BROKER_INTERNAL_PREFIX):
        return "is internal to the broker"
    if exchange.endswith(_RETRY_EXCHANGE_SUFFIX):
        return "is a retry exchange of the consumer runtime (names ending in .retry are reserved)"
    return None


def reserved_routing_key(exchange: str, routing_key: str) -> str | None:
    """Why no caller may publish `routing_key` to `exchange`, or None."""
    if exchange == DEFAULT_EXCHANGE_ALIAS and _RUNTIME_QUEUE.fullmatch(routing_key):
        return (
            f"routing key {routing_key!r} names a retry or dead-letter queue of the consumer "
            "runtime; only the runtime sends there"
        )
    return None


@dataclass
class Authenticator:
    keys: dict[str, ApiKey]
    default_rate_per_s: float
    default_burst: int
    _buckets: dict[str, TokenBucket] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> Authenticator:
        if not settings.api_keys:
            log.warning(
                "no API keys configured (API_KEYS): the gateway runs WITHOUT authentication"
            )
        else:
            log.info("%d API keys configured", len(settings.api_keys))
        return cls(
            keys={key.sha256: key for key in settings.api_keys},
            default_rate_per_s=settings.rate_limit_per_s,
            default_burst=settings.rate_limit_burst,
        )

    @property
    def open_access(self) -> bool:
        return not self.keys

    def authenticate(self, request: Request) -> Caller:
        if self.open_access:
            return Caller(ANONYMOUS, (), open_access=True)
        presented = _presented_key(request)
        if presented is None:
            raise Unauthenticated("send an API key as `Authorization: Bearer KEY` or `X-API-Key`")
        key = self.keys.get(hashlib.sha256(presented.encode()).hexdigest())
        if key is None:
            raise Unauthenticated("the API key is not known")
        self._limit(key)
        return Caller(key.name, key.scopes)

    def publisher(self, request: Request, exchange: str) -> Caller:
        """The caller, if it may publish to `exchange`; for routes that skip `Depends`."""
        return _may_publish(exchange, self.authenticate(request))

    def _limit(self, key: ApiKey) -> None:
        rate = key.rate_per_s or self.default_rate_per_s
        if not rate:
            return
        bucket = self._buckets.get(key.sha256)
        if bucket is None:
            bucket = TokenBucket(rate, key.burst or self.default_burst)
            self._buckets[key.sha256] = bucket
        wait_s = bucket.take()
        if wait_s:
            raise RateLimited(
                f"{key.name!r} is over its rate of {rate:g} requests/s",
                retry_after_s=retry_after_s(wait_s),
            )


def _presented_key(request: Request) -> str | None:
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return request.headers.get("x-api-key") or None


# The dependencies are `async def`: a plain `def` one would run in a worker thread.
async def _caller(request: Request) -> Caller:
    authenticator: Authenticator = request.app.state.authenticator
    return authenticator.authenticate(request)


AnyCaller = Annotated[Caller, Depends(_caller)]


def _may_publish(exchange: str, caller: Caller) -> Caller:
    reason = reserved_exchange(exchange)
    if reason is not None:
        raise ExchangeForbidden(f"exchange {exchange!r} {reason}: no API key may publish to it")
    if not caller.may("publish", exchange):
        raise Forbidden(f"{caller.name!r} may not publish to exchange {exchange!r}")
    return caller


async def _publisher_of(exchange: str, caller: AnyCaller) -> Caller:
    return _may_publish(exchange, caller)


async def _reader_of(queue: str, caller: AnyCaller) -> Caller:
    if not caller.may("read", queue):
        raise Forbidden(f"{caller.name!r} may not read queue {queue!r}")
    return caller


async def _admin(caller: AnyCaller) -> Caller:
    if not (caller.open_access or "admin" in caller.scopes):
        raise Forbidden(f"{caller.name!r} lacks the admin scope")
    return caller


# Routes with an `{exchange}` path parameter; the caller may publish there.
PublishCaller = Annotated[Caller, Depends(_publisher_of)]
# Routes with a `{queue}` path parameter; the caller may read it.
ReadCaller = Annotated[Caller, Depends(_reader_of)]
AdminCaller = Annotated[Caller, Depends(_admin)]
