"""The admin listener of a real broker process: /metrics while real clients connect, subscribe
and publish; /healthz and /readyz; tokens; HTTPS; refusal to listen off loopback in clear."""

from __future__ import annotations

import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from admin_client import get, scrape, value, wait_for_metrics
from broker_process import ROOT, BrokerProcess, free_port
from clients import PahoClient, RawClient
from hbroker_ext.codec import Connect, Publish, Subscribe, Subscription

from hbroker.admin.tokens import hash_token
from hbroker.auth.passwords import make_entry

READ_TOKEN = "read-token-for-the-metrics-tests"
ADMIN_TOKEN = "admin-token-for-the-metrics-tests"
TOKENS = [{"name": "prometheus", "hash": hash_token(READ_TOKEN)},
          {"name": "operator", "hash": hash_token(ADMIN_TOKEN), "role": "admin"}]


@pytest.fixture
def admin_broker(tmp_path: Path) -> Iterator[Any]:
    """start(**admin options, other sections...) -> (broker, admin base URL)."""
    started: list[BrokerProcess] = []

    def start(sections: dict[str, dict[str, Any]] | None = None,
              **admin: Any) -> tuple[BrokerProcess, str]:
        workdir = tmp_path / f"broker{len(started)}"
        workdir.mkdir()
        port = free_port()
        config = {"storage": {"backend": "sqlite", "path": "data/hbroker.db"},
                  **(sections or {}),
                  "admin": {"enabled": True, "port": port, **admin}}
        broker = BrokerProcess(workdir, config, listeners=[{"type": "tcp", "name": "main"}])
        started.append(broker)
        scheme = "https" if admin.get("certfile") else "http"
        return broker, f"{scheme}://127.0.0.1:{port}"

    yield start
    for broker in started:
        assert broker.stop() == 0, broker.log()


def test_metrics_follow_clients_that_connect_subscribe_and_publish(admin_broker: Any) -> None:
    broker, base = admin_broker()
    before = scrape(base)
    assert value(before, "hbroker_clients_connected") == 0
    assert value(before, "hbroker_connections", listener="main", protocol="5.0") == 0
    subscriber = PahoClient(broker.host, broker.port, "metrics-sub", version=5)
    publisher = PahoClient(broker.host, broker.port, "metrics-pub", version=4)
    try:
        subscriber.subscribe("metrics/#", qos=1)
        subscriber.subscribe("$share/workers/jobs/#", qos=0)
        for i in range(10):
            publisher.publish(f"metrics/{i}", b"x" * 100, qos=1)
        publisher.publish("metrics/state", b"on", qos=1, retain=True)
        for _ in range(11):
            subscriber.expect()
        during = wait_for_metrics(base, lambda s: all_qos(s, "hbroker_messages_sent_total")
                                  - all_qos(before, "hbroker_messages_sent_total") >= 11)
        assert value(during, "hbroker_clients_connected") == 2
        assert value(during, "hbroker_connections", listener="main", protocol="5.0") == 1
        assert value(during, "hbroker_connections", listener="main", protocol="3.1.1") == 1
        assert value(during, "hbroker_sessions", state="online") == 2
        assert value(during, "hbroker_subscriptions") == 2
        assert value(during, "hbroker_shared_subscription_groups") == 1
        assert all_qos(during, "hbroker_messages_received_total") \
            - all_qos(before, "hbroker_messages_received_total") == 11
        assert value(during, "hbroker_bytes_received_total") \
            - value(before, "hbroker_bytes_received_total") > 1000
        assert value(during, "hbroker_retained_messages") \
            - value(before, "hbroker_retained_messages") == 1
        # Durable QoS 1 messages were committed: the latency histogram saw each commit.
        commits = value(during, "hbroker_storage_commits_total")
        assert commits > value(before, "hbroker_storage_commits_total")
        assert value(during, "hbroker_storage_commit_duration_seconds_count") == commits
        assert value(during, "hbroker_storage_commit_duration_seconds_bucket", le="+Inf") \
            == commits
        assert value(during, "hbroker_storage_durable") == 1
        assert value(during, "hbroker_storage_degraded") == 0
        assert value(during, "process_resident_memory_bytes") > 1_000_000
        assert value(during, "process_cpu_seconds_total") > 0
    finally:
        publisher.client.disconnect()
        subscriber.client.disconnect()
    # The session ends with the DISCONNECT; the network connection a moment later, when the
    # socket is closed.
    after = wait_for_metrics(base, lambda s: value(s, "hbroker_clients_connected") == 0 and all(
        value(s, "hbroker_connections", listener="main", protocol=version) == 0
        for version in ("3.1.1", "5.0", "connecting")))
    assert value(after, "hbroker_clients_connected_max") >= 2


def all_qos(samples: Any, name: str) -> float:
    """A counter kept by QoS, summed over its `qos` label (what `sum()` gives in PromQL)."""
    return sum(value(samples, name, qos=qos) for qos in ("0", "1", "2"))


def test_messages_are_counted_by_qos_and_drops_for_no_subscribers(admin_broker: Any) -> None:
    # Without $SYS: its retained updates nobody subscribes to are routed and counted too.
    broker, base = admin_broker({"sys": {"enabled": False}})
    subscriber = PahoClient(broker.host, broker.port, "qos-sub", version=5)
    publisher = PahoClient(broker.host, broker.port, "qos-pub", version=5)
    try:
        subscriber.subscribe("qos/#", qos=2)
        before = scrape(base)
        sent = {"0": 2, "1": 3, "2": 4}
        for qos, n in sent.items():
            for i in range(n):
                publisher.publish(f"qos/{qos}/{i}", b"m", qos=int(qos))
        publisher.publish("nobody/listens", b"lost", qos=1)  # acknowledged, routed to no one
        for _ in range(sum(sent.values())):
            subscriber.expect()

        def delta(s: Any, name: str, **labels: str) -> float:
            return value(s, name, **labels) - value(before, name, **labels)

        # QoS 0 is not acknowledged: wait until the broker has taken all of it.
        during = wait_for_metrics(base, lambda s: delta(
            s, "hbroker_messages_received_total", qos="0") == sent["0"])
        received = {qos: n + (qos == "1") for qos, n in sent.items()}
        assert {qos: delta(during, "hbroker_messages_received_total", qos=qos)
                for qos in sent} == received
        assert {qos: delta(during, "hbroker_messages_sent_total", qos=qos)
                for qos in sent} == sent
        assert delta(during, "hbroker_messages_dropped_total", reason="no_subscribers") == 1
        assert delta(during, "hbroker_messages_routed_total") == sum(sent.values()) + 1
        # Without the qos label a metric of these has no series: they are all split.
        assert ("hbroker_messages_received_total", ()) not in during
        assert ("hbroker_messages_sent_total", ()) not in during
    finally:
        publisher.client.disconnect()
        subscriber.client.disconnect()


def test_queued_messages_of_an_offline_session_are_counted(admin_broker: Any) -> None:
    broker, base = admin_broker()
    offline = PahoClient(broker.host, broker.port, "metrics-offline", version=5,
                         clean=False, session_expiry=300)
    offline.subscribe("queued/#", qos=1)
    offline.client.disconnect()
    assert offline.disconnected.wait(5)
    publisher = PahoClient(broker.host, broker.port, "metrics-queuer", version=5)
    for i in range(3):
        publisher.publish(f"queued/{i}", b"12345", qos=1)
    publisher.client.disconnect()
    samples = wait_for_metrics(base, lambda s: value(s, "hbroker_queued_messages") == 3)
    assert value(samples, "hbroker_queued_bytes") == 15
    assert value(samples, "hbroker_sessions", state="offline") == 1


def test_health_and_readiness_answer_without_a_token(admin_broker: Any) -> None:
    _, base = admin_broker(metrics_auth=True, tokens=TOKENS)
    assert get(f"{base}/healthz")[:2] == (200, "ok\n")
    assert get(f"{base}/readyz")[:2] == (200, "ok\n")
    status, body, headers = get(f"{base}/readyz?verbose")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert '"listeners": "ok"' in body and '"storage": "ok"' in body


def test_metrics_need_a_token_when_metrics_auth_is_on(admin_broker: Any) -> None:
    _, base = admin_broker(metrics_auth=True, tokens=TOKENS)
    status, _, headers = get(f"{base}/metrics")
    assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
    assert get(f"{base}/metrics", token="not-a-token")[0] == 401
    for token in (READ_TOKEN, ADMIN_TOKEN, READ_TOKEN):  # the last one from the cache
        status, body, _ = get(f"{base}/metrics", token=token)
        assert status == 200 and "hbroker_clients_connected 0.0" in body


def test_metrics_are_public_without_metrics_auth(admin_broker: Any) -> None:
    _, base = admin_broker()
    status, body, headers = get(f"{base}/metrics")
    assert status == 200 and "hbroker_build_info{" in body
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")


def test_authentication_failures_and_acl_denials_are_counted(admin_broker: Any,
                                                            tmp_path: Path) -> None:
    passwords = tmp_path / "passwords"
    passwords.write_text(make_entry("alice", b"wonderland", ln=10).encode() + "\n")
    acl = tmp_path / "acl.toml"
    acl.write_text('[[rules]]\nusers = ["alice"]\ntopics = ["mine/#"]\n'
                   'actions = ["publish", "subscribe", "read"]\npermission = "allow"\n')
    broker, base = admin_broker({"auth": {"password_file": str(passwords),
                                          "failure_delay": 0},
                                 "acl": {"file": str(acl)}})
    wrong = RawClient(broker.host, broker.port)
    wrong.send(Connect("metrics-wrong", 5, "MQTT", True, 60, username="alice",
                       password=b"nope"))
    assert wrong.recv().reason_code == 0x86
    alice = RawClient(broker.host, broker.port)
    alice.connect("metrics-alice", username="alice", password=b"wonderland")
    alice.send(Subscribe(1, [Subscription("theirs/#", 1)]))
    assert alice.recv().reason_codes == [0x87]
    alice.send(Publish("theirs/x", b"no", 1, False, False, 2))
    assert alice.recv().reason_code == 0x87
    samples = wait_for_metrics(
        base, lambda s: value(s, "hbroker_acl_denials_total", action="publish") == 1)
    assert value(samples, "hbroker_acl_denials_total", action="subscribe") == 1
    assert value(samples, "hbroker_auth_failures_total",
                 reason="bad_user_name_or_password") == 1
    assert value(samples, "hbroker_messages_dropped_total", reason="refused") == 1


def test_admin_listener_speaks_https_with_a_certificate(admin_broker: Any, pki: Any) -> None:
    _, base = admin_broker(certfile=str(pki.server.cert), keyfile=str(pki.server.key))
    context = ssl.create_default_context(cafile=str(pki.ca.cert))
    assert base.startswith("https://")
    assert get(f"{base}/healthz", context=context)[:2] == (200, "ok\n")
    assert "hbroker_uptime_seconds" in scrape(base, context=context).__repr__()


def serve_expecting_failure(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    path = tmp_path / "hbroker.toml"
    path.write_text(text)
    return subprocess.run([sys.executable, "-m", "hbroker", "serve", "-c", str(path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=30,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_non_loopback_admin_address_without_tls_does_not_start(tmp_path: Path) -> None:
    result = serve_expecting_failure(
        tmp_path, f'[storage]\nbackend = "memory"\n[admin]\nenabled = true\n'
                  f'host = "0.0.0.0"\nport = {free_port()}\n')
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f'hbroker: {tmp_path / "hbroker.toml"}: admin.host: "0.0.0.0" is not a loopback '
        "address: the admin listener needs admin.certfile and admin.keyfile (HTTPS) there, "
        "or admin.allow_insecure = true")


def test_unreadable_admin_certificate_does_not_start_naming_the_key(tmp_path: Path) -> None:
    result = serve_expecting_failure(
        tmp_path, f'[storage]\nbackend = "memory"\n[admin]\nenabled = true\n'
                  f'port = {free_port()}\ncertfile = "missing.pem"\nkeyfile = "k.pem"\n')
    assert result.returncode == 1
    assert f"{tmp_path / 'hbroker.toml'}: admin.certfile: cannot read missing.pem: file " \
           "not found" in result.stderr
