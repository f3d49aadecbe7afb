"""The consumers' exception tree (the whole of hareway's is in hareway/errors.py)."""

from hareway.errors import HarewayError

# The store's own, shared with the gateway: `StoreUnavailable` means the batch did not
# commit and its deliveries stay unacknowledged.
from hareway.store.errors import StoreRefused, StoreUnavailable

__all__ = [
    "ConsumerError",
    "DeadLetter",
    "HandlerError",
    "QueueNotFound",
    "RepublishFailed",
    "StoreRefused",
    "StoreUnavailable",
    "Unrepublishable",
]


class ConsumerError(HarewayError):
    """Base of every error the consumer runtime raises on purpose."""


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


class Unrepublishable(RepublishFailed):
    """The message cannot go down the ladder at all (its headers fill a whole frame): it is
    kept as a dead letter in the store instead of being requeued to fail again."""
