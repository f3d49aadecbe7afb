"""How the suite finds its broker and database (pure logic, no service needed)."""

from __future__ import annotations

import pytest

from tests.support.services import (
    LOCAL_POSTGRES,
    LOCAL_RABBITMQ,
    Found,
    ServiceMissing,
    find_postgres,
    find_rabbitmq,
)


def never(*_: object) -> bool:
    return False


def always(*_: object) -> bool:
    return True


def test_rabbitmq_url_from_the_environment_wins() -> None:
    found = find_rabbitmq(env={"RABBITMQ_URL": "amqp://u:p@broker:5673/"}, answers=always)
    assert (found.url, found.origin) == ("amqp://u:p@broker:5673/", "env")


def test_an_unreachable_rabbitmq_url_fails_and_says_so() -> None:
    with pytest.raises(ServiceMissing, match="RABBITMQ_URL is set"):
        find_rabbitmq(env={"RABBITMQ_URL": "amqp://u:p@broker:5673/"}, answers=never)


def test_the_local_broker_comes_next() -> None:
    found = find_rabbitmq(env={}, answers=always, docker=never)
    assert (found.url, found.origin) == (LOCAL_RABBITMQ, "local")


def test_a_container_when_only_docker_answers() -> None:
    container = Found("amqp://guest:guest@127.0.0.1:32768/", "container")
    found = find_rabbitmq(env={}, answers=never, docker=always, start_container=lambda: container)
    assert found is container


def test_no_broker_at_all_fails_with_how_to_get_one() -> None:
    with pytest.raises(ServiceMissing) as raised:
        find_rabbitmq(env={}, answers=never, docker=never)
    message = str(raised.value)
    assert "docker compose -f infra/compose.yaml" in message
    assert "rabbitmq-server" in message


def test_postgres_follows_the_same_order() -> None:
    assert find_postgres(env={}, answers=always, docker=never).url == LOCAL_POSTGRES
    with pytest.raises(ServiceMissing, match="pg_ctlcluster"):
        find_postgres(env={}, answers=never, docker=never)
