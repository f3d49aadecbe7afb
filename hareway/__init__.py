"""The pieces both the gateway and the consumers import: the wire contract and the topology."""
