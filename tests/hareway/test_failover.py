"""Several broker addresses in one RABBITMQ_URL."""

from __future__ import annotations

import pytest

from hareway import broker
from hareway.amqp.failover import FailoverConnection, addresses
from tests.support.processes import free_port

pytestmark = pytest.mark.timeout(30)


def test_addresses_are_split_on_commas_and_whitespace() -> None:
    assert addresses(" amqp://a/ , amqp://b:5673/\namqp://c/") == [
        "amqp://a/",
        "amqp://b:5673/",
        "amqp://c/",
    ]
    with pytest.raises(ValueError, match="no broker address"):
        addresses(" , ")


def test_every_address_is_redacted() -> None:
    assert (
        broker.redact("amqp://u:secret@a/,amqp://v:hidden@b/") == "amqp://u:***@a/,amqp://v:***@b/"
    )


async def test_connect_skips_an_address_that_does_not_answer(rabbitmq_url: str) -> None:
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    connection = await broker.connect(f"{dead},{rabbitmq_url}", "test", timeout_s=5)
    try:
        assert isinstance(connection, FailoverConnection)
        assert str(connection.url) == rabbitmq_url
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        assert queue.name
    finally:
        await connection.close()


async def test_no_address_answering_names_them_all_without_passwords() -> None:
    dead = [f"amqp://guest:secret@127.0.0.1:{free_port()}/" for _ in range(2)]
    with pytest.raises(broker.BrokerUnreachable) as caught:
        await broker.connect(",".join(dead), "test", timeout_s=2)
    assert "secret" not in str(caught.value)
    assert all(str(url.split("@")[1]) in str(caught.value) for url in dead)
