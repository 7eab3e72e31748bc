"""A browser client: MQTT.js in headless Chromium over `ws` and `wss` listeners.

Chromium (Debian's `chromium`) and MQTT.js (npm `mqtt`, in build/browser) are installed by
tools/install-test-deps.sh (`make test-deps`). The page reports through the broker itself: it
publishes when it is connected and echoes what it receives, and a paho client on a tcp
listener checks both."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from broker_process import ROOT, BrokerProcess
from certs import PKI
from listener_clients import Paho

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
def broker(tmp_path: Path, pki: PKI) -> Iterator[BrokerProcess]:
    workdir = tmp_path / "broker"
    workdir.mkdir()
    b = BrokerProcess(workdir, {"storage": {"backend": "memory"}}, listeners=[
        {"type": "tcp"},
        {"type": "ws", "name": "web"},
        {"type": "wss", "name": "secure-web", "certfile": str(pki.server.cert),
         "keyfile": str(pki.server.key)},
    ])
    yield b
    assert b.stop() == 0, b.log()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """browser(url_of_page): headless Chromium showing the page until the test ends."""
    chromium = shutil.which("chromium")
    assert chromium is not None, "chromium is missing: run make test-deps"
    assert MQTT_JS.is_file(), f"{MQTT_JS} is missing: run make test-deps"
    started: list[subprocess.Popen] = []

    def open_page(page: Path) -> None:
        proc = subprocess.Popen(
            [chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
             "--ignore-certificate-errors",  # the test CA is not in Chromium's store
             f"--user-data-dir={tmp_path / 'chromium-profile'}",
             "--remote-debugging-port=0", page.as_uri()],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        started.append(proc)

    yield open_page
    for proc in started:
        os.killpg(proc.pid, signal.SIGTERM)  # Chromium and the processes it started
        proc.wait(timeout=30)


@pytest.mark.parametrize("listener", ["ws", "wss"])
def test_mqtt_js_in_a_browser_publishes_and_receives(broker: BrokerProcess, browser: Any,
                                                     tmp_path: Path, listener: str) -> None:
    port = next(lc["port"] for lc in broker.listeners if lc["type"] == listener)
    observer = Paho("browser-observer", broker.port)
    observer.subscribe("browser/ready")
    observer.subscribe("browser/out")
    page = tmp_path / "page.html"
    page.write_text(PAGE.format(mqtt_js=MQTT_JS.as_uri(),
                                url=json.dumps(f"{listener}://127.0.0.1:{port}/mqtt")))
    browser(page)

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
