"""The web dashboard in headless Chromium (Debian's `chromium`, driven by Playwright for
Python with `executable_path`: no browser is downloaded), against a real broker process with
an admin listener and a WebSocket listener, with real MQTT clients (paho, mosquitto_sub).

Each page is also saved as a screenshot (laptop size, 1366x768, and the Overview at tablet
size, 768x1024) into a temporary directory, or into $HBROKER_SCREENSHOTS when it is set:
`HBROKER_SCREENSHOTS=docs/images .venv/bin/python -m pytest tests/integration/test_dashboard.py`
refreshes the images of docs/observability.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from admin_client import call, wait_for
from broker_process import BrokerProcess, free_port
from clients import PahoClient
from playwright import sync_api as playwright  # a test dependency (pyproject.toml)

from hbroker.admin.tokens import hash_token

pytestmark = pytest.mark.xdist_group("browser")  # one Chromium at a time on a 2-core machine

ADMIN_TOKEN = "admin-token-for-the-dashboard-tests"
READ_TOKEN = "read-token-for-the-dashboard-tests"
LAPTOP = {"width": 1366, "height": 768}
TABLET = {"width": 768, "height": 1024}
UI_WAIT = 30_000  # milliseconds: Chromium on a loaded machine is slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class Dashboard:
    def __init__(self, broker: BrokerProcess, admin_port: int) -> None:
        self.broker = broker
        self.url = f"http://127.0.0.1:{admin_port}"
        self.api = self.url + "/api/v1"
        self.ws_port = next(lc["port"] for lc in broker.listeners if lc["type"] == "ws")

    def get(self, path: str) -> Any:
        status, body = call("GET", self.api + path, ADMIN_TOKEN)
        assert status == 200, (path, status, body)
        return body


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    workdir = tmp_path_factory.mktemp("dashboard-broker")
    admin_port = free_port()
    broker = BrokerProcess(workdir, {
        "storage": {"backend": "sqlite", "path": "data/hbroker.db"},
        "admin": {"enabled": True, "port": admin_port, "tokens": [
            {"name": "operator", "hash": hash_token(ADMIN_TOKEN), "role": "admin"},
            {"name": "viewer", "hash": hash_token(READ_TOKEN)}]}},
        listeners=[{"type": "tcp", "name": "main"},
                   # the dashboard's origin (the admin listener's) may open a WebSocket here
                   {"type": "ws", "name": "web",
                    "allowed_origins": [f"http://127.0.0.1:{admin_port}"]}])
    yield Dashboard(broker, admin_port)
    assert broker.stop() == 0, broker.log()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    assert Path(CHROMIUM).exists(), "chromium is missing: run make test-deps"
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        yield chromium
        chromium.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where screenshots go: $HBROKER_SCREENSHOTS (e.g. docs/images), else a temp dir."""
    target = Path(os.environ.get("HBROKER_SCREENSHOTS") or tmp_path / "screenshots")
    target.mkdir(parents=True, exist_ok=True)
    return target


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport=LAPTOP)
    tab = context.new_page()
    tab.set_default_timeout(UI_WAIT)
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("console", lambda message: errors.append(message.text)
           if message.type == "error" and "Content Security Policy" in message.text else None)
    yield tab
    context.close()
    assert not errors, f"the page's scripts failed: {errors}"


def log_in(page: Any, dashboard: Dashboard, hash_: str = "", token: str = ADMIN_TOKEN) -> None:
    page.goto(dashboard.url + "/" + hash_)
    page.fill("#token", token)
    page.click("#login-button")
    page.wait_for_selector("#app", state="visible")


def close(client: PahoClient) -> None:
    if client.disconnected.is_set():
        client.client.loop_stop()
    else:
        client.disconnect()


def number(page: Any, selector: str) -> int:
    text = page.inner_text(selector)
    digits = "".join(ch for ch in text if ch.isdigit())
    return int(digits) if digits else -1


class Publisher:
    """A paho client publishing QoS 0 messages to `topic` until stopped (in a thread), and
    a subscriber to them, so messages flow in and out while the page is looked at."""

    def __init__(self, broker: BrokerProcess, topic: str) -> None:
        self.subscriber = PahoClient(broker.host, broker.port, "overview-subscriber")
        self.subscriber.subscribe(topic)
        self.client = PahoClient(broker.host, broker.port, "overview-publisher")
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(topic,), daemon=True)
        self.thread.start()

    def _run(self, topic: str) -> None:
        n = 0
        while not self.stop.wait(0.02):
            n += 1
            self.client.publish(topic, f"reading {n}".encode())

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        close(self.client)
        close(self.subscriber)


def test_a_wrong_token_is_refused_and_the_right_one_logs_in(page: Any,
                                                            dashboard: Dashboard) -> None:
    page.goto(dashboard.url + "/")
    page.fill("#token", "not-the-token")
    page.click("#login-button")
    error = page.wait_for_selector("#login-error", state="visible")
    assert "Wrong token" in error.inner_text()
    assert page.is_hidden("#app")
    assert page.evaluate("sessionStorage.getItem('hbroker.token')") is None

    page.fill("#token", ADMIN_TOKEN)
    page.click("#login-button")
    page.wait_for_selector("#app", state="visible")
    assert page.is_hidden("#login")
    assert page.evaluate("sessionStorage.getItem('hbroker.token')") == ADMIN_TOKEN
    page.reload()  # the token is kept for the tab's life: no second login
    page.wait_for_selector("#app", state="visible")
    page.click("#logout")
    page.wait_for_selector("#login", state="visible")
    assert page.evaluate("sessionStorage.getItem('hbroker.token')") is None


def test_the_overview_counters_move_while_a_client_publishes(page: Any, browser: Any,
                                                             dashboard: Dashboard,
                                                             shots: Path) -> None:
    log_in(page, dashboard, "#/overview")
    page.wait_for_function("() => document.querySelector('#stat-received').textContent !== '…'")
    before = number(page, "#stat-received")
    publisher = Publisher(dashboard.broker, "plant/line-1/temperature")
    try:
        page.wait_for_function(
            f"() => Number(document.querySelector('#stat-received').textContent"
            f".replace(/\\D/g, '')) > {before} + 50")
        page.wait_for_function(
            "() => parseFloat(document.querySelector('#rate-in').textContent) > 0 && "
            "parseFloat(document.querySelector('#rate-out').textContent) > 0")
        assert number(page, "#stat-connections") >= 2
        assert number(page, "#stat-sessions") >= 2
        assert number(page, "#stat-subscriptions") >= 1
        assert page.inner_text("#stat-health") == "ready"
        assert page.inner_text("#storage-health") == "healthy"
        listeners = page.inner_text("#listeners")
        assert "main" in listeners and "web" in listeners, listeners
        # the chart draws the rates (a few samples, for a readable screenshot)
        page.wait_for_function(
            "() => Number(document.querySelector('#rate-chart').dataset.samples) >= 6")
        page.screenshot(path=str(shots / "dashboard-overview.png"))

        tablet = browser.new_context(viewport=TABLET)
        try:
            tab = tablet.new_page()
            tab.set_default_timeout(UI_WAIT)
            log_in(tab, dashboard, "#/overview")
            tab.wait_for_function(
                "() => parseFloat(document.querySelector('#rate-in').textContent) > 0")
            # nothing wider than the tablet's screen: the page does not scroll sideways
            assert tab.evaluate("document.documentElement.scrollWidth") <= TABLET["width"]
            tab.screenshot(path=str(shots / "dashboard-overview-tablet.png"), full_page=True)
        finally:
            tablet.close()
    finally:
        publisher.close()
    assert page.evaluate("document.documentElement.scrollWidth") <= LAPTOP["width"]


def test_the_overview_shows_the_cluster_instances_when_clustered(page: Any,
                                                                dashboard: Dashboard) -> None:
    # A clustered broker needs NATS (tests/cluster has those); here the broker's real /stats
    # answer gets the `cluster_instances` a clustered one sends, to see the page show them.
    def clustered(route: Any) -> None:
        response = route.fetch()
        body = response.json()
        assert body["cluster_instances"] is None  # this broker is not clustered
        body["cluster_instances"] = [{"name": "edge-a", "alive": True, "clients": 12},
                                     {"name": "edge-b", "alive": False, "clients": None}]
        route.fulfill(response=response, json=body)

    page.route("**/api/v1/stats", clustered)
    log_in(page, dashboard, "#/overview")
    page.wait_for_selector("#cluster", state="visible")
    text = page.inner_text("#cluster")
    assert "edge-a" in text and "alive" in text and "12" in text, text
    assert "edge-b" in text and "gone" in text, text


def test_a_client_is_found_in_the_table_and_kicked_after_confirmation(
        page: Any, dashboard: Dashboard, shots: Path) -> None:
    b = dashboard.broker
    others = [PahoClient(b.host, b.port, name, version=version, username=user)
              for name, version, user in (("gateway-hall-2", 5, "gateway"),
                                          ("sensor-boiler-7", 4, None),
                                          ("sensor-kitchen-3", 5, "sensors"))]
    target = PahoClient(b.host, b.port, "press-controller-12", version=5, username="plc")
    target.subscribe("plant/press-12/commands", qos=1)
    try:
        log_in(page, dashboard, "#/clients")
        page.wait_for_selector("text=press-controller-12")
        page.screenshot(path=str(shots / "dashboard-clients.png"))
        page.fill("#client-search", "press-contr")
        page.wait_for_function("() => document.querySelectorAll('#clients-table tbody tr')"
                               ".length === 1")
        assert "1 of" in page.inner_text("#client-count")
        page.click("a.client-link:text('press-controller-12')")
        page.wait_for_selector("#kick")
        page.wait_for_selector("text=plant/press-12/commands")
        assert "plc" in page.inner_text("main")
        page.screenshot(path=str(shots / "dashboard-client.png"))

        page.click("#kick")  # cancelled: nothing happens
        page.wait_for_selector("#confirm", state="visible")
        assert "press-controller-12" in page.inner_text("#confirm-text")
        page.click("#confirm-cancel")
        page.wait_for_selector("#confirm", state="hidden")
        assert not target.disconnected.is_set()
        assert dashboard.get("/clients?prefix=press-")["total"] == 1

        page.click("#kick")
        page.wait_for_selector("#confirm", state="visible")
        page.click("#confirm-ok")
        assert target.disconnected.wait(20), "the kicked client is still connected"
        assert target.disconnect_reason == 0x98  # Administrative action
        page.wait_for_selector("text=was kicked")
        page.wait_for_selector("text=This client is not connected.")
        wait_for(lambda: dashboard.get("/clients?prefix=press-")["total"] == 0,
                 "the kicked client gone from the API")
    finally:
        for c in [*others, target]:
            close(c)


def test_a_retained_message_is_deleted_and_a_new_subscriber_no_longer_gets_it(
        page: Any, dashboard: Dashboard, shots: Path) -> None:
    b = dashboard.broker
    publisher = PahoClient(b.host, b.port, "retained-publisher")
    for topic, payload in (("site/hall-2/status", b"online"),
                           ("site/hall-2/firmware", b'{"version": "4.2.1"}'),
                           ("site/hall-3/status", b"maintenance")):
        publisher.wait_acked({publisher.publish(topic, payload, qos=1, retain=True)})
    close(publisher)
    log_in(page, dashboard, "#/retained")
    page.fill("#retained-filter", "site/#")
    page.press("#retained-filter", "Enter")
    page.wait_for_selector("code.retained-topic:text('site/hall-3/status')")
    page.screenshot(path=str(shots / "dashboard-retained.png"))

    row = page.locator("tr", has=page.locator("code.retained-topic",
                                              has_text="site/hall-3/status"))
    row.locator("button.delete").click()
    page.wait_for_selector("#confirm", state="visible")
    assert "site/hall-3/status" in page.inner_text("#confirm-text")
    page.click("#confirm-ok")
    page.wait_for_selector("text=Retained message of \"site/hall-3/status\" deleted.")
    page.wait_for_function("() => !document.querySelector('main').textContent"
                           ".includes('maintenance')")

    # A new subscriber gets the retained messages first, then a marker published after it
    # subscribed: whatever came before the marker is all the retained messages it gets.
    subscriber = PahoClient(b.host, b.port, "retained-subscriber")
    try:
        subscriber.subscribe("site/#")
        marker = PahoClient(b.host, b.port, "retained-marker")
        marker.wait_acked({marker.publish("site/zz-marker", b"end", qos=1)})
        close(marker)
        got = []
        while True:
            message = subscriber.expect()
            if message.topic == "site/zz-marker":
                break
            got.append(message.topic)
        assert sorted(got) == ["site/hall-2/firmware", "site/hall-2/status"]
    finally:
        close(subscriber)


def test_the_try_it_page_publishes_over_websocket_to_mosquitto_sub(
        page: Any, dashboard: Dashboard, shots: Path) -> None:
    b = dashboard.broker
    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", b.host, "-p", str(b.port), "-V", "mqttv5", "-i",
         "try-it-observer", "-t", "dashboard/try", "-C", "1", "-W", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: dashboard.get("/subscriptions?client_id=try-it-observer")["total"],
                 "mosquitto_sub subscribed", 30)
        log_in(page, dashboard, "#/try")
        page.wait_for_function("() => document.querySelector('#try-url').value !== ''")
        assert page.input_value("#try-url") == f"ws://127.0.0.1:{dashboard.ws_port}/mqtt"
        page.fill("#try-client-id", "dashboard-try-it")
        page.click("#try-connect")
        page.wait_for_selector("#try-state:text('connected')")
        page.fill("#try-sub-topic", "dashboard/#")
        page.click("#try-subscribe")
        page.wait_for_selector("#try-log >> text=subscribed to dashboard/#")
        page.fill("#try-pub-topic", "dashboard/try")
        page.fill("#try-pub-payload", "hello from the browser")
        page.select_option("#try-pub-qos", "1")
        page.click("#try-publish")
        out, err = sub.communicate(timeout=60)
        assert sub.returncode == 0, err
        assert out.strip() == "hello from the browser"
        # the page's own subscription got it back
        page.wait_for_selector("#try-log .topic:text('dashboard/try')")
        page.screenshot(path=str(shots / "dashboard-try-it.png"))
        clients = dashboard.get("/clients?prefix=dashboard-try-it")["items"]
        assert [c["listener"] for c in clients] == ["web"]
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()


def test_sessions_and_subscriptions_are_listed_and_a_read_token_cannot_kick(
        page: Any, dashboard: Dashboard) -> None:
    b = dashboard.broker
    online = PahoClient(b.host, b.port, "valve-ctl-4", version=5, session_expiry=3600)
    online.subscribe("plant/valve-4/set", qos=1)
    try:
        log_in(page, dashboard, "#/sessions", token=READ_TOKEN)
        page.wait_for_selector("text=valve-ctl-4")
        assert "online" in page.inner_text("main")
        page.click("#nav a[data-page=subscriptions]")
        page.wait_for_selector("code:text('plant/valve-4/set')")

        page.goto(dashboard.url + "/#/clients/valve-ctl-4")
        page.click("#kick")
        page.click("#confirm-ok")
        refused = page.wait_for_selector("text=Kick failed")
        assert "role 'read'" in refused.inner_text(), refused.inner_text()
        assert not online.disconnected.is_set()
        assert dashboard.get("/clients?prefix=valve-ctl-")["total"] == 1
    finally:
        close(online)


def test_the_dashboard_files_are_served_without_a_token(dashboard: Dashboard) -> None:
    from admin_client import get

    status, body, headers = get(dashboard.url + "/")
    assert status == 200 and "<title>hbroker dashboard</title>" in body
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    status, body, headers = get(dashboard.url + "/ui/app.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    status, body, _ = get(dashboard.url + "/ui/vendor/mqtt.min.js")
    assert status == 200 and "mqtt" in body
    assert get(dashboard.url + "/ui/../server.py")[0] == 404
    assert get(dashboard.url + "/ui/nothing.js")[0] == 404
    # the data is not public: the API still wants the token
    assert get(dashboard.api + "/stats")[0] == 401
