"""The browser caller, for real: a page served from another port publishes to a gateway
process cross-origin with `fetch()` in headless Chromium (Debian's `chromium`), reads the
headers the gateway exposes, and finds the gateway's phases in its own
`PerformanceResourceTiming.serverTiming`, which Chromium fills only under
`Timing-Allow-Origin`."""

from __future__ import annotations

import html
import json
import re
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aio_pika.abc import AbstractConnection

from tests.conftest import Names
from tests.support.chromium import CHROMIUM, MISSING, rendered
from tests.support.processes import free_port, start_gateway

pytestmark = [pytest.mark.broker, pytest.mark.slow]

PAGE = """<!doctype html>
<html><body><pre id="result">pending</pre>
<script>
(async () => {
  const url = %(url)s;
  const out = {};
  try {
    const response = await fetch(url, {
      method: "POST",
      // Not a "simple" request: application/json and these headers need a preflight.
      headers: {
        "Content-Type": "application/json",
        "Idempotency-Key": "browser-1",
        "X-Request-ID": "browser-request-1",
      },
      body: JSON.stringify({routing_key: "order.created", payload: {order_id: 7}}),
    });
    out.status = response.status;
    out.location = response.headers.get("Location");
    out.serverTimingHeader = response.headers.get("Server-Timing");
    out.requestId = response.headers.get("X-Request-ID");
    out.body = await response.json();
    let entry;
    for (let i = 0; i < 50 && !entry; i++) {
      entry = performance.getEntriesByType("resource").find((e) => e.name === url);
      if (!entry) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    out.serverTiming = entry ? entry.serverTiming.map(
      (t) => ({name: t.name, description: t.description, duration: t.duration})
    ) : null;
  } catch (error) {
    out.error = String(error);
  }
  document.getElementById("result").textContent = "RESULT" + JSON.stringify(out) + "END";
})();
</script></body></html>
"""


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def page_server(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A static file server on a port of its own: the page's origin, not the gateway's."""
    root = tmp_path / "site"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def result_of(dom: str) -> dict[str, Any]:
    # The first: the page's <pre> comes before the script that names the markers too.
    found = re.search(r"RESULT(\{.*?\})END", html.unescape(dom), re.DOTALL)
    assert found is not None, dom[:2000]
    result: dict[str, Any] = json.loads(found[1])
    return result


@pytest.mark.timeout(150)
async def test_a_cross_origin_page_reads_the_gateways_timing_and_headers(
    rabbitmq_url: str,
    sqlite_url: str,
    topology_file: Path,
    tmp_path: Path,
    names: Names,
    amqp: AbstractConnection,
    page_server: tuple[Path, str],
) -> None:
    assert CHROMIUM is not None, f"no Chromium to load the page in: {MISSING}"
    root, origin = page_server
    gateway_port = free_port()
    assert f":{gateway_port}" not in origin
    gateway, base_url = await start_gateway(
        {
            "RABBITMQ_URL": rabbitmq_url,
            "DATABASE_URL": sqlite_url,
            "TOPOLOGY_FILE": str(topology_file),
            "CORS_ALLOW_ORIGINS": origin,
            "ACCESS_LOG": "true",
        },
        tmp_path / "gateway.log",
    )
    url = f"{base_url}/v1/exchanges/{names.exchange}/messages"
    (root / "publish.html").write_text(PAGE % {"url": json.dumps(url)})
    try:
        dom = await rendered(f"{origin}/publish.html", tmp_path / "profile")
    finally:
        await gateway.stop()
    log = gateway.output()
    result = result_of(dom)
    assert "error" not in result, (result, log[-3000:])
    assert result["status"] == 202
    message_id = result["body"]["message_id"]
    # Exposed headers a cross-origin script could not read otherwise.
    assert result["location"] == f"/v1/messages/{message_id}"
    assert result["requestId"] == "browser-request-1"
    assert "confirm;" in result["serverTimingHeader"]
    # The browser's own account of the gateway's phases.
    timing = result["serverTiming"]
    assert timing is not None, "no resource timing entry for the publish"
    assert [(t["name"], t["description"]) for t in timing] == [
        ("validate", ""),
        ("publish", "to the channel"),
        ("confirm", "broker confirm"),
    ]
    assert all(t["duration"] >= 0 for t in timing)
    assert sum(t["duration"] for t in timing) > 0
    # The browser preflighted first, and the gateway answered (and logged) the preflight.
    path = f"/v1/exchanges/{re.escape(names.exchange)}/messages"
    preflight = re.search(rf"method=OPTIONS path={path} request_id=\S+ status=200", log)
    assert preflight is not None, log[-3000:]
    channel = await amqp.channel()
    try:
        queue = await channel.declare_queue(names.queue, passive=True)
        message = await queue.get(timeout=5)
        assert message.message_id == message_id
        assert json.loads(message.body) == {"order_id": 7}
        await message.ack()
    finally:
        await channel.close()
