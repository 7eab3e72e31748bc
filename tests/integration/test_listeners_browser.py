"""A browser client: MQTT.js in headless Chromium over `ws` and `wss` listeners.

Chromium (Debian's `chromium`) and MQTT.js (npm `mqtt`, in build/browser) are installed by
tools/install-test-deps.sh (`make test-deps`). The page is served over HTTP from another port
of 127.0.0.1, so its origin is not the listener's: it may connect only where the listener's
`allowed_origins` names it. The page reports through the broker itself: it publishes when it
is connected and echoes what it receives, and a paho client on a tcp listener checks both."""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from broker_process import ROOT, BrokerProcess
from certs import PKI
from clients import WAIT
from listener_clients import Paho

# One Chromium at a time on a 2-core machine: the dashboard's test (test_dashboard.py) is in
# the same xdist group.
pytestmark = pytest.mark.xdist_group("browser")

MQTT_JS = ROOT / "build" / "browser" / "node_modules" / "mqtt" / "dist" / "mqtt.min.js"
BROWSER_WAIT = 30.0  # seconds: Chromium's first start on a loaded machine is slow

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>hbroker browser test</title>
<script src="{mqtt_js}"></script></head>
<body><script>
const client = mqtt.connect({url}, {{clientId: "browser-client", protocolVersion: 5,
                                     reconnectPeriod: 0}});
client.on("connect", () => {{
  client.subscribe("browser/in", {{qos: 1}}, () => {{
    client.publish("browser/ready", navigator.userAgent, {{qos: 1}});
  }});
}});
client.on("message", (topic, payload) => {{
  client.publish("browser/out", "echo: " + payload.toString(), {{qos: 1}});
}});
client.on("error", (err) => {{ document.title = "error: " + err; }});
</script></body></html>
"""



@pytest.fixture
def web_server(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A plain HTTP server on another port of 127.0.0.1 serving `site/` (the test page and
    MQTT.js): the pages' origin, which is not the broker's. Yields (site, origin)."""
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(MQTT_JS, site / "mqtt.min.js")
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield site, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(WAIT)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        pass


@pytest.fixture
def start_broker(tmp_path: Path, pki: PKI) -> Iterator[Any]:
    """start_broker(allowed_origins): a broker with a tcp, a ws and a wss listener, the
    WebSocket ones with these allowed_origins (None: not set)."""
    started: list[BrokerProcess] = []

    def start(allowed_origins: list[str] | None) -> BrokerProcess:
        origins = {} if allowed_origins is None else {"allowed_origins": allowed_origins}
        workdir = tmp_path / f"broker{len(started)}"
        workdir.mkdir()
        b = BrokerProcess(workdir, {"storage": {"backend": "memory"}}, listeners=[
            {"type": "tcp"},
            {"type": "ws", "name": "web", **origins},
            {"type": "wss", "name": "secure-web", "certfile": str(pki.server.cert),
             "keyfile": str(pki.server.key), **origins},
        ])
        started.append(b)
        return b

    yield start
    for b in started:
        assert b.stop() == 0, b.log()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """browser(url_of_page): headless Chromium showing the page until the test ends."""
    chromium = shutil.which("chromium")
    assert chromium is not None, "chromium is missing: run make test-deps"
    assert MQTT_JS.is_file(), f"{MQTT_JS} is missing: run make test-deps"
    started: list[subprocess.Popen] = []

    def open_page(url: str) -> None:
        proc = subprocess.Popen(
            [chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
             "--ignore-certificate-errors",  # the test CA is not in Chromium's store
             f"--user-data-dir={tmp_path / 'chromium-profile'}",
             "--remote-debugging-port=0", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        started.append(proc)

    yield open_page
    for proc in started:
        os.killpg(proc.pid, signal.SIGTERM)  # Chromium and the processes it started
        proc.wait(timeout=30)


def show_page(site: Path, origin: str, browser: Any, broker: BrokerProcess,
              listener: str) -> None:
    """Chromium opens a page of `origin` whose MQTT.js connects to the broker's listener."""
    port = next(lc["port"] for lc in broker.listeners if lc["type"] == listener)
    (site / "page.html").write_text(PAGE.format(
        mqtt_js="mqtt.min.js", url=json.dumps(f"{listener}://127.0.0.1:{port}/mqtt")))
    browser(f"{origin}/page.html")


@pytest.mark.parametrize("listener", ["ws", "wss"])
def test_mqtt_js_in_a_browser_publishes_and_receives(start_broker: Any, browser: Any,
                                                     web_server: tuple[Path, str],
                                                     listener: str) -> None:
    site, origin = web_server
    broker = start_broker([origin])  # the page's origin may connect
    observer = Paho("browser-observer", broker.port)
    observer.subscribe("browser/ready")
    observer.subscribe("browser/out")
    show_page(site, origin, browser, broker, listener)

    ready = observer.expect(BROWSER_WAIT)
    assert ready.topic == "browser/ready"
    assert b"HeadlessChrome" in ready.payload or b"Chrome" in ready.payload, ready.payload
    observer.publish("browser/in", b"hello from paho")
    echo = observer.expect()
    assert (echo.topic, echo.payload) == ("browser/out", b"echo: hello from paho")
    name = "web" if listener == "ws" else "secure-web"
    assert any("client connected client_id=browser-client" in line and f"listener={name}" in line
               for line in broker.log().splitlines())
    observer.close()


@pytest.mark.parametrize("listener", ["ws", "wss"])
def test_a_page_of_another_origin_cannot_connect_by_default(start_broker: Any, browser: Any,
                                                           web_server: tuple[Path, str],
                                                           listener: str) -> None:
    # A web page on another port of the same machine: by default only the listener's own
    # origin may open a WebSocket to it, so this page (any site open in a browser on the
    # gateway) cannot use the loopback listener, anonymous clients allowed or not.
    site, origin = web_server
    broker = start_broker(None)
    show_page(site, origin, browser, broker, listener)
    name = "web" if listener == "ws" else "secure-web"
    line = wait_for_line(broker, "websocket: origin not allowed")
    assert f"origin={origin} " in line and f"listener={name}" in line, line
    assert any("websocket: upgrade refused" in line and "status=403" in line
               for line in broker.log().splitlines())
    assert "client connected client_id=browser-client" not in broker.log()


def wait_for_line(broker: BrokerProcess, text: str) -> str:
    deadline = time.monotonic() + BROWSER_WAIT
    while time.monotonic() < deadline:
        for line in broker.log().splitlines():
            if text in line:
                return line
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not logged:\n{broker.log()}")
