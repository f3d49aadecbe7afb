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


class DeadLetter(ConsumerError):
    """Raised by a handler for a message that can never succeed: dead-lettered at once,
    without going through the retry ladder."""


class HandlerError(ConsumerError):
    """A handler registration that cannot work (a duplicate queue, a bad `--app`)."""


class RepublishFailed(ConsumerError):
    """A failed message could not be handed to its retry or dead-letter queue; it stays
    unacknowledged and comes back."""
