"""The publish hot path without I/O: validate the body, build the message, marshal its frames.

As in `hareway.amqp.framing.ChannelWriter`, the Basic.Publish method frame is not counted: the
writer marshals it once per (exchange, routing key) and reuses it.

`python -m bench.hotpath N` runs it N times. The CPU guard (tests/test_cpu_guard.py) runs
this under callgrind and counts instructions, which, unlike seconds, do not depend on what
else the shared machine is doing.
"""

from __future__ import annotations

import sys

from gateway.envelope import parse_publish_request
from gateway.publisher import Outgoing
from hareway.amqp import prepare
from hareway.amqp.framing import content_frames
from hareway.wire import JSON_CONTENT_TYPE

# RabbitMQ's default frame_max less the frame's own 8 bytes, as aiormq computes it.
FRAME_MAX = 131072 - 8

BODY = (
    b'{"routing_key": "order.created", "payload": {"order_id": 42, "amount": 99.5, '
    b'"currency": "EUR", "customer": "c-1234567"}, "headers": {"tenant": "acme"}, '
    b'"message_id": "order-42", "priority": 5}'
)


def publish_hot_path(raw: bytes) -> bytes:
    envelope = parse_publish_request(raw)
    message = Outgoing(
        exchange="orders",
        routing_key=envelope.routing_key,
        body=envelope.payload_bytes(),
        message_id=envelope.message_id or "generated",
        content_type=JSON_CONTENT_TYPE,
        headers=dict(envelope.headers),
        priority=envelope.priority,
    )
    return content_frames(1, FRAME_MAX, message.properties(), message.body)


def main() -> None:
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    prepare()  # as the gateway does at start: hareway's own codec for header values
    publish_hot_path(BODY)  # first-call costs (caches, lazy imports) are not per message
    for _ in range(iterations):
        publish_hot_path(BODY)


if __name__ == "__main__":
    main()
