"""The publish hot path without I/O: validate the body, build the message, marshal its frames.

`python -m bench.hotpath N` runs it N times. The CPU guard (tests/test_cpu_guard.py) runs
this under callgrind and counts instructions, which, unlike seconds, do not depend on what
else the shared machine is doing.
"""

from __future__ import annotations

import sys

from pamqp import commands as spec
from pamqp import frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from gateway.envelope import parse_publish_request
from gateway.publisher import Outgoing
from hareway.wire import JSON_CONTENT_TYPE

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
    publish = spec.Basic.Publish(
        exchange=message.exchange, routing_key=message.routing_key, mandatory=True
    )
    header = ContentHeader(body_size=len(message.body), properties=message.properties())
    return b"".join(
        (
            frame.marshal(publish, 1),
            frame.marshal(header, 1),
            frame.marshal(ContentBody(message.body), 1),
        )
    )


def main() -> None:
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    publish_hot_path(BODY)  # first-call costs (caches, lazy imports) are not per message
    for _ in range(iterations):
        publish_hot_path(BODY)


if __name__ == "__main__":
    main()
