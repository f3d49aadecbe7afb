"""The one place hareway reaches into the internals of aio-pika, aiormq and pamqp.

| module | relies on |
|---|---|
| `framing.py` | an aiormq channel's confirm bookkeeping (`delivery_tag`, `confirmations`, |
| | `message_id_delivery_tag`), its `write_queue` and `closing` |
| `failover.py` | aio-pika's `RobustConnection.__connect_transport` (name-mangled) |
| `blocked.py` | aiormq's private `connection.blocked` event |
| `codec.py` | pamqp's encode and decode dispatch tables |
| `delivery.py` | aiormq's `Channel._on_deliver_frame` (its steps, checked by their source) |

Each process calls `prepare()` once at start, before it connects: it checks that every
shape these modules rely on is there and stops with one line naming the installed and
the supported versions if not (a minor release that renamed one would otherwise make an
override silently never run), then installs the codec. `check_connection` and
`check_channel` do the same for what only exists on live objects.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Final

import aiormq
from aio_pika.robust_connection import RobustConnection

from hareway.amqp import codec, delivery
from hareway.amqp.blocked import UNBLOCKED_EVENT
from hareway.errors import HarewayError

SUPPORTED: Final = "aio-pika >=10.2,<11, aiormq >=7.2,<8, pamqp >=4,<5"

_CHANNEL_ATTRIBUTES: Final = (
    "delivery_tag",
    "confirmations",
    "message_id_delivery_tag",
    "write_queue",
    "closing",
    "max_content_size",
    "number",
)


class AmqpInternalsChanged(HarewayError):
    """The installed AMQP libraries lack an internal hareway relies on."""


def installed_versions() -> str:
    return ", ".join(f"{name} {version(name)}" for name in ("aio-pika", "aiormq", "pamqp"))


def _refuse(missing: list[str]) -> None:
    if missing:
        raise AmqpInternalsChanged(
            f"the installed {installed_versions()} lack {', '.join(missing)}, which hareway "
            f"relies on; install a supported version ({SUPPORTED})"
        )


def prepare() -> None:
    """Check the class-level shapes and install the codec; safe to call more than once."""
    missing = codec.expected_shapes() + delivery.expected_shapes()
    if not callable(getattr(RobustConnection, "_RobustConnection__connect_transport", None)):
        missing.append("aio_pika.RobustConnection.__connect_transport")
    if not hasattr(aiormq.abc, "ChannelFrame"):
        missing.append("aiormq.abc.ChannelFrame")
    _refuse(missing)
    codec.install()
    delivery.install()


def check_connection(connection: aiormq.abc.AbstractConnection) -> None:
    _refuse([] if hasattr(connection, UNBLOCKED_EVENT) else [f"aiormq {UNBLOCKED_EVENT}"])


def check_channel(channel: aiormq.abc.AbstractChannel) -> None:
    _refuse([f"aiormq.Channel.{a}" for a in _CHANNEL_ATTRIBUTES if not hasattr(channel, a)])
