"""The pieces both the gateway and the consumers import: the wire contract, the topology,
the store, and the AMQP plumbing."""

# The one version of hareway: pyproject.toml reads it from here, every command shows it.
__version__ = "0.1.0"
