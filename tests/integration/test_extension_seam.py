"""The extension seam end to end: a broker process with the example hooks loaded
(`hbroker serve --hook`), checked with real clients: the events a hook sees, in order; an
acknowledgement a hook holds; and the in-process client under the ACL."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from broker_process import ROOT, BrokerProcess
from clients import WAIT, PahoClient

HERE = Path(__file__).resolve().parent

# The rules' username reads the sensors and publishes alerts, nothing else; every other
# client may do anything.
ACL = """
[[rules]]
users = ["rules"]
topics = ["sensors/#"]
actions = ["subscribe", "read"]
permission = "allow"

[[rules]]
users = ["rules"]
topics = ["alerts/#"]
actions = ["publish", "subscribe", "read"]
permission = "allow"

[[rules]]
users = ["rules"]
topics = ["#"]
actions = ["publish", "subscribe", "read"]
permission = "deny"

[[rules]]
users = ["*"]
topics = ["#"]
actions = ["publish", "subscribe", "read"]
permission = "allow"
"""


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerProcess]:
    with tempfile.TemporaryDirectory(prefix="hbroker-seam-") as tmp:
        workdir = Path(tmp)
        (workdir / "acl.toml").write_text(ACL)
        hooks = [f"{ROOT}/examples/hooks/event_log.py:EventLog",
                 f"{ROOT}/examples/rules/temperature_alerts.py:TemperatureAlerts",
                 f"{HERE}/seam_hooks.py:Gate", f"{HERE}/seam_hooks.py:Probe"]
        b = BrokerProcess(workdir, {"acl": {"file": str(workdir / "acl.toml")}},
                          args=[arg for spec in hooks for arg in ("--hook", spec)])
        yield b
        assert b.stop() == 0, b.log()


def events(broker: BrokerProcess) -> list[dict[str, Any]]:
    path = broker.workdir / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def wait_for_event(broker: BrokerProcess, **fields: Any) -> list[dict[str, Any]]:
    """Every event so far, once one with `fields` is among them."""
    deadline = time.monotonic() + WAIT
    while True:
        seen = events(broker)
        if any(all(e.get(k) == v for k, v in fields.items()) for e in seen):
            return seen
        assert time.monotonic() < deadline, f"no event {fields}:\n{seen}\n{broker.log()}"
        time.sleep(0.05)


def test_a_hook_sees_a_clients_events_in_order(broker: BrokerProcess) -> None:
    c = PahoClient(broker.host, broker.port, "seam-events")
    assert c.subscribe("ev/#", 1) == [1]
    c.publish("ev/r", b"v", qos=1, retain=True)
    c.publish("ev/r", b"", qos=1, retain=True)
    c.client.unsubscribe("ev/#")
    wait_for_event(broker, event="unsubscribed", client_id="seam-events")
    c.disconnect()
    seen = wait_for_event(broker, event="disconnected", client_id="seam-events")
    mine = [e for e in seen if e.get("client_id") == "seam-events" or
            e.get("topic") == "ev/r"]
    assert [e["event"] for e in mine] == [
        "session_created", "connected", "subscribed", "published", "retained_set",
        "published", "retained_cleared", "unsubscribed", "session_ended", "disconnected"]
    assert mine[2]["filter"] == "ev/#" and mine[2]["new"] is True
    assert mine[6]["reason"] == "empty_payload"
    assert mine[8]["reason"] == "disconnected"


def test_resumed_and_taken_over_sessions(broker: BrokerProcess) -> None:
    first = PahoClient(broker.host, broker.port, "seam-takeover", clean=False,
                       session_expiry=60)
    second = PahoClient(broker.host, broker.port, "seam-takeover", clean=False,
                        session_expiry=60)
    assert second.session_present
    second.disconnect()
    first.client.loop_stop()
    seen = wait_for_event(broker, event="session_resumed", client_id="seam-takeover")
    mine = [e["event"] for e in seen if e.get("client_id") == "seam-takeover"]
    assert mine[:4] == ["session_created", "connected", "session_taken_over",
                        "session_resumed"]


def test_a_holding_hook_delays_the_puback_until_it_releases(broker: BrokerProcess) -> None:
    watcher = PahoClient(broker.host, broker.port, "seam-gate-watcher")
    assert watcher.subscribe("gate/#", 1) == [1]
    publisher = PahoClient(broker.host, broker.port, "seam-gate-publisher")
    held = publisher.publish("gate/held/1", b"a", qos=1, wait=False)
    behind = publisher.publish("gate/after", b"b", qos=1, wait=False)
    # Both were routed (the watcher has them), neither is acknowledged: the first is held by
    # the hook, the second waits behind it (acknowledgements go in PUBLISH order).
    assert [watcher.expect().topic for _ in range(2)] == ["gate/held/1", "gate/after"]
    assert not publisher.wait_acked({held}, timeout=0) and not publisher.acks
    opener = PahoClient(broker.host, broker.port, "seam-gate-opener")
    opener.publish("gate/open", b"", qos=1)
    assert publisher.wait_acked({held, behind}), "the PUBACKs did not follow the release"
    for c in (watcher, publisher, opener):
        c.disconnect()


def test_the_rule_republishes_readings_above_its_threshold(broker: BrokerProcess) -> None:
    wait_for_event(broker, event="subscribed", client_id="rule-temperature-alerts")
    watcher = PahoClient(broker.host, broker.port, "seam-alerts-watcher")
    assert watcher.subscribe("alerts/+/temp", 1) == [1]
    sensor = PahoClient(broker.host, broker.port, "seam-sensor")
    sensor.publish("sensors/room1/temp", b"21.5", qos=1)
    sensor.publish("sensors/room2/temp", b"35", qos=1)
    alert = watcher.expect()  # the one above the threshold, and only it
    assert (alert.topic, alert.payload) == ("alerts/room2/temp", b"35")
    for c in (watcher, sensor):
        c.disconnect()


def test_the_in_process_client_is_under_the_acl(broker: BrokerProcess) -> None:
    watcher = PahoClient(broker.host, broker.port, "seam-probe-watcher")
    assert watcher.subscribe("alerts/probe/#", 1) == [1]
    assert watcher.expect().topic == "alerts/probe/ready"  # retained: the probe is up
    commander = PahoClient(broker.host, broker.port, "seam-probe-commander")
    commander.publish("sensors/probe/cmd", b"alerts/probe/allowed", qos=1)
    allowed = watcher.expect()
    assert (allowed.topic, allowed.payload) == ("alerts/probe/allowed", b"probe")
    result = watcher.expect()
    assert (result.topic, result.payload) == ("alerts/probe/result", b"alerts/probe/allowed 0")
    commander.publish("sensors/probe/cmd", b"forbidden/x", qos=1)
    result = watcher.expect()
    assert (result.topic, result.payload) == ("alerts/probe/result", b"forbidden/x 135")
    for c in (watcher, commander):
        c.disconnect()
