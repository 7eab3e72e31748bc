"""Authentication, ACL enforcement and the audit log through the real broker process."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from clients import WAIT, PahoClient, RawClient
from hbroker_ext.codec import (
    AUTHENTICATION_DATA,
    AUTHENTICATION_METHOD,
    Auth,
    Connect,
    Will,
)

from hbroker.auth.passwords import make_entry
from hbroker.auth.scram import ScramClient

FAST = 10  # scrypt cost log2(N) for test users

USERS = {"alice": "wonderland", "bob": "builder", "monitor": "watch"}

ACL = """
[[rules]]
users = ["*"]
topics = ["devices/%u/#"]
actions = ["publish", "subscribe", "read"]
permission = "allow"

[[rules]]
users = ["monitor"]
topics = ["#"]
actions = ["subscribe"]
permission = "allow"

[[rules]]
users = ["monitor"]
topics = ["devices/+/status"]
actions = ["read"]
permission = "allow"
"""


def write_users(path: Path, users: dict[str, str], scram: bool = False) -> None:
    path.write_text("".join(make_entry(u, p.encode(), scram=scram, ln=FAST).encode() + "\n"
                            for u, p in users.items()))


def sighup_and_wait(broker: Any, marker: str = "authentication and ACL reloaded") -> None:
    before = broker.log().count(marker)
    broker.signal(signal.SIGHUP)
    deadline = time.monotonic() + WAIT
    while broker.log().count(marker) == before:
        assert time.monotonic() < deadline, f"no reload:\n{broker.log()}"
        time.sleep(0.05)


def audit_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def raw_connect(broker: Any, client_id: str, version: int, username: str | None,
                password: str | None, **kw: Any) -> Any:
    c = RawClient(broker.host, broker.port, version)
    try:
        return c.connect(client_id, username=username,
                         password=password.encode() if password is not None else None, **kw)
    finally:
        c.close()


@pytest.fixture
def secured(tmp_path: Path, start_broker: Any) -> Iterator[tuple[Any, Path]]:
    """A broker with a password file, the ACL above and an audit log."""
    write_users(tmp_path / "passwords", USERS, scram=True)
    (tmp_path / "acl.toml").write_text(ACL)
    audit = tmp_path / "audit.jsonl"
    broker = start_broker("memory",
                          auth={"password_file": str(tmp_path / "passwords"), "scram": True,
                                "failure_delay": 0.0},
                          acl={"file": str(tmp_path / "acl.toml")},
                          audit={"file": str(audit)})
    yield broker, audit


# -- passwords -------------------------------------------------------------------------


@pytest.mark.parametrize(("version", "bad_user", "not_authorised"), [(5, 0x86, 0x87),
                                                                     (4, 0x04, 0x05)])
def test_password_file_decides_connect(secured: Any, version: int, bad_user: int,
                                       not_authorised: int) -> None:
    broker, audit = secured
    assert raw_connect(broker, "a1", version, "alice", "wonderland").reason_code == 0
    assert raw_connect(broker, "a2", version, "alice", "guess").reason_code == bad_user
    assert raw_connect(broker, "a3", version, "mallory", "wonderland").reason_code == bad_user
    assert raw_connect(broker, "a4", version, "alice", None).reason_code == bad_user
    # Anonymous clients: the listener decides (loopback listeners accept them by default).
    assert raw_connect(broker, "a5", version, None, None).reason_code == 0
    failures = [r for r in audit_records(audit) if r["event"] == "auth_failure"]
    assert [(r["client_id"], r.get("username")) for r in failures] == [
        ("a2", "alice"), ("a3", "mallory"), ("a4", "alice")]
    assert all(r["peer"].startswith("127.0.0.1:") and r["reason_code"] == 0x86
               for r in failures)
    assert "wonderland" not in audit.read_text() and "guess" not in audit.read_text()
    assert "authentication failed" in broker.log()


def test_mosquitto_clients_authenticate_with_username_and_password(secured: Any) -> None:
    broker, _ = secured
    base = ["-h", broker.host, "-p", str(broker.port)]
    sub = subprocess.Popen(["mosquitto_sub", *base, "-u", "alice", "-P", "wonderland",
                            "-t", "devices/alice/cli", "-C", "1", "-W", "10", "-V", "mqttv5"],
                           stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + WAIT
    while "devices/alice/cli" not in broker.log():  # subscribed (logged at debug)
        assert time.monotonic() < deadline, broker.log()
        time.sleep(0.05)
    pub = subprocess.run(["mosquitto_pub", *base, "-u", "alice", "-P", "wonderland",
                          "-t", "devices/alice/cli", "-m", "hello", "-q", "1"],
                         capture_output=True, text=True, timeout=10)
    assert pub.returncode == 0, pub.stderr
    out, _ = sub.communicate(timeout=10)
    assert out.strip() == "hello"
    bad = subprocess.run(["mosquitto_pub", *base, "-u", "alice", "-P", "nope",
                          "-t", "devices/alice/cli", "-m", "x"],
                         capture_output=True, text=True, timeout=10)
    assert bad.returncode != 0
    assert "not authorised" in bad.stderr.lower() or "bad user" in bad.stderr.lower()


def test_sighup_reloads_the_password_file(secured: Any, tmp_path: Path) -> None:
    broker, audit = secured
    assert raw_connect(broker, "r1", 5, "carol", "new").reason_code == 0x86
    write_users(tmp_path / "passwords", {**USERS, "carol": "new"})
    sighup_and_wait(broker)
    assert raw_connect(broker, "r2", 5, "carol", "new").reason_code == 0
    write_users(tmp_path / "passwords", {"carol": "new"})
    sighup_and_wait(broker)
    assert raw_connect(broker, "r3", 5, "alice", "wonderland").reason_code == 0x86
    reloads = [r for r in audit_records(audit) if r["event"] == "reload"]
    assert [r["users"] for r in reloads] == [4, 1]


def test_an_unusable_password_file_on_sighup_keeps_the_running_one(secured: Any,
                                                                   tmp_path: Path) -> None:
    broker, _ = secured
    (tmp_path / "passwords").write_text("alice:plaintext\n")
    sighup_and_wait(broker, "authentication and ACL not reloaded")
    assert "passwords:1" in broker.log()
    assert raw_connect(broker, "u1", 5, "alice", "wonderland").reason_code == 0


# -- SCRAM-SHA-256 ---------------------------------------------------------------------


def scram_connect(broker: Any, client_id: str, username: str, password: str,
                  connect_username: str | None = None) -> tuple[Any, RawClient, ScramClient]:
    scram = ScramClient(username, password)
    c = RawClient(broker.host, broker.port, 5)
    c.send(Connect(client_id, 5, "MQTT", True, 60, username=connect_username,
                   properties={AUTHENTICATION_METHOD: "SCRAM-SHA-256",
                               AUTHENTICATION_DATA: scram.first()}))
    challenge = c.recv()
    if challenge.packet_type != 15:  # not AUTH: refused at once
        return challenge, c, scram
    assert challenge.reason_code == 0x18
    assert challenge.properties[AUTHENTICATION_METHOD] == "SCRAM-SHA-256"
    c.send(Auth(0x18, {AUTHENTICATION_METHOD: "SCRAM-SHA-256",
                       AUTHENTICATION_DATA: scram.final(
                           challenge.properties[AUTHENTICATION_DATA])}))
    return c.recv(), c, scram


def test_scram_sha_256_end_to_end(secured: Any) -> None:
    broker, audit = secured
    connack, c, scram = scram_connect(broker, "s1", "bob", "builder")
    assert connack.packet_type == 2 and connack.reason_code == 0
    assert connack.properties[AUTHENTICATION_METHOD] == "SCRAM-SHA-256"
    assert scram.verify(connack.properties[AUTHENTICATION_DATA])  # the server knew the key
    # The SCRAM identity is the username for the ACL: devices/bob/# is bob's.
    assert c.subscribe("devices/bob/#", 1) == [1]
    assert c.publish("devices/bob/x", b"hi", 1).reason_code == 0
    assert c.publish("devices/alice/x", b"hi", 1).reason_code == 0x87
    # Re-authentication (AUTH 0x19) runs the same exchange on the open connection.
    again = ScramClient("bob", "builder")
    c.send(Auth(0x19, {AUTHENTICATION_METHOD: "SCRAM-SHA-256",
                       AUTHENTICATION_DATA: again.first()}))
    challenge = c.recv_type(15)
    assert challenge.reason_code == 0x18
    c.send(Auth(0x18, {AUTHENTICATION_METHOD: "SCRAM-SHA-256",
                       AUTHENTICATION_DATA: again.final(
                           challenge.properties[AUTHENTICATION_DATA])}))
    done = c.recv_type(15)
    assert done.reason_code == 0
    assert again.verify(done.properties[AUTHENTICATION_DATA])
    c.close()
    connack, c, _ = scram_connect(broker, "s2", "bob", "wrong")
    assert (connack.packet_type, connack.reason_code) == (2, 0x86)
    c.close()
    connack, c, _ = scram_connect(broker, "s3", "bob", "builder", connect_username="alice")
    assert (connack.packet_type, connack.reason_code) == (2, 0x86)
    c.close()
    failures = [r for r in audit_records(audit) if r["event"] == "auth_failure"]
    assert [r["client_id"] for r in failures] == ["s2", "s3"]


def test_an_unknown_authentication_method_is_refused(secured: Any) -> None:
    broker, _ = secured
    c = RawClient(broker.host, broker.port, 5)
    connack = c.connect("m1", properties={AUTHENTICATION_METHOD: "SCRAM-SHA-1"})
    assert connack.reason_code == 0x8C
    c.close()


# -- ACL -------------------------------------------------------------------------------


def connect_user(broker: Any, client_id: str, user: str, version: int = 5) -> RawClient:
    c = RawClient(broker.host, broker.port, version)
    assert c.connect(client_id, username=user,
                     password=USERS[user].encode()).reason_code == 0
    return c


# (user, action, topic) -> allowed, through the broker
BROKER_MATRIX = [
    ("alice", "publish", "devices/alice/status", True),
    ("alice", "publish", "devices/bob/status", False),
    ("alice", "subscribe", "devices/alice/#", True),
    ("alice", "subscribe", "devices/+/status", False),
    ("alice", "subscribe", "$SYS/#", False),
    ("bob", "subscribe", "#", False),
    ("monitor", "subscribe", "#", True),
    ("monitor", "publish", "devices/monitor/x", True),
    ("monitor", "publish", "other/x", False),
]


@pytest.mark.parametrize("version", [5, 4])
def test_acl_matrix_through_the_broker(secured: Any, version: int) -> None:
    broker, audit = secured
    clients = {u: connect_user(broker, f"m-{u}-{version}", u, version) for u in USERS}
    for packet_id, (user, action, topic, allowed) in enumerate(BROKER_MATRIX, 1):
        c = clients[user]
        if action == "subscribe":
            code = c.subscribe(topic, 1, packet_id=packet_id)[0]
            assert code == (1 if allowed else (0x87 if version == 5 else 0x80)), (user, topic)
        else:
            ack = c.publish(topic, b"x", 1, packet_id=packet_id)
            if version == 4:
                # 3.1.1 cannot say no: the PUBACK is a success, the message is dropped.
                assert ack.reason_code == 0
            elif allowed:
                assert ack.reason_code in (0, 0x10), (user, topic)  # 0x10: no subscribers
            else:
                assert ack.reason_code == 0x87, (user, topic)
    denied = [r for r in audit_records(audit) if r["event"] == "acl_denied"]
    assert sorted((r["username"], r["action"], r["topic"]) for r in denied) == sorted(
        (u, a, t) for u, a, t, ok in BROKER_MATRIX if not ok)
    for c in clients.values():
        c.close()


def test_denied_publish_on_3_1_1_is_not_delivered(secured: Any) -> None:
    broker, _ = secured
    bob = connect_user(broker, "d-bob", "bob")
    assert bob.subscribe("devices/bob/#", 1) == [1]
    alice = connect_user(broker, "d-alice", "alice", version=4)
    ack = alice.publish("devices/bob/in", b"forged", 1)
    assert ack.packet_type == 4
    assert bob.recv_or_none() is None
    alice.close()
    bob.close()


def test_read_rules_filter_deliveries_and_retained_messages(secured: Any,
                                                            tmp_path: Path) -> None:
    broker, _ = secured
    monitor = connect_user(broker, "f-monitor", "monitor")
    assert monitor.subscribe("#", 1) == [1]
    alice = connect_user(broker, "f-alice", "alice")
    alice.publish("devices/alice/secret", b"s1", 1)
    alice.publish("devices/alice/status", b"ok", 1)
    got = monitor.recv_type(3)
    assert (got.topic, got.payload) == ("devices/alice/status", b"ok")
    monitor.ack(got)
    assert monitor.recv_or_none() is None  # the secret was not delivered
    alice.publish("devices/alice/secret", b"kept", 1, retain=True)
    fresh = connect_user(broker, "f-monitor2", "monitor")
    assert fresh.subscribe("devices/#", 1) == [1]
    assert fresh.recv_or_none() is None  # no retained secret either
    # A rule change reaches the existing subscription after SIGHUP.
    (tmp_path / "acl.toml").write_text(ACL.replace('topics = ["devices/+/status"]',
                                                   'topics = ["devices/#"]'))
    sighup_and_wait(broker)
    alice.publish("devices/alice/secret", b"s2", 1)
    got = monitor.recv_type(3)
    assert (got.topic, got.payload) == ("devices/alice/secret", b"s2")
    for c in (monitor, alice, fresh):
        c.close()


def test_a_will_on_a_denied_topic_refuses_the_connect(secured: Any) -> None:
    broker, _ = secured
    c = RawClient(broker.host, broker.port, 5)
    connack = c.connect("w1", username="alice", password=b"wonderland",
                        will=Will("devices/bob/will", b"x", 1, False))
    assert connack.reason_code == 0x87
    c.close()


def test_session_takeover_is_audited(secured: Any) -> None:
    broker, audit = secured
    first = connect_user(broker, "takeover", "alice")
    second = connect_user(broker, "takeover", "alice")
    first.closed_by_broker()
    deadline = time.monotonic() + WAIT
    while not [r for r in audit_records(audit) if r["event"] == "session_taken_over"]:
        assert time.monotonic() < deadline, audit_records(audit)
        time.sleep(0.05)
    second.close()


# -- webhook ---------------------------------------------------------------------------


class WebhookServer:
    """A real aiohttp server on its own thread. Users: "fast" (allowed at once), "slow"
    (allowed once `release` is set), "hang" (refused, but only once `release` is set: after
    the broker's timeout); everyone else refused."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.release: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(WAIT)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self.ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        self.release = asyncio.Event()
        app = web.Application()
        app.router.add_post("/auth", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/auth"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        user = body.get("username")
        if user in ("slow", "hang"):
            assert self.release is not None
            await self.release.wait()
        ok = user in ("fast", "slow") and body.get("password") == "pw"
        return web.Response(status=204 if ok else 401)

    def release_slow(self) -> None:
        assert self.release is not None
        self.loop.call_soon_threadsafe(self.release.set)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(WAIT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT)


@pytest.fixture
def webhook() -> Iterator[WebhookServer]:
    server = WebhookServer()
    yield server
    server.release_slow()
    server.stop()


def test_webhook_allows_denies_and_caches(webhook: WebhookServer, start_broker: Any) -> None:
    broker = start_broker("memory", auth={"webhook_url": webhook.url,
                                          "webhook_cache_seconds": 60.0,
                                          "failure_delay": 0.0})
    assert raw_connect(broker, "w1", 5, "fast", "pw").reason_code == 0
    assert raw_connect(broker, "w1", 5, "fast", "pw").reason_code == 0  # from the cache
    assert raw_connect(broker, "w2", 5, "fast", "bad").reason_code == 0x86
    assert raw_connect(broker, "w3", 4, "nobody", "pw").reason_code == 0x04
    assert [(r["username"], r["client_id"]) for r in webhook.requests] == [
        ("fast", "w1"), ("fast", "w2"), ("nobody", "w3")]
    assert webhook.requests[0]["listener"] and webhook.requests[0]["peer"].startswith("127.")


def test_webhook_timeout_refuses_with_server_unavailable(webhook: WebhookServer,
                                                         start_broker: Any) -> None:
    broker = start_broker("memory", auth={"webhook_url": webhook.url, "webhook_timeout": 0.5})
    assert raw_connect(broker, "h1", 5, "hang", "pw").reason_code == 0x88
    assert raw_connect(broker, "h2", 4, "hang", "pw").reason_code == 0x03


def test_a_slow_webhook_does_not_hold_up_other_clients(webhook: WebhookServer,
                                                       start_broker: Any) -> None:
    broker = start_broker("memory", auth={"webhook_url": webhook.url,
                                          "webhook_timeout": 30.0})
    slow = RawClient(broker.host, broker.port, 5)
    slow.send(Connect("slow-1", 5, "MQTT", True, 60, username="slow", password=b"pw"))
    deadline = time.monotonic() + WAIT
    while not any(r["username"] == "slow" for r in webhook.requests):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # While "slow" waits on the webhook, another client connects and gets its QoS 1 round
    # trip done: the broker is not blocked.
    fast_sub = RawClient(broker.host, broker.port, 5)
    assert fast_sub.connect("fast-sub", username="fast", password=b"pw").reason_code == 0
    assert fast_sub.subscribe("t/fast", 1) == [1]
    fast_pub = RawClient(broker.host, broker.port, 5)
    assert fast_pub.connect("fast-pub", username="fast", password=b"pw").reason_code == 0
    assert fast_pub.publish("t/fast", b"x", 1).reason_code == 0
    assert fast_sub.recv_type(3).payload == b"x"
    assert slow.recv_or_none(0.2) is None  # still waiting
    webhook.release_slow()
    connack = slow.recv()
    assert (connack.packet_type, connack.reason_code) == (2, 0)
    for c in (slow, fast_sub, fast_pub):
        c.close()


# -- backoff ---------------------------------------------------------------------------


def test_password_guessing_is_slowed_while_other_clients_lose_nothing(tmp_path: Path,
                                                                      start_broker: Any
                                                                      ) -> None:
    write_users(tmp_path / "passwords", USERS)
    delay, delay_max = 0.2, 1.6
    broker = start_broker("memory", auth={"password_file": str(tmp_path / "passwords"),
                                          "failure_delay": delay,
                                          "failure_delay_max": delay_max})
    subscriber = PahoClient(broker.host, broker.port, "normal-sub", username="bob",
                            password="builder")
    assert subscriber.subscribe("devices/bob/#", 1)[0] == 1
    publisher = PahoClient(broker.host, broker.port, "normal-pub", username="bob",
                           password="builder")
    sent: list[bytes] = []
    guessing = threading.Event()
    guessing.set()

    def traffic() -> None:
        i = 0
        while guessing.is_set():
            payload = f"m{i}".encode()
            publisher.publish("devices/bob/data", payload, 1)  # waits for its PUBACK
            sent.append(payload)
            i += 1

    thread = threading.Thread(target=traffic)
    thread.start()
    sent_while_guessing: list[int] = []
    for guess in range(6):
        assert raw_connect(broker, "guesser", 5, "alice", f"guess{guess}").reason_code == 0x86
        sent_while_guessing.append(len(sent))
    # The right password from the same address is not held back.
    assert raw_connect(broker, "owner", 5, "alice", "wonderland").reason_code == 0
    guessing.clear()
    thread.join(WAIT * 2)
    received = [subscriber.expect().payload for _ in sent]
    subscriber.expect_none()
    # Each further failure from the address is answered twice as late, up to the maximum:
    # 0, 0.2, 0.4, 0.8, 1.6, 1.6 s, as the broker scheduled them (its log says when).
    delays = [float(d) for d in re.findall(r"answered in ([0-9.]+) s", broker.log())]
    assert delays == [0.2, 0.4, 0.8, 1.6, 1.6], delays
    # Meanwhile the normal client's QoS 1 traffic kept flowing during the long waits...
    assert sent_while_guessing[-1] > sent_while_guessing[-3], sent_while_guessing
    assert received == sent  # ...and lost nothing, in order
    publisher.disconnect()
    subscriber.disconnect()


def test_anonymous_clients_refused_by_the_listener_are_audited(tmp_path: Path) -> None:
    from broker_process import BrokerProcess

    write_users(tmp_path / "passwords", USERS)
    audit = tmp_path / "audit.jsonl"
    workdir = tmp_path / "broker"
    workdir.mkdir()
    broker = BrokerProcess(workdir, {"storage": {"backend": "memory"},
                                     "auth": {"password_file": str(tmp_path / "passwords")},
                                     "audit": {"file": str(audit)}},
                           listeners=[{"type": "tcp", "name": "field",
                                       "allow_anonymous": False}])
    try:
        assert raw_connect(broker, "anon5", 5, None, None).reason_code == 0x87
        assert raw_connect(broker, "anon4", 4, None, None).reason_code == 0x05
        assert raw_connect(broker, "named", 5, "bob", "builder").reason_code == 0
    finally:
        assert broker.stop() == 0, broker.log()
    failures = [r for r in audit_records(audit) if r["event"] == "auth_failure"]
    assert [(r["client_id"], r["listener"], r["reason_code"]) for r in failures] == [
        ("anon5", "field", 0x87), ("anon4", "field", 0x87)]


# -- per-listener authentication sources --------------------------------------------------


def connect_on(port: int, client_id: str, username: str | None, password: str | None,
               version: int = 5, **kw: Any) -> int:
    c = RawClient("127.0.0.1", port, version)
    try:
        return c.connect(client_id, username=username,
                         password=password.encode() if password is not None else None,
                         **kw).reason_code
    finally:
        c.close()


def test_each_listener_applies_its_own_password_file_and_sources(
        tmp_path: Path, webhook: WebhookServer) -> None:
    from broker_process import BrokerProcess, free_port

    write_users(tmp_path / "passwords", USERS)
    write_users(tmp_path / "field-passwords", {"device": "secret"})
    field, hooked, main_port = free_port(), free_port(), free_port()
    workdir = tmp_path / "broker"
    workdir.mkdir()
    broker = BrokerProcess(
        workdir, {"storage": {"backend": "memory"},
                  "auth": {"password_file": str(tmp_path / "passwords"),
                           "webhook_url": webhook.url, "webhook_cache_seconds": 0.0,
                           "failure_delay": 0.0}},
        listeners=[{"type": "tcp", "name": "field", "port": field,
                    "password_file": str(tmp_path / "field-passwords"),
                    "auth": ["password_file"]},
                   {"type": "tcp", "name": "hooked", "port": hooked, "auth": ["webhook"]},
                   {"type": "tcp", "name": "main", "port": main_port}])
    try:
        # field: its own file only; the broker-wide users and the webhook do not apply.
        assert connect_on(field, "f1", "device", "secret") == 0
        assert connect_on(field, "f2", "alice", "wonderland") == 0x86
        assert connect_on(field, "f3", "device", "wrong", version=4) == 0x04
        assert webhook.requests == []
        # hooked: the webhook alone decides, the password file is not asked.
        assert connect_on(hooked, "h1", "fast", "pw") == 0
        assert connect_on(hooked, "h2", "alice", "wonderland") == 0x86
        assert [r["listener"] for r in webhook.requests] == ["hooked", "hooked"]
        # main: every configured source: the broker-wide file and the webhook must accept.
        assert connect_on(main_port, "m1", "device", "secret") == 0x86
        assert connect_on(main_port, "m2", "alice", "wonderland") == 0x86  # webhook: no
        assert connect_on(main_port, "m3", "fast", "pw") == 0x86  # not in the file
        # SIGHUP re-reads the listener's password file.
        write_users(tmp_path / "field-passwords", {"device": "rotated"})
        sighup_and_wait(broker)
        assert connect_on(field, "f4", "device", "rotated") == 0
        assert connect_on(field, "f5", "device", "secret") == 0x86
    finally:
        assert broker.stop() == 0, broker.log()


def test_scram_is_offered_only_where_the_listener_lists_it(tmp_path: Path) -> None:
    from broker_process import BrokerProcess, free_port

    write_users(tmp_path / "passwords", USERS, scram=True)
    plain, scram = free_port(), free_port()
    workdir = tmp_path / "broker"
    workdir.mkdir()
    broker = BrokerProcess(
        workdir, {"storage": {"backend": "memory"},
                  "auth": {"password_file": str(tmp_path / "passwords"), "scram": True,
                           "failure_delay": 0.0}},
        listeners=[{"type": "tcp", "name": "plain", "port": plain,
                    "auth": ["password_file"]},
                   {"type": "tcp", "name": "scram", "port": scram}])
    try:
        on_scram = SimpleNamespace(host="127.0.0.1", port=scram)
        connack, c, client = scram_connect(on_scram, "s1", "alice", "wonderland")
        c.close()
        assert (connack.packet_type, connack.reason_code) == (2, 0)
        assert client.verify(connack.properties[AUTHENTICATION_DATA])
        on_plain = SimpleNamespace(host="127.0.0.1", port=plain)
        connack, c, _ = scram_connect(on_plain, "s2", "alice", "wonderland")
        c.close()
        assert (connack.packet_type, connack.reason_code) == (2, 0x8C)  # Bad auth. method
        # Plain passwords still work on the listener that does not offer SCRAM.
        assert connect_on(plain, "p1", "alice", "wonderland") == 0
    finally:
        assert broker.stop() == 0, broker.log()
