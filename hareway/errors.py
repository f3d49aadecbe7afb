"""hareway's exception tree. Every error hareway raises on purpose is a `HarewayError`;
foreign errors (SQLAlchemy's, aiormq's, pydantic's) are mapped onto it where they enter.

    HarewayError
    ├── hareway.store.errors.StoreError          the store, for both processes
    │   ├── StoreUnavailable                     outage: retry later
    │   ├── StoreRefused                         these values, never: refuse them
    │   └── InvalidCursor
    ├── hareway.topology.TopologyError / TopologyConflict
    ├── hareway.schemas.InvalidSchema
    ├── hareway.broker.BrokerUnreachable
    ├── hareway.amqp.AmqpInternalsChanged        the AMQP libraries' shapes, checked at start
    ├── gateway.errors.GatewayError              each knows its HTTP problem (gateway/problems.py)
    └── consumers.errors.ConsumerError           DeadLetter, HandlerError, RepublishFailed, ...
"""


class HarewayError(Exception):
    """Base of every error hareway raises on purpose."""


class ConfigError(HarewayError):
    """A setting that cannot work: the process says which, in one line, and exits 2.

    Its message starts with the environment variable's name and never holds a secret.
    """
