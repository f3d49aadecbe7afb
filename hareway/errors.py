"""The root of hareway's exception tree; each package hangs its own errors below it."""


class HarewayError(Exception):
    """Base of every error hareway raises on purpose."""
