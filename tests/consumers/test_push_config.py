"""Push subscriptions in the topology file, their secrets, and signatures that a Standard
Webhooks library we did not write accepts (no broker, no receiver)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from standardwebhooks import Webhook, WebhookVerificationError

from consumers.signing import signed_headers
from hareway.subscriptions import SecretMissing, parse_secrets, read_secrets
from hareway.topology import TopologyError, parse_topology
from tests.support.receiver import new_secret

QUEUES: dict[str, Any] = {"queues": [{"name": "orders.push", "retry": {"max_attempts": 3}}]}


def topology_with(**subscription: Any) -> str:
    entry = {"queue": "orders.push", "url": "http://127.0.0.1:9/hooks", **subscription}
    return yaml.safe_dump({**QUEUES, "subscriptions": [entry]})


def test_the_spec_shape_parses_with_its_defaults() -> None:
    topology = parse_topology(topology_with(secret_env="ORDERS_WEBHOOK_SECRET", concurrency=16))
    [subscription] = topology.subscriptions
    assert topology.subscription("orders.push") == subscription
    assert subscription.concurrency == 16
    assert 404 in subscription.permanent_statuses
    assert 408 not in subscription.permanent_statuses
    assert 429 not in subscription.permanent_statuses
    assert 500 not in subscription.permanent_statuses
    assert "secret from $ORDERS_WEBHOOK_SECRET" in subscription.describe()


@pytest.mark.parametrize(
    ("subscription", "complaint"),
    [
        ({}, "exactly one of secret_env, secret_file"),
        ({"secret_env": "A", "secret_file": "/s"}, "exactly one of secret_env, secret_file"),
        ({"secret_env": "A", "queue": "nowhere"}, "undeclared queue 'nowhere'"),
        ({"secret_env": "A", "secret": "whsec_x"}, "Extra inputs are not permitted"),
        ({"secret_env": "A", "headers": {"webhook-id": "x"}}, "set by the delivery itself"),
        ({"secret_env": "A", "headers": {"bad name": "x"}}, "not an HTTP field name"),
        ({"secret_env": "A", "url": "ftp://host/x"}, "URL scheme should be 'http' or 'https'"),
        ({"secret_env": "A", "breaker": {"failures": 2}}, "at least the ladder's max_attempts"),
    ],
)
def test_a_subscription_that_cannot_work_is_refused(
    subscription: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(TopologyError, match=re.escape(complaint)):
        parse_topology(topology_with(**subscription))


def test_secrets_come_from_a_file_or_the_environment_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = new_secret()
    path = tmp_path / "secret"
    path.write_text(secret + "\n")
    [from_file] = parse_topology(topology_with(secret_file=str(path))).subscriptions
    assert read_secrets(from_file) == parse_secrets(secret)
    [from_env] = parse_topology(topology_with(secret_env="HAREWAY_TEST_PUSH")).subscriptions
    monkeypatch.delenv("HAREWAY_TEST_PUSH", raising=False)
    with pytest.raises(SecretMissing, match=r"\$HAREWAY_TEST_PUSH is not set"):
        read_secrets(from_env)
    monkeypatch.setenv("HAREWAY_TEST_PUSH", "whsec_" + "A" * 8)
    with pytest.raises(SecretMissing, match="6 bytes") as raised:
        read_secrets(from_env)
    assert "AAAA" not in str(raised.value)
    for bad in ("", "s3cret", "whsec_!!!", f"{secret} {secret} {secret}"):
        with pytest.raises(ValueError, match="secret"):
            parse_secrets(bad)


def test_two_secrets_sign_twice_and_either_one_verifies() -> None:
    old, new = new_secret(), new_secret()
    body = b'{"order": 1}'
    headers = signed_headers(parse_secrets(f"{old} {new}"), "m-1", int(time.time()), body)
    assert headers["webhook-signature"].count("v1,") == 2
    for secret in (old, new):
        Webhook(secret).verify(body, headers, json_parse=False)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers, json_parse=False)
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(b'{"order": 2}', headers, json_parse=False)


def test_diff_and_apply_show_each_subscription_without_its_secret(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from hareway.cli import _print_subscriptions

    topology = parse_topology(topology_with(secret_env="ORDERS_SECRET", concurrency=4))
    _print_subscriptions(topology)
    assert capsys.readouterr().out == (
        "push         'orders.push' -> http://127.0.0.1:9/hooks (concurrency 4, timeout 5s, "
        "secret from $ORDERS_SECRET)\n"
    )
