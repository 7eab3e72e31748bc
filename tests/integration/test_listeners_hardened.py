"""examples/hardened.toml, run as shipped with its files made here: TLS and WSS admit only
users of the password file, anonymous clients only on the loopback listener, the example ACL
decides topics, and the audit log records the refusals."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from broker_process import ROOT, BrokerProcess, free_port
from certs import PKI
from clients import RawClient
from listener_clients import Paho, SocketClient, tls_context, tls_refused, tls_socket

HARDENED = ROOT / "examples" / "hardened.toml"
ACL_EXAMPLE = ROOT / "examples" / "acl.toml"
# alice is in examples/acl.toml's "operators" group; bob is an ordinary device user.
USERS = {"alice": "wonderland", "bob": "builder"}
NOT_AUTHORIZED = 0x87
BAD_USER_NAME_OR_PASSWORD = 0x86


@dataclass
class Hardened:
    broker: BrokerProcess
    ports: dict[str, int]  # listener name -> the free port it got here
    pki: PKI
    audit: Path

    def tls(self, cert: Any = None) -> SocketClient:
        """A raw MQTT 5.0 client over TLS to the `devices` listener."""
        ctx = tls_context(self.pki.ca.cert, cert)
        return SocketClient(tls_socket(self.ports["devices"], ctx))

    def tls_connect(self, client_id: str, username: str | None, password: str | None,
                    cert: Any = None) -> int:
        client = self.tls(cert)
        try:
            return client.connect(client_id, username=username,
                                  password=password.encode() if password else None
                                  ).reason_code
        finally:
            client.close()

    def tls_user(self, client_id: str, username: str) -> SocketClient:
        client = self.tls()
        connack = client.connect(client_id, username=username,
                                 password=USERS[username].encode())
        assert connack.reason_code == 0, connack
        return client


def installed(pki: PKI, directory: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The example's listeners and sections with its paths pointing at files made here and
    each listener on a free port of 127.0.0.1."""
    passwords = directory / "passwords"
    for user, password in USERS.items():
        subprocess.run([sys.executable, "-m", "hbroker", "passwd", "add", str(passwords), user,
                        "--password", password, "--cost", "10"],
                       check=True, capture_output=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    files = {"/etc/hbroker/tls/server.pem": str(pki.server.cert),
             "/etc/hbroker/tls/server.key": str(pki.server.key),
             "/etc/hbroker/tls/devices-ca.pem": str(pki.ca.cert),
             "/etc/hbroker/passwords": str(passwords),
             "/etc/hbroker/acl.toml": str(ACL_EXAMPLE),
             "/var/lib/hbroker/hbroker.db": str(directory / "hbroker.db"),
             "/var/lib/hbroker/audit.jsonl": str(directory / "audit.jsonl")}
    text = HARDENED.read_text()
    for path, here in files.items():
        assert f'"{path}"' in text, f"examples/hardened.toml no longer names {path}"
        text = text.replace(f'"{path}"', json.dumps(here))
    data = tomllib.loads(text)
    listeners = data.pop("listeners")
    for lc in listeners:
        lc["host"] = "127.0.0.1"
        lc["port"] = free_port()
    # Every client here comes from 127.0.0.1, so the example's growing delay after failed
    # logins would slow each later refusal by seconds; test_auth.py tests that delay.
    data["auth"]["failure_delay"] = 0.0
    # The example's per-address connection burst must cover the ~20 connections of this
    # module, or a test would depend on how fast the bucket refills.
    assert data["quotas"]["connection_rate_burst"] >= 40
    return listeners, data


@pytest.fixture(scope="module")
def hardened(pki: PKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hardened]:
    directory = tmp_path_factory.mktemp("hardened")
    listeners, sections = installed(pki, directory)
    workdir = directory / "broker"
    workdir.mkdir()
    broker = BrokerProcess(workdir, sections, listeners=listeners)
    yield Hardened(broker, {lc["name"]: lc["port"] for lc in listeners}, pki,
                   directory / "audit.jsonl")
    assert broker.stop() == 0, broker.log()


def audit_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_tls_admits_password_file_users_and_refuses_wrong_passwords_and_anonymous(
        hardened: Hardened) -> None:
    assert hardened.tls_connect("bob-1", "bob", "builder") == 0
    assert hardened.tls_connect("bob-2", "bob", "guess") == BAD_USER_NAME_OR_PASSWORD
    assert hardened.tls_connect("nobody-1", "nobody", "builder") == BAD_USER_NAME_OR_PASSWORD
    assert hardened.tls_connect("anon-1", None, None) == NOT_AUTHORIZED
    # A client certificate of the devices' authority is optional; with one, the password is
    # still asked for (use_identity_as_username is false).
    assert hardened.tls_connect("bob-3", "bob", "builder", hardened.pki.client) == 0
    assert hardened.tls_connect("bob-4", "bob", "guess", hardened.pki.client) \
        == BAD_USER_NAME_OR_PASSWORD
    failures = [(r["client_id"], r["listener"], r["reason_code"])
                for r in audit_records(hardened.audit) if r["event"] == "auth_failure"]
    for expected in (("bob-2", "devices", 0x86), ("nobody-1", "devices", 0x86),
                     ("anon-1", "devices", 0x87), ("bob-4", "devices", 0x86)):
        assert expected in failures
    assert "guess" not in hardened.audit.read_text()


def test_wss_works_with_paho_for_password_file_users_only(hardened: Hardened) -> None:
    ctx = tls_context(hardened.pki.ca.cert)
    port = hardened.ports["browsers"]
    sub = Paho("wss-alice-sub", port, transport="websockets", tls=ctx, username="alice",
               password="wonderland")
    pub = Paho("wss-alice-pub", port, transport="websockets", tls=ctx, username="alice",
               password="wonderland", version=4)
    assert sub.accepted and pub.accepted
    # tls_version = "1.3": a client stopping at TLS 1.2 fails the handshake.
    assert tls_refused(port, tls_context(hardened.pki.ca.cert, maximum=ssl.TLSVersion.TLSv1_2)
                       ).startswith("handshake")
    sub.subscribe("devices/alice/dashboard")
    pub.publish("devices/alice/dashboard", b"over wss")
    msg = sub.expect()
    assert (msg.topic, msg.payload) == ("devices/alice/dashboard", b"over wss")
    sub.close()
    pub.close()
    anonymous = Paho("wss-anon", port, transport="websockets", tls=ctx)
    wrong = Paho("wss-wrong", port, transport="websockets", tls=ctx, username="alice",
                 password="guess")
    assert (anonymous.reason_code.value, wrong.reason_code.value) == (
        NOT_AUTHORIZED, BAD_USER_NAME_OR_PASSWORD)
    anonymous.close()
    wrong.close()


def test_anonymous_clients_are_accepted_on_the_loopback_listener_only(
        hardened: Hardened) -> None:
    local = RawClient("127.0.0.1", hardened.ports["local"])
    try:
        assert local.connect("local-tool").reason_code == 0
        # The ACL applies to them too: public status topics only.
        assert local.subscribe("public/+/status", 1) == [1]
        assert local.subscribe("devices/#", 1) == [NOT_AUTHORIZED]
    finally:
        local.close()
    # A local client giving a username must still give its password.
    wrong = RawClient("127.0.0.1", hardened.ports["local"])
    try:
        assert wrong.connect("local-bob", username="bob", password=b"guess").reason_code \
            == BAD_USER_NAME_OR_PASSWORD
    finally:
        wrong.close()


def test_the_example_acl_is_enforced_over_tls(hardened: Hardened) -> None:
    operator = hardened.tls_user("console", "alice")
    device = hardened.tls_user("bob-sensor", "bob")
    try:
        # "#" would reach the denied maintenance/... topics; a subtree is granted.
        assert operator.subscribe("#", 1, packet_id=1) == [NOT_AUTHORIZED]
        assert operator.subscribe("devices/#", 1, packet_id=2) == [1]
        assert device.subscribe("devices/alice/#", 1, packet_id=1) == [NOT_AUTHORIZED]
        # bob publishes in alice's subtree (refused) and then in his own (delivered): the
        # operator's first message is bob's own, so the refused one was not delivered.
        assert device.publish("devices/alice/temp", b"forged", 1, packet_id=1).reason_code \
            == NOT_AUTHORIZED
        assert device.publish("devices/bob/temp", b"21.5", 1, packet_id=2).reason_code == 0
        delivered = operator.recv_type(3)
        assert (delivered.topic, delivered.payload) == ("devices/bob/temp", b"21.5")
    finally:
        operator.close()
        device.close()
    denied = [(r["action"], r["topic"], r.get("username"), r["listener"])
              for r in audit_records(hardened.audit) if r["event"] == "acl_denied"]
    for expected in (("subscribe", "#", "alice", "devices"),
                     ("subscribe", "devices/alice/#", "bob", "devices"),
                     ("publish", "devices/alice/temp", "bob", "devices")):
        assert expected in denied
