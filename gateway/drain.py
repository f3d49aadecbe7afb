"""Graceful drain on SIGTERM or SIGINT (Guarantee 7), for a load balancer in front.

uvicorn, given the signal, stops accepting at once and exits with the signal's code
(143 for SIGTERM). A load balancer would still send requests to an address that refuses
them. Here the first signal only starts a drain: `/readyz` answers 503 and every answer
carries `Connection: close`, so clients and the balancer move to other gateways, while
this one keeps accepting and answering for `delay_s`. Then it stops accepting, and only
`LAST_READS_S` later starts uvicorn's own graceful shutdown: uvicorn closes at once every
connection with no request parsed yet, and a client that connected just before the
listening socket closed has usually sent its request without the gateway having read it;
the pause lets those requests arrive and be answered. uvicorn then answers every request
it has read (a publish within its timeout: confirmed or 503; long polls and streams are
told to end as the gateway stops accepting, `on_stop`), closes the broker
connection in the lifespan, and the process exits 0. A second signal skips the rest of
the delay; a third stops at once.

The signal is taken from uvicorn's server by replacing its handler on the event loop; the
server is the one whose `handle_exit` uvicorn installed, checked at start, so a gateway
served any other way (a test's ASGI transport) simply does not drain.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

import uvicorn

log = logging.getLogger(__name__)

_SIGNALS = (signal.SIGTERM, signal.SIGINT)

# Between closing the listening sockets and uvicorn's shutdown: long enough for a request
# already on its way over a fresh connection (loopback or a LAN: well under 100 ms).
LAST_READS_S = 0.3


class Drain:
    """Whether this gateway process is draining; read on every request, so a plain flag."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.draining = False
        self._signals = 0
        self._server: uvicorn.Server | None = None
        self._stop: asyncio.TimerHandle | None = None
        # Called as the gateway stops accepting: long polls and streams end then, or
        # uvicorn's graceful shutdown would wait for them.
        self.on_stop: list[Callable[[], None]] = []

    def take_signals(self) -> bool:
        """Take SIGTERM and SIGINT over from the uvicorn server running this app."""
        handlers = [signal.getsignal(signum) for signum in _SIGNALS]
        servers = {getattr(handler, "__self__", None) for handler in handlers}
        server = servers.pop() if len(servers) == 1 else None
        if not isinstance(server, uvicorn.Server) or not hasattr(server, "should_exit"):
            return False
        self._server = server
        loop = asyncio.get_running_loop()
        for signum in _SIGNALS:
            loop.add_signal_handler(signum, self._on_signal, signum)
        return True

    def _on_signal(self, signum: int) -> None:
        server = self._server
        assert server is not None
        self._signals += 1
        if self._signals == 1:
            self.draining = True
            log.info(
                "%s: draining; /readyz answers 503, and the gateway stops accepting in %gs",
                signal.Signals(signum).name,
                self.delay_s,
            )
            self._stop = asyncio.get_running_loop().call_later(self.delay_s, self._stop_serving)
        elif self._signals == 2:
            if self._stop is not None:
                self._stop.cancel()
            self._stop_serving()
        else:
            server.force_exit = True

    def _stop_serving(self) -> None:
        server = self._server
        assert server is not None
        log.info("drained: no new connections; answering what was read, then stopping")
        for callback in self.on_stop:
            callback()
        # uvicorn sets `servers` (its asyncio servers) after the lifespan has started, so
        # it cannot be checked at start; without it, uvicorn's shutdown closes them.
        for listening in getattr(server, "servers", ()):
            listening.close()
        asyncio.get_running_loop().call_later(LAST_READS_S, self._shut_down)

    def _shut_down(self) -> None:
        assert self._server is not None
        # Not uvicorn's handle_exit: that would re-raise the signal at the end, and the
        # process would exit 143 instead of 0 after a clean shutdown.
        self._server.should_exit = True
