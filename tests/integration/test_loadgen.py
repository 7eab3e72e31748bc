"""The benchmark load generator (bench/loadgen) and relay (bench/relay) against a real hbroker.

Short runs (about a second each) that check what the load generator reports, never how fast:
every message delivered as often as its subscriptions say, nothing lost or doubled at QoS 1/2.
"""

from __future__ import annotations

import fcntl
import json
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from broker_process import ROOT, BrokerProcess, free_port

LOADGEN = ROOT / "bench" / "loadgen" / "loadgen"
RELAY = ROOT / "bench" / "relay" / "relay"
MAX_INFLIGHT = 100  # the broker's Receive Maximum: admits the windows used here
# A QoS 1 subscriber is sent at most max_inflight + max_queued_messages retained messages on
# subscribing (the rest are dropped, as Mosquitto does): room for the 2000 of the test.
MAX_QUEUED = 5000
SHORT = ("--duration", "1", "--warmup", "0.2")


@pytest.fixture(scope="module")
def programs() -> None:
    """Build loadgen and relay once (under a lock: xdist workers build the same tree)."""
    lock_path = Path(tempfile.gettempdir()) / "hbroker-bench-build.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for directory in ("bench/loadgen", "bench/relay"):
            done = subprocess.run(["make", "-C", str(ROOT / directory)], capture_output=True,
                                  text=True, timeout=120)
            assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def hbroker(programs: None) -> Iterator[BrokerProcess]:
    with tempfile.TemporaryDirectory(prefix="hbroker-loadgen-") as tmp:
        b = BrokerProcess(Path(tmp), {"logging": {"level": "warning"},
                                      "storage": {"backend": "memory"},
                                      "limits": {"max_inflight": MAX_INFLIGHT,
                                                 "max_queued_messages": MAX_QUEUED}})
        yield b
        assert b.stop() == 0, b.log()


@pytest.fixture(scope="module")
def durable_hbroker(programs: None) -> Iterator[BrokerProcess]:
    """hbroker with SQLite storage in sync mode: messages for persistent sessions are stored."""
    with tempfile.TemporaryDirectory(prefix="hbroker-loadgen-durable-") as tmp:
        b = BrokerProcess(Path(tmp), {"logging": {"level": "warning"},
                                      "storage": {"backend": "sqlite",
                                                  "path": f"{tmp}/state.db", "mode": "sync"},
                                      "limits": {"max_inflight": MAX_INFLIGHT,
                                                 "max_queued_messages": MAX_QUEUED}})
        yield b
        assert b.stop() == 0, b.log()


@pytest.fixture(scope="module")
def relay(programs: None) -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen([str(RELAY), "--port", str(port)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "relay did not start"
            time.sleep(0.02)
    yield port
    proc.terminate()
    assert proc.wait(10) == 0


def loadgen(port: int, *args: str, expect_status: int = 0) -> dict[str, Any]:
    done = subprocess.run([str(LOADGEN), "--port", str(port), *args], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == expect_status, done.stderr + done.stdout
    report = json.loads(done.stdout)
    assert report["ok"] is (expect_status == 0), report["errors"]
    return report


def assert_every_message_delivered(report: dict[str, Any]) -> None:
    """Deliveries match publications times the subscribers of each message: exactly over the
    whole run (drained at the end), within the publishers' windows over the measured part."""
    totals, fanout = report["totals"], report["deliveries_per_message"]
    params = report["params"]
    assert report["published"] > 0 and report["delivered"] > 0
    assert report["latency_us"]["samples"] > 0
    assert totals["misrouted"] == 0 and totals["foreign"] == 0
    slack = params["pubs"] * params["window"] * fanout
    assert abs(report["delivered"] - report["published"] * fanout) <= slack
    if params["qos"] >= 1:
        assert totals["lost"] == 0
        assert totals["duplicates"] == 0
        assert totals["unacked"] == 0
        assert totals["acked"] == totals["published"]
        assert totals["delivered"] == totals["published"] * fanout
    else:
        assert totals["delivered"] > 0


@pytest.mark.parametrize("write", ["batch", "single"])
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_one_to_one_delivers_every_message(hbroker: BrokerProcess, qos: int,
                                           write: str) -> None:
    report = loadgen(hbroker.port, "--qos", str(qos), "--write", write, *SHORT)
    assert report["deliveries_per_message"] == 1
    assert_every_message_delivered(report)
    if write == "single":  # one write() per packet: at least one per message published
        assert report["syscalls"]["writes"] >= report["published"]


def test_one_to_one_over_mqtt5_qos2(hbroker: BrokerProcess) -> None:
    report = loadgen(hbroker.port, "--v5", "--qos", "2", "--window", str(MAX_INFLIGHT), *SHORT)
    assert report["params"]["protocol"] == "5.0"
    assert_every_message_delivered(report)


def test_window_above_receive_maximum_is_refused(hbroker: BrokerProcess) -> None:
    report = loadgen(hbroker.port, "--v5", "--qos", "1", "--window", str(MAX_INFLIGHT + 1),
                     *SHORT, expect_status=1)
    assert "Receive Maximum 100" in report["errors"]["messages"][0]
    assert report["totals"]["published"] == 0


def test_fan_out_reaches_every_subscriber(hbroker: BrokerProcess) -> None:
    report = loadgen(hbroker.port, "--qos", "1", "--pubs", "1", "--subs", "4", "--sub-mode",
                     "all", *SHORT)
    assert report["deliveries_per_message"] == 4
    assert_every_message_delivered(report)


def test_many_to_many_wildcard_routes_each_topic_to_its_subscriber(
        hbroker: BrokerProcess) -> None:
    report = loadgen(hbroker.port, "--qos", "1", "--pubs", "4", "--subs", "4", "--topics", "20",
                     "--sub-mode", "wildcard", *SHORT)
    assert report["deliveries_per_message"] == 1
    assert_every_message_delivered(report)
    assert report["totals"]["out_of_order"] == 0


def test_subscribers_connect_to_the_sub_port(programs: None, tmp_path: Path) -> None:
    """--sub-port (bench/cluster.py: publisher and subscriber on two instances of a cluster):
    here two listeners of one broker, the subscriber on the second; and a --sub-port where
    nothing listens fails the subscriber's connection, not the publisher's."""
    b = BrokerProcess(tmp_path, {"logging": {"level": "warning"},
                                 "storage": {"backend": "memory"}},
                      listeners=[{"type": "tcp"}, {"type": "tcp"}])
    try:
        second = b.listeners[1]["port"]
        report = loadgen(b.port, "--sub-port", str(second), "--qos", "1", *SHORT)
        assert report["params"]["port"] == b.port
        assert report["params"]["sub_port"] == second
        assert_every_message_delivered(report)
        nobody = free_port()
        report = loadgen(b.port, "--sub-port", str(nobody), *SHORT, expect_status=1)
        assert report["errors"]["messages"][0].startswith(
            f"subscriber 0: connect to 127.0.0.1:{nobody} failed"), report["errors"]
    finally:
        assert b.stop() == 0, b.log()


def test_idle_connections_all_connect_and_answer_pings(hbroker: BrokerProcess) -> None:
    report = loadgen(hbroker.port, "--idle", "200", "--keepalive", "1", "--duration", "1.2")
    idle = report["idle"]
    assert idle["connected"] == 200
    assert idle["failed"] == 0 and idle["dropped"] == 0
    assert idle["pings_sent"] > 0
    assert idle["pings_answered"] == idle["pings_sent"]


def test_retained_messages_are_all_delivered_to_a_new_subscriber(
        hbroker: BrokerProcess) -> None:
    report = loadgen(hbroker.port, "--retained", "2000", "--window", str(MAX_INFLIGHT),
                     "--qos", "1", "--retained-clear")
    retained = report["retained"]
    assert retained["acked"] == 2000
    assert retained["delivered"] == 2000
    assert retained["duplicates"] == 0 and retained["not_retained"] == 0
    assert retained["cleared"] is True


def stored_sessions(broker: BrokerProcess, prefix: str) -> dict[str, dict[str, Any]]:
    """The sessions `hbroker storage inspect` lists for the clients of one loadgen run."""
    done = broker.cli("storage", "inspect", "--json")
    assert done.returncode == 0, done.stderr
    return {s["client_id"]: s for s in json.loads(done.stdout)["sessions"]
            if s["client_id"].startswith(prefix + "-")}


def end_session(port: int, client_id: str) -> None:
    """Connect with clean session 1 (3.1.1), which discards the stored session, and leave."""
    payload = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(client_id).to_bytes(2, "big") \
        + client_id.encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(bytes([0x10, len(payload)]) + payload)
        assert sock.recv(4) == b"\x20\x02\x00\x00"
        sock.sendall(b"\xe0\x00")


@pytest.mark.parametrize("protocol", [["--v5"], []], ids=["5.0", "3.1.1"])
def test_persistent_subscriber_sessions_get_every_message_and_are_ended(
        durable_hbroker: BrokerProcess, protocol: list[str]) -> None:
    prefix = f"lg-{uuid.uuid4().hex[:8]}"
    report = loadgen(durable_hbroker.port, *protocol, "--session-expiry", "60", "--qos", "1",
                     "--client-prefix", prefix, *SHORT)
    assert report["params"]["session_expiry"] == 60
    assert report["params"]["keep_sessions"] is False
    assert_every_message_delivered(report)
    assert report["totals"]["duplicates"] == 0
    assert report["sessions"] == {"persistent": 1, "ended": 1, "not_ended": 0}
    # the broker drops a session's rows with its next commit: wait for it, not for a time
    deadline = time.monotonic() + 30
    while (left := stored_sessions(durable_hbroker, prefix)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == {}


def test_subscriber_sessions_are_persistent_during_the_run(
        durable_hbroker: BrokerProcess) -> None:
    """--keep-sessions leaves them as they were during the run: stored, with their expiry."""
    prefix = f"lg-{uuid.uuid4().hex[:8]}"
    try:
        report = loadgen(durable_hbroker.port, "--v5", "--session-expiry", "60", "--qos", "1",
                         "--keep-sessions", "--client-prefix", prefix, *SHORT)
        assert report["params"]["keep_sessions"] is True
        assert report["sessions"] == {"persistent": 1, "ended": 0, "not_ended": 0}
        assert_every_message_delivered(report)
        sessions = stored_sessions(durable_hbroker, prefix)
        assert list(sessions) == [f"{prefix}-s0"]  # the publisher's session is clean
        assert sessions[f"{prefix}-s0"]["expiry_interval"] == 60
        assert sessions[f"{prefix}-s0"]["subscriptions"] == 1
        # a second run under the same client ids finds the session and refuses to count it
        again = loadgen(durable_hbroker.port, "--v5", "--session-expiry", "60", "--qos", "1",
                        "--keep-sessions", "--client-prefix", prefix, *SHORT, expect_status=1)
        assert "Session Present" in again["errors"]["messages"][0]
    finally:
        end_session(durable_hbroker.port, f"{prefix}-s0")


def test_session_expiry_is_only_for_the_load_mode(programs: None) -> None:
    done = subprocess.run([str(LOADGEN), "--idle", "1", "--session-expiry", "60"],
                          capture_output=True, text=True, timeout=10)
    assert done.returncode == 2 and "--session-expiry" in done.stderr
    done = subprocess.run([str(LOADGEN), "--keep-sessions"], capture_output=True, text=True,
                          timeout=10)
    assert done.returncode == 2 and "--keep-sessions" in done.stderr


@pytest.mark.parametrize("qos", [0, 1])
def test_relay_delivers_every_message(relay: int, qos: int) -> None:
    report = loadgen(relay, "--qos", str(qos), *SHORT)
    assert_every_message_delivered(report)
