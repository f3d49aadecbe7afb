"""Publishing on an aiormq confirm channel, many messages per socket write.

aiormq's `basic_publish` pays per message for a lock, a `Countdown`, a channel-close guard,
a `Basic.Publish` frame built and validated anew, a write-queue put and a socket write.
The gateway publishes many messages at once: a batch, or the single requests that arrive in
one event-loop turn. `ChannelWriter` marshals each message's frames when it is sent and
writes everything sent in one loop turn with one write-queue item, so one `write` call.

It keeps aiormq's own bookkeeping (`delivery_tag`, `confirmations`,
`message_id_delivery_tag`), so aiormq's reader still resolves the confirms, turns a
`basic.return` into `PublishError` and rejects what is in flight when the channel or the
connection closes. The channel must be published on through this writer only: the
delivery tags it hands out assume that its frames reach the wire in the order it sent them.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any

import aiormq
from aiormq.abc import ChannelFrame, ConfirmationFrameType
from pamqp import commands as spec
from pamqp import encode, frame

# type, channel, size | payload | end. AMQP 0-9-1, section 2.3.5.
_FRAME_HEAD = struct.Struct(">BHI")
_HEADER_FRAME_TYPE = 2
_BODY_FRAME_TYPE = 3
# A content header's class (basic), weight (0) and body size; the property flags follow.
_CONTENT_HEADER = struct.Struct(">HxxQH")
_BASIC_CLASS = spec.Basic.frame_id
_FRAME_END = b"\xce"

# Message ids of confirmed publishes tolerated in aiormq's return map before a prune.
_TRACKED_IDS_SLACK = 4096

# Distinct (exchange, routing key) pairs whose method frame is kept; beyond it, start over.
_METHOD_FRAME_CACHE = 1024


class ChannelWriter:
    def __init__(self, channel: aiormq.Channel) -> None:
        self.channel = channel
        self._loop = asyncio.get_running_loop()
        self._pending: list[bytes] = []
        self._flush_scheduled = False
        # A Basic.Publish frame depends only on these two (mandatory is always set).
        self._method_frames: dict[tuple[str, str], bytes] = {}
        self._prune_above = _TRACKED_IDS_SLACK
        channel.closing.add_done_callback(self._reject_unconfirmed)

    def send(
        self, exchange: str, routing_key: str, properties: spec.Basic.Properties, body: bytes
    ) -> asyncio.Future[ConfirmationFrameType]:
        """Queue one persistent, mandatory publish; the future is its confirm (or error).

        Synchronous on purpose: the frames go out with everything else sent this loop turn.
        """
        channel = self.channel
        if channel.is_closed:
            raise aiormq.exceptions.ChannelInvalidStateError(f"{channel!r} closed")
        frames = self._method_frame(exchange, routing_key) + content_frames(
            channel.number, channel.max_content_size, properties, body
        )
        channel.delivery_tag += 1
        delivery_tag = channel.delivery_tag
        # A plain future, not `channel.create_future()`: aiormq's future store costs three
        # callbacks and two set updates per message. `_reject_unconfirmed` does its one job.
        confirmation: asyncio.Future[ConfirmationFrameType] = self._loop.create_future()
        channel.confirmations[delivery_tag] = confirmation
        if properties.message_id is not None:
            # How aiormq finds the publish a `basic.return` is about.
            self._track(properties.message_id, delivery_tag)
        self._pending.append(frames)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return confirmation

    def _track(self, message_id: str, delivery_tag: int) -> None:
        tracked = self.channel.message_id_delivery_tag
        tracked[message_id] = delivery_tag
        if len(tracked) > self._prune_above:
            # Pruned in bulk, not by a done callback per message: only ids whose publish
            # still waits for its confirm can come back in a `basic.return`.
            waiting = self.channel.confirmations
            for stale in [m for m, tag in tracked.items() if tag not in waiting]:
                del tracked[stale]
            self._prune_above = 2 * len(tracked) + _TRACKED_IDS_SLACK

    def _flush(self) -> None:
        if self.channel.is_closed:
            # Their confirms were rejected with the close. Written now, they could reach a
            # channel reopened under the same number and shift its delivery tags.
            self._pending.clear()
            self._flush_scheduled = False
            return
        try:
            self.channel.write_queue.put_nowait(
                ChannelFrame(payload=b"".join(self._pending), should_close=False)
            )
        except asyncio.QueueFull:
            # aiormq's writer is behind: keep the frames, in order, and try next turn.
            self._loop.call_soon(self._flush)
            return
        self._pending.clear()
        self._flush_scheduled = False

    def _reject_unconfirmed(self, closing: asyncio.Future[object]) -> None:
        """Fail every publish still waiting for its confirm once the channel has closed."""
        reason: BaseException | None = None
        if not closing.cancelled():
            reason = closing.exception()
        if reason is None or isinstance(reason, asyncio.CancelledError):
            reason = aiormq.exceptions.ChannelInvalidStateError(f"{self.channel!r} closed")
        for confirmation in self.channel.confirmations.values():
            if isinstance(confirmation, asyncio.Future) and not confirmation.done():
                confirmation.set_exception(reason)
                # Marks it seen: a caller that stopped waiting must not make asyncio log it.
                confirmation.exception()

    def _method_frame(self, exchange: str, routing_key: str) -> bytes:
        key = (exchange, routing_key)
        marshalled = self._method_frames.get(key)
        if marshalled is None:
            if len(self._method_frames) >= _METHOD_FRAME_CACHE:
                self._method_frames.clear()
            publish = spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=True)
            marshalled = frame.marshal(publish, self.channel.number)
            self._method_frames[key] = marshalled
        return marshalled


def content_frames(
    channel_number: int, max_content_size: int, properties: spec.Basic.Properties, body: bytes
) -> bytes:
    """The content header frame and the body frames of one message."""
    flags, encoded = encode_properties(properties)
    header = _CONTENT_HEADER.pack(_BASIC_CLASS, len(body), flags) + encoded
    parts = [_FRAME_HEAD.pack(_HEADER_FRAME_TYPE, channel_number, len(header)), header, _FRAME_END]
    for start in range(0, len(body), max_content_size):
        chunk = body[start : start + max_content_size]
        parts += (_FRAME_HEAD.pack(_BODY_FRAME_TYPE, channel_number, len(chunk)), chunk, _FRAME_END)
    return b"".join(parts)


def encode_properties(properties: spec.Basic.Properties) -> tuple[int, bytes]:
    """The property flags and the property list of a content header, byte for byte as
    pamqp's `Basic.Properties.marshal` makes them (tests/gateway/test_framing.py compares),
    and failing as it does (TypeError, struct.error), in a third of its time: it was 8 %
    of the gateway's CPU per single publish, most of it calls between pamqp's layers."""
    flags = 0
    parts = []
    for name, flag, encoder in _PROPERTIES:
        value = getattr(properties, name)
        if value is not None and value != "":
            flags |= flag
            parts.append(encoder(value))
    return flags, b"".join(parts)


def _short_string(value: str) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"str required, received {type(value)}")
    raw = value.encode()
    if len(raw) > 255:
        raise TypeError("string exceeds maximum length of 255 bytes")
    return _OCTET.pack(len(raw)) + raw


def _octet(value: int) -> bytes:
    if not isinstance(value, int):
        raise TypeError(f"int required, received {type(value)}")
    return _OCTET.pack(value)


_OCTET = struct.Struct("B")
_ENCODERS: dict[str, Callable[[Any], bytes]] = {
    "shortstr": _short_string,
    "octet": _octet,
    "table": encode.field_table,
    "timestamp": encode.timestamp,
}
# In the order of the spec (pamqp's), each with its flag bit; a property type this does not
# know (a new pamqp) fails at import, not on the wire.
_PROPERTIES = tuple(
    (name, spec.Basic.Properties.flags[name], _ENCODERS[spec.Basic.Properties.amqp_type(name)])
    for name in spec.Basic.Properties.__slots__
)
