"""What a scope glob covers, and the exchanges and routes no scope reaches (gateway/auth.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.auth import Caller, reserved_exchange, reserved_routing_key
from gateway.settings import ApiKey


@pytest.mark.parametrize(
    ("scope", "exchange", "covered"),
    [
        ("publish:orders*", "orders", True),
        ("publish:orders*", "orders.eu", True),
        ("publish:orders*", "orders-secret", True),  # `*` is any run of characters
        ("publish:orders.*", "orders", False),
        ("publish:orders.*", "orders.eu.west", True),
        ("publish:orders?", "orders1", True),
        ("publish:Orders", "orders", False),  # case-sensitive
        ("publish:*", "amq.default", False),  # the default exchange needs its literal name
        ("publish:amq.*", "amq.default", False),
        ("publish:amq.default", "amq.default", True),
        ("read:*", "orders", False),  # another kind of scope
    ],
)
def test_a_glob_covers_what_fnmatch_says_and_never_the_default_exchange(
    scope: str, exchange: str, covered: bool
) -> None:
    assert Caller("svc", (scope,)).may("publish", exchange) is covered


def test_admin_and_open_access_reach_the_default_exchange() -> None:
    assert Caller("ops", ("admin",)).may("publish", "amq.default")
    assert Caller("anonymous", (), open_access=True).may("publish", "amq.default")


@pytest.mark.parametrize(
    ("exchange", "reserved"),
    [
        ("amq.rabbitmq.trace", True),
        ("amq.rabbitmq.log", True),
        ("orders.persist.retry", True),
        ("amq.topic", False),
        ("orders", False),
        ("orders.retrying", False),
    ],
)
def test_the_brokers_and_the_runtimes_own_exchanges_are_reserved(
    exchange: str, reserved: bool
) -> None:
    assert (reserved_exchange(exchange) is not None) is reserved


@pytest.mark.parametrize(
    ("routing_key", "reserved"),
    [
        ("orders.persist.dlq", True),
        ("orders.persist.retry.10s", True),
        ("orders.persist.retry.500ms", True),
        ("orders.persist", False),
        ("orders.dlq-report", False),
    ],
)
def test_the_default_exchange_never_reaches_the_runtimes_queues(
    routing_key: str, reserved: bool
) -> None:
    assert (reserved_routing_key("amq.default", routing_key) is not None) is reserved
    assert reserved_routing_key("orders", routing_key) is None


@pytest.mark.parametrize("name", ["a:b", "tab\tname", "é" * 128, ""])
def test_an_api_key_name_that_cannot_be_an_app_id_or_a_namespace_is_refused(name: str) -> None:
    with pytest.raises(ValidationError):
        ApiKey(name=name, sha256="0" * 64)
