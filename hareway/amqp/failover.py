"""Several broker addresses (the nodes of a cluster), one robust connection over them.

`RABBITMQ_URL` may list addresses separated by commas: `amqp://u:p@node1/,amqp://u:p@node2/`.
The first connect takes the first address that answers. After the connection is lost,
aio-pika's recovery loop reconnects and restores channels and consumers as usual; each of
its attempts here tries the other addresses first, then the one that was lost, and the
loop waits its interval only when none answered.
"""

from __future__ import annotations

import re
from typing import Any

from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aio_pika.robust_connection import RobustConnection
from yarl import URL

# A comma (or white space) separates addresses only before the next `scheme://`: a comma
# in a password that was not percent-encoded stays in its address instead of cutting the
# password in two (and printing half of it where the "URL" is reported as broken).
_SEPARATORS = re.compile(r"[,\s]+(?=[A-Za-z][A-Za-z0-9+.-]*://)")
_TRIM = ", \t\r\n"


def addresses(url: str) -> list[str]:
    """The broker addresses one `RABBITMQ_URL` names, in order."""
    found = [part.strip(_TRIM) for part in _SEPARATORS.split(url.strip(_TRIM))]
    found = [part for part in found if part]
    if not found:
        raise ValueError("RABBITMQ_URL names no broker address")
    return found


class FailoverConnection(RobustConnection):
    def __init__(self, urls: list[str], **kwargs: Any) -> None:
        # Query parameters (heartbeat, ...) are read from the first address, for all.
        super().__init__(URL(urls[0]), **kwargs)
        self._addresses = [URL(url) for url in urls]
        self._current = 0

    async def _RobustConnection__connect_transport(self) -> None:
        """Overrides aio-pika's one-address attempt (name-mangled, hence the spelling)."""
        count = len(self._addresses)
        # The address that was lost goes last: a dead node may take a connect timeout.
        first = self._current + 1 if self.connection_attempt else self._current
        failure: BaseException | None = None
        for offset in range(count):
            index = (first + offset) % count
            self.url = self._addresses[index]
            try:
                await super()._RobustConnection__connect_transport()  # type: ignore[misc]
            except CONNECTION_EXCEPTIONS as exc:
                failure = exc
                continue
            self._current = index
            return
        assert failure is not None
        raise failure
