"""A topology as a RabbitMQ definitions document (`rabbitmqctl import_definitions`, the
management UI's "Import definitions")."""

from __future__ import annotations

from typing import Any

from hareway.topology import Topology


def export_definitions(topology: Topology, vhost: str = "/") -> dict[str, Any]:
    topology = topology.expanded()
    return {
        "exchanges": [
            {
                "name": exchange.name,
                "vhost": vhost,
                "type": exchange.type,
                "durable": exchange.durable,
                "auto_delete": exchange.auto_delete,
                "internal": False,
                "arguments": exchange.arguments,
            }
            for exchange in topology.exchanges
        ],
        "queues": [
            {
                "name": queue.name,
                "vhost": vhost,
                "durable": queue.durable,
                "auto_delete": False,
                "arguments": queue.broker_arguments(),
            }
            for queue in topology.queues
        ],
        "bindings": [
            {
                "source": binding.exchange,
                "vhost": vhost,
                "destination": binding.queue,
                "destination_type": "queue",
                "routing_key": binding.routing_key,
                "arguments": binding.arguments,
            }
            for binding in topology.bindings
        ],
    }
