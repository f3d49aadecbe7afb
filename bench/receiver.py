"""`python -m bench.receiver --port P`: the push phase's target, a receiver that answers at once.

A bare asyncio HTTP/1.1 server (keep-alive, `Content-Length` bodies only, what httpx
sends), so that the receiver costs as little CPU as can be and both the consumer and the
bare client it is compared with run against the same one. It answers every POST `204`
and notes its `webhook-id` and the wall-clock time of the answer; `GET /count` answers how
many it noted, `GET /dump` all of them as JSON (and forgets them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

_ANSWER = b"HTTP/1.1 204 No Content\r\n\r\n"
_WEBHOOK_ID = b"\r\nwebhook-id:"
_LENGTH = b"\r\ncontent-length:"


class Receiving(asyncio.Protocol):
    def __init__(self, seen: list[tuple[str, float]]) -> None:
        self._seen = seen
        self._buffer = b""
        self._transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # uvloop's is no asyncio.Transport, but writes as one

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            raw = self._buffer[:end]
            length = _header(raw, _LENGTH)
            size = end + 4 + (int(length) if length else 0)
            if len(self._buffer) < size:
                return  # the body is still on its way
            self._buffer = self._buffer[size:]
            self._answer(raw)

    def _answer(self, raw: bytes) -> None:
        assert self._transport is not None
        head = raw.lower()
        if head.startswith(b"get /count"):
            self._json(len(self._seen))
        elif head.startswith(b"get /dump"):
            self._json(self._seen[:])
            self._seen.clear()
        else:
            self._transport.write(_ANSWER)
            self._seen.append(((_header(raw, _WEBHOOK_ID) or b"").decode(), time.time()))

    def _json(self, value: object) -> None:
        assert self._transport is not None
        body = json.dumps(value).encode()
        self._transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )


def _header(raw: bytes, name: bytes) -> bytes | None:
    """A header's value; `name` in lower case, found whatever case the client sent."""
    start = raw.lower().find(name)
    if start < 0:
        return None
    start += len(name)
    end = raw.find(b"\r\n", start)
    return raw[start : end if end >= 0 else len(raw)].strip()


async def serve(port: int) -> None:
    seen: list[tuple[str, float]] = []
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Receiving(seen), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
