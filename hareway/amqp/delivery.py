"""Deliveries handed to a plain-function consumer in aiormq's reader, without a task each.

aiormq runs every delivery's consumer callback in a task of its own (its
`Channel._on_deliver_frame`: `create_task(consumer(message))` plus a done callback). At
thousands of messages a second that is, after frame parsing, the largest cost of a
consumer whose callback does no I/O: the consumer runtime's only queues the message for
its batch (consumers/subscription.py). `inline` marks such a function; `install` replaces
`_on_deliver_frame` with the same steps that call a marked consumer in place (through the
coroutine wrapper `basic_consume` stored it in), logging what it raises as aiormq does,
and leave every other consumer (aio-pika's, for one) to aiormq's task.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any, Final, TypeVar

import aiormq
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec

log = logging.getLogger("aiormq.channel")

_INLINE: Final = "hareway_inline"
# What the replacement relies on, and the line of aiormq's own that it changes.
_SHAPES: Final = ("_Channel__get_content_header", "_read_content", "consumers")
_SPAWNS: Final = "self.create_task(consumer(message))"

Consumer = TypeVar("Consumer", bound=Callable[..., None])


def inline(consumer: Consumer) -> Consumer:
    """Mark `consumer` (a plain function doing no I/O) to run in the channel's reader."""
    setattr(consumer, _INLINE, True)
    return consumer


def expected_shapes() -> list[str]:
    missing = [
        f"aiormq.Channel.{name}"
        for name in _SHAPES
        if name != "consumers" and not callable(getattr(aiormq.Channel, name, None))
    ]
    # basic_consume keeps a plain function wrapped by `aiormq.tools.awaitable`: the mark
    # and the function must show through the wrapper.
    wrapped = aiormq.tools.awaitable(inline(_probe))
    if getattr(wrapped, _INLINE, False) is not True or wrapped.__wrapped__ is not _probe:  # type: ignore[attr-defined]
        missing.append("aiormq.tools.awaitable (functools.wraps)")
    original = getattr(aiormq.Channel, "_on_deliver_frame", None)
    if original is not _on_deliver_frame:
        try:
            source = inspect.getsource(original) if original is not None else ""
        except (OSError, TypeError):
            source = ""
        if _SPAWNS not in source:
            missing.append("aiormq.Channel._on_deliver_frame")
    return missing


def _probe(message: DeliveredMessage) -> None:
    pass


def install() -> None:
    aiormq.Channel._on_deliver_frame = _on_deliver_frame  # type: ignore[method-assign]


async def _on_deliver_frame(self: Any, frame: spec.Basic.Deliver) -> None:
    # aiormq 7.2's steps, but for the marked consumer.
    header = await self._Channel__get_content_header()
    message = await self._read_content(frame, header)
    if frame.consumer_tag is None:
        log.warning("Frame %r has no consumer tag", frame)
        return
    consumer = self.consumers.get(frame.consumer_tag)
    if consumer is None:
        return
    if getattr(consumer, _INLINE, False):
        try:
            # basic_consume stored the function wrapped in a coroutine (`awaitable`).
            consumer.__wrapped__(message)
        except Exception:
            log.exception("Consumer callback failed")
        return
    task = self.create_task(consumer(message))
    task.add_done_callback(self._on_consumer_done)
