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

import aiormq
from aiormq.abc import ChannelFrame, ConfirmationFrameType
from pamqp import commands as spec
from pamqp import frame
from pamqp.header import ContentHeader

# type, channel, size | payload | end. AMQP 0-9-1, section 2.3.5.
_BODY_FRAME_HEAD = struct.Struct(">BHI")
_BODY_FRAME_TYPE = 3
_FRAME_END = b"\xce"

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
        # The channel's own future store rejects it when the channel or connection closes.
        confirmation: asyncio.Future[ConfirmationFrameType] = channel.create_future()
        channel.confirmations[delivery_tag] = confirmation
        message_id = properties.message_id
        if message_id is not None:
            # How aiormq finds the publish a `basic.return` is about.
            channel.message_id_delivery_tag[message_id] = delivery_tag
            confirmation.add_done_callback(lambda _: _forget(channel, message_id, delivery_tag))
        self._pending.append(frames)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return confirmation

    def _flush(self) -> None:
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
    header = ContentHeader(body_size=len(body), properties=properties)
    parts = [frame.marshal(header, channel_number)]
    for start in range(0, len(body), max_content_size):
        chunk = body[start : start + max_content_size]
        head = _BODY_FRAME_HEAD.pack(_BODY_FRAME_TYPE, channel_number, len(chunk))
        parts += (head, chunk, _FRAME_END)
    return b"".join(parts)


def _forget(channel: aiormq.Channel, message_id: str, delivery_tag: int) -> None:
    if channel.message_id_delivery_tag.get(message_id) == delivery_tag:
        del channel.message_id_delivery_tag[message_id]
