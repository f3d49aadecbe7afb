"""The consumers' exception tree."""

from hareway.errors import HarewayError


class ConsumerError(HarewayError):
    """Base of every error the consumer runtime raises on purpose."""


class StoreUnavailable(ConsumerError):
    """The store could not commit; the deliveries it held stay unacknowledged."""


class InvalidCursor(ConsumerError):
    """A read cursor that this store did not hand out."""


class QueueNotFound(ConsumerError):
    """A queue to consume does not exist on the broker."""
