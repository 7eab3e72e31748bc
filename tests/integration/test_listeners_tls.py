"""`tls` listeners: TLS 1.2/1.3, client certificates (mutual TLS), revocation lists, the
certificate identity as username, and certificate reload on SIGHUP."""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from broker_process import BrokerProcess
from certs import PKI
from clients import WAIT
from hbroker_ext.codec import Connect
from listener_clients import Paho, SocketClient, roundtrip, tls_context, tls_refused, tls_socket


def tls_listener(pki: PKI, **settings: Any) -> dict[str, Any]:
    return {"type": "tls", "certfile": str(pki.server.cert), "keyfile": str(pki.server.key),
            **settings}


def mtls_listener(pki: PKI, **settings: Any) -> dict[str, Any]:
    return tls_listener(pki, cafile=str(pki.ca.cert), require_certificate=True, **settings)


def wait_for_log(broker: BrokerProcess, text: str, after: int = 0) -> str:
    """The broker log once `text` appears in it past offset `after`."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        log = broker.log()
        if text in log[after:]:
            return log
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged:\n{broker.log()}")


def mosquitto(tool: str, broker: BrokerProcess, pki: PKI, cert: Any, *args: str
              ) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool, "-h", "127.0.0.1", "-p", str(broker.port), "--cafile", str(pki.ca.cert),
         "--cert", str(cert.cert), "--key", str(cert.key), *args],
        capture_output=True, text=True, timeout=30)


def test_mosquitto_clients_with_certificates_publish_and_subscribe_over_mutual_tls(
        start: Any, pki: PKI) -> None:
    broker = start(mtls_listener(pki))
    pub = mosquitto("mosquitto_pub", broker, pki, pki.client, "-t", "tls/mosquitto", "-m",
                    "over tls", "-r", "-q", "1")
    assert pub.returncode == 0, pub.stderr
    sub = mosquitto("mosquitto_sub", broker, pki, pki.client, "-t", "tls/mosquitto", "-C", "1",
                    "-W", "10")
    assert (sub.returncode, sub.stdout) == (0, "over tls\n"), sub.stderr


def test_paho_over_tls_without_client_certificate(start: Any, pki: PKI) -> None:
    broker = start(tls_listener(pki))
    ctx = tls_context(pki.ca.cert)
    sub = Paho("tls-sub", broker.port, tls=ctx)
    pub = Paho("tls-pub", broker.port, tls=ctx, version=4)
    assert sub.accepted and pub.accepted
    roundtrip(sub, pub, "tls/paho", b"\x00binary\xff")
    sub.close()
    pub.close()


def test_paho_with_client_certificate_over_tls_1_2_and_1_3(start: Any, pki: PKI) -> None:
    broker = start(mtls_listener(pki))
    old = Paho("tls12", broker.port, tls=tls_context(pki.ca.cert, pki.client,
                                                     maximum=ssl.TLSVersion.TLSv1_2))
    new = Paho("tls13", broker.port, tls=tls_context(pki.ca.cert, pki.client))
    assert old.client.socket().version() == "TLSv1.2"
    assert new.client.socket().version() == "TLSv1.3"
    roundtrip(old, new, "tls/versions", b"both")
    old.close()
    new.close()


def test_tls_version_below_the_listener_minimum_is_refused(start: Any, pki: PKI) -> None:
    broker = start(tls_listener(pki, tls_version="1.3"))
    seen = tls_refused(broker.port, tls_context(pki.ca.cert, maximum=ssl.TLSVersion.TLSv1_2))
    assert seen.startswith("handshake: "), seen
    wait_for_log(broker, "TLS handshake failed: unsupported protocol peer=127.0.0.1:")
    assert tls_socket(broker.port, tls_context(pki.ca.cert)).version() == "TLSv1.3"


def test_client_without_certificate_is_refused_when_one_is_required(start: Any,
                                                                     pki: PKI) -> None:
    broker = start(mtls_listener(pki))
    tls_refused(broker.port, tls_context(pki.ca.cert))
    wait_for_log(broker, "TLS handshake failed: peer did not return a certificate peer=")


def test_client_certificate_from_another_ca_is_refused(start: Any, pki: PKI) -> None:
    broker = start(mtls_listener(pki, name="devices"))
    tls_refused(broker.port, tls_context(pki.ca.cert, pki.other_client))
    wait_for_log(broker, "TLS handshake failed: client certificate refused: unable to get "
                         "local issuer certificate peer=127.0.0.1:")
    assert "listener=devices" in broker.log()
    pub = mosquitto("mosquitto_pub", broker, pki, pki.other_client, "-t", "t", "-m", "x")
    assert pub.returncode != 0
    # The listener still serves clients with a good certificate.
    assert Paho("good", broker.port, tls=tls_context(pki.ca.cert, pki.client)).accepted


def test_revoked_client_certificate_is_refused(start: Any, pki: PKI) -> None:
    broker = start(mtls_listener(pki, crlfile=str(pki.crl)))
    tls_refused(broker.port, tls_context(pki.ca.cert, pki.revoked_client))
    wait_for_log(broker, "TLS handshake failed: client certificate refused: certificate "
                         "revoked peer=127.0.0.1:")
    pub = mosquitto("mosquitto_pub", broker, pki, pki.revoked_client, "-t", "t", "-m", "x")
    assert pub.returncode != 0
    assert Paho("not-revoked", broker.port, tls=tls_context(pki.ca.cert, pki.client)).accepted


@pytest.mark.parametrize(("identity", "username"), [
    ("cn", "alice"), ("san_dns", "alice.devices.example"), ("san_email", "alice@example.com")])
def test_certificate_identity_becomes_the_username(start: Any, pki: PKI, identity: str,
                                                   username: str) -> None:
    broker = start(mtls_listener(pki, name="devices", certificate_identity=identity,
                                 use_identity_as_username=True))
    # The username in CONNECT is replaced by the certificate's identity.
    client = Paho("id-user", broker.port, tls=tls_context(pki.ca.cert, pki.client),
                  username="claimed")
    assert client.accepted
    log = wait_for_log(broker, "client connected client_id=id-user")
    line = next(line for line in log.splitlines() if "client connected client_id=id-user" in line)
    assert f" username={username} " in line and " listener=devices" in line, line
    client.close()


def test_identity_as_username_needs_no_password_with_a_password_file(
        start: Any, tmp_path: Path, pki: PKI) -> None:
    # The certificate authenticates the client: a password file configured for the other
    # clients does not refuse it, while a password client on the same broker is checked.
    passwd = tmp_path / "passwd"
    subprocess.run([sys.executable, "-m", "hbroker", "passwd", "add", str(passwd), "alice",
                    "--password", "secret"], check=True, capture_output=True)
    broker = start(mtls_listener(pki, use_identity_as_username=True),
                   auth={"password_file": str(passwd)})
    device = Paho("cert-only", broker.port, tls=tls_context(pki.ca.cert, pki.client))
    assert device.accepted
    device.close()
    wrong = SocketClient(tls_socket(broker.port, tls_context(pki.ca.cert, pki.client)))
    # The certificate names the user whatever CONNECT claims; a claimed password is not what
    # lets it in, so a wrong one changes nothing.
    assert wrong.connect("cert-wrong-password", username="alice",
                         password=b"wrong").reason_code == 0
    wrong.close()


def test_identity_as_username_refuses_a_client_without_certificate(start: Any,
                                                                    pki: PKI) -> None:
    # The certificate is optional for TLS, but needed to name the client.
    broker = start(tls_listener(pki, cafile=str(pki.ca.cert), use_identity_as_username=True))
    for version, code in ((5, 0x87), (4, 0x05)):
        client = SocketClient(tls_socket(broker.port, tls_context(pki.ca.cert)), version)
        client.send(Connect(f"no-cert-{version}", version, "MQTT", True, 60,
                            username="claimed", password=b"x"))
        connack, = client.closed_by_broker()
        assert connack.reason_code == code
    with_cert = SocketClient(tls_socket(broker.port, tls_context(pki.ca.cert, pki.client)))
    assert with_cert.connect("with-cert").reason_code == 0
    with_cert.close()


def test_sighup_reloads_the_server_certificate_without_dropping_connections(
        start: Any, pki: PKI, tmp_path: Path) -> None:
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    shutil.copy(pki.server.cert, cert)
    shutil.copy(pki.server.key, key)
    broker = start({"type": "tls", "certfile": str(cert), "keyfile": str(key)})
    before = Paho("before-reload", broker.port, tls=tls_context(pki.ca.cert))
    assert before.accepted
    before.subscribe("tls/reload")

    # The certificate is renewed (here: by another CA) and the broker told with SIGHUP.
    shutil.copy(pki.other_server.cert, cert)
    shutil.copy(pki.other_server.key, key)
    offset = len(broker.log())
    broker.signal(signal.SIGHUP)
    wait_for_log(broker, "SIGHUP: certificates reloaded", offset)

    # New handshakes get the new certificate...
    seen = tls_refused(broker.port, tls_context(pki.ca.cert))
    assert "CERTIFICATE_VERIFY_FAILED" in seen, seen  # the client no longer trusts it
    after = Paho("after-reload", broker.port, tls=tls_context(pki.other_ca.cert))
    assert after.accepted
    # ...and the connection made before the reload goes on.
    after.publish("tls/reload", b"still here")
    assert before.expect().payload == b"still here"
    before.close()
    after.close()


def test_sighup_reloads_the_revocation_list(start: Any, pki: PKI, tmp_path: Path) -> None:
    crl = tmp_path / "crl.pem"
    shutil.copy(pki.empty_crl, crl)
    broker = start(mtls_listener(pki, crlfile=str(crl)))
    alice = Paho("alice-before", broker.port, tls=tls_context(pki.ca.cert, pki.client))
    assert alice.accepted
    alice.subscribe("tls/crl")

    pki.ca.write_crl(crl, [pki.client])  # alice's certificate is revoked
    offset = len(broker.log())
    broker.signal(signal.SIGHUP)
    wait_for_log(broker, "SIGHUP: certificates reloaded", offset)

    tls_refused(broker.port, tls_context(pki.ca.cert, pki.client))
    wait_for_log(broker, "client certificate refused: certificate revoked", offset)
    # The open connection is not dropped by the reload.
    other = pki.ca.issue("bob", "bob")
    bob = Paho("bob", broker.port, tls=tls_context(pki.ca.cert, other))
    bob.publish("tls/crl", b"to alice")
    assert alice.expect().payload == b"to alice"
    alice.close()
    bob.close()


def test_sighup_with_unusable_certificate_files_keeps_the_running_ones(
        start: Any, pki: PKI, tmp_path: Path) -> None:
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    shutil.copy(pki.server.cert, cert)
    shutil.copy(pki.server.key, key)
    broker = start({"type": "tls", "certfile": str(cert), "keyfile": str(key)})
    cert.write_text("not a certificate\n")
    offset = len(broker.log())
    broker.signal(signal.SIGHUP)
    log = wait_for_log(broker, "SIGHUP: certificates not reloaded", offset)
    assert f"listeners[0].certfile: cannot use {cert}" in log
    assert Paho("still-served", broker.port, tls=tls_context(pki.ca.cert)).accepted


def test_sockets_closed_during_the_handshake_hold_no_connection_slot(start: Any,
                                                                     pki: PKI) -> None:
    broker = start(tls_listener(pki, max_connections=1))
    for _ in range(5):
        socket.create_connection(("127.0.0.1", broker.port), timeout=WAIT).close()
        half = socket.create_connection(("127.0.0.1", broker.port), timeout=WAIT)
        half.sendall(b"\x16\x03\x01\x00\xc8\x01")  # the start of a ClientHello
        half.close()
    client = Paho("after-aborted-handshakes", broker.port, tls=tls_context(pki.ca.cert))
    assert client.accepted
    client.close()
    assert broker.stop() == 0
    assert "connection closed client_id=after-aborted-handshakes" in broker.log()


def test_missing_certificate_file_stops_the_broker_naming_key_and_file(
        start: Any, pki: PKI, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "server.pem"
    with pytest.raises(RuntimeError) as info:
        start(tls_listener(pki, certfile=str(missing)))
    assert "exited with 1" in str(info.value)
    assert f"listeners[0].certfile: cannot read {missing}: file not found" in str(info.value)


def test_handshake_that_never_starts_is_closed_after_the_connect_timeout(pki: PKI,
                                                                         tmp_path: Path) -> None:
    workdir = tmp_path / "broker"
    workdir.mkdir()
    broker = BrokerProcess(workdir, {"storage": {"backend": "memory"},
                                     "limits": {"connect_timeout": 0.5}},
                           listeners=[tls_listener(pki)])
    try:
        with socket.create_connection(("127.0.0.1", broker.port), timeout=WAIT) as sock:
            assert sock.recv(65536) == b""  # closed by the broker, nothing sent
        wait_for_log(broker, "TLS handshake failed: SSL handshake is taking longer than 0.5 "
                             "seconds: aborting the connection peer=127.0.0.1:")
    finally:
        assert broker.stop() == 0, broker.log()
