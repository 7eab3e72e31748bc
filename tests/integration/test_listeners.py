"""Several listeners at once, each with its own settings: unix sockets, protocol versions,
anonymous clients, per-listener connection limits."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from clients import WAIT, RawClient
from hbroker_ext.codec import Connect
from listener_clients import Paho, SocketClient, roundtrip

from hbroker.auth.passwords import make_entry


def unix_client(path: Path, version: int = 5) -> SocketClient:
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(WAIT)
    sock.connect(str(path))
    return SocketClient(sock, version)


def connect_packet(client_id: str, version: int, username: str | None = None) -> Connect:
    return Connect(client_id, version, "MQTT" if version > 3 else "MQIsdp", True, 60,
                   username=username)


# -- unix ---------------------------------------------------------------------------------


def test_unix_socket_listener_serves_paho_and_mosquitto_clients(start: Any,
                                                                tmp_path: Path) -> None:
    path = tmp_path / "mqtt.sock"
    broker = start({"type": "unix", "path": str(path), "mode": "0600"})
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    sub = Paho("unix-sub", transport="unix", unix_path=str(path))
    pub = Paho("unix-pub", transport="unix", unix_path=str(path), version=4)
    roundtrip(sub, pub, "unix/paho", b"over a unix socket")
    mosquitto = subprocess.run(["mosquitto_pub", "--unix", str(path), "-t", "unix/paho", "-m",
                                "from mosquitto_pub", "-q", "1"],
                               capture_output=True, text=True, timeout=30)
    assert mosquitto.returncode == 0, mosquitto.stderr
    assert sub.expect().payload == b"from mosquitto_pub"
    # Clients on a unix socket are named by the process that connected.
    assert f"peer=unix:pid={os.getpid()},uid={os.getuid()}" in broker.log()
    sub.close()
    pub.close()
    assert broker.stop() == 0
    assert not path.exists(), "the socket file outlives the broker"


def test_stale_unix_socket_file_is_replaced(start: Any, tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # left behind by a broker that was killed
    stale.close()
    start({"type": "unix", "path": str(path)})
    client = unix_client(path)
    assert client.connect("after-stale").reason_code == 0
    client.close()


# -- protocol versions --------------------------------------------------------------------


@pytest.mark.parametrize(("allowed", "version", "code"), [
    ([5], 4, 0x01),     # 3.1.1 refused: return code 0x01 unacceptable protocol version
    ([5], 3, 0x01),     # 3.1 likewise
    ([3, 4], 5, 0x84),  # 5.0 refused: reason code 0x84 unsupported protocol version
])
def test_protocol_version_not_allowed_on_the_listener_is_refused_with_its_connack_code(
        start: Any, allowed: list[int], version: int, code: int) -> None:
    broker = start({"type": "tcp", "protocol_versions": allowed})
    client = RawClient(broker.host, broker.port, version)
    client.send(connect_packet(f"refused-v{version}", version))
    connack, = client.closed_by_broker()
    assert (connack.packet_type, connack.session_present, connack.reason_code) == (2, 0, code)
    allowed_client = RawClient(broker.host, broker.port, allowed[-1])
    assert allowed_client.connect(f"allowed-v{allowed[-1]}").reason_code == 0
    allowed_client.close()


def test_each_listener_applies_its_own_protocol_versions(start: Any) -> None:
    broker = start({"type": "tcp", "protocol_versions": [5]},
                   {"type": "tcp", "protocol_versions": [4]})
    v5_only, v4_only = (lc["port"] for lc in broker.listeners)
    refused = RawClient("127.0.0.1", v5_only, 4)
    refused.send(connect_packet("v4-on-v5-only", 4))
    assert refused.closed_by_broker()[0].reason_code == 0x01
    accepted = RawClient("127.0.0.1", v4_only, 4)
    assert accepted.connect("v4-on-v4-only").reason_code == 0
    accepted.close()


# -- anonymous clients --------------------------------------------------------------------


def test_listener_requiring_authentication_without_any_source_is_a_configuration_error(
        start: Any, tmp_path: Path) -> None:
    # allow_anonymous = false and nothing that could authenticate a client: no password
    # file, webhook, SCRAM or certificate identity. The broker does not start.
    with pytest.raises(RuntimeError) as info:
        start({"type": "tcp", "allow_anonymous": False, "name": "closed"})
    message = str(info.value)
    assert "exited with 2" in message
    assert (f"{tmp_path / 'broker0' / 'hbroker.toml'}: listeners[0]: listener closed admits "
            "only authenticated clients (allow_anonymous is false) but no authentication "
            "source applies to it") in message


def scram_only_listener(tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A listener without anonymous clients whose only source is SCRAM (5.0 enhanced
    authentication), and the [auth] section it needs."""
    passwords = tmp_path / "passwords"
    passwords.write_text(make_entry("alice", b"wonderland", scram=True, ln=10).encode() + "\n")
    return ({"type": "tcp", "allow_anonymous": False, "name": "closed", "auth": ["scram"]},
            {"password_file": str(passwords), "scram": True, "failure_delay": 0.0})


def test_a_username_no_source_accepts_is_refused_on_a_listener_without_anonymous_clients(
        start: Any, tmp_path: Path) -> None:
    listener, auth = scram_only_listener(tmp_path)
    broker = start(listener, auth=auth)
    base = ["-h", broker.host, "-p", str(broker.port), "-t", "a", "-m", "x"]
    for credentials, version in ((["-u", "nobody"], "mqttv311"),
                                 (["-u", "nobody", "-P", "whatever"], "mqttv5"),
                                 (["-u", "alice", "-P", "wonderland"], "mqttv5")):
        # A plain CONNECT: SCRAM was not used, so nothing vouched for the username.
        pub = subprocess.run(["mosquitto_pub", *base, *credentials, "-V", version],
                             capture_output=True, text=True, timeout=30)
        assert pub.returncode != 0, (credentials, pub.stdout)
        assert "not authori" in pub.stderr.lower(), pub.stderr
    assert "no authentication source accepted the client on listener closed" in broker.log()
    assert "client connected" not in broker.log()


@pytest.mark.parametrize(("version", "code"), [(5, 0x87), (4, 0x05)])
def test_listener_without_anonymous_access_refuses_clients_without_username(
        start: Any, tmp_path: Path, version: int, code: int) -> None:
    listener, auth = scram_only_listener(tmp_path)
    broker = start(listener, auth=auth)
    anonymous = RawClient(broker.host, broker.port, version)
    anonymous.send(connect_packet("anonymous", version))
    connack, = anonymous.closed_by_broker()
    assert connack.reason_code == code
    assert "anonymous clients not allowed on listener closed" in broker.log()
    named = RawClient(broker.host, broker.port, version)
    named.send(connect_packet("named", version, username="someone"))
    connack, = named.closed_by_broker()
    assert connack.reason_code == code


def test_loopback_and_unix_listeners_accept_anonymous_clients_by_default(
        start: Any, tmp_path: Path) -> None:
    path = tmp_path / "anon.sock"
    broker = start({"type": "tcp"}, {"type": "unix", "path": str(path)})
    tcp = RawClient(broker.host, broker.port)
    assert tcp.connect("anonymous-loopback").reason_code == 0
    unix = unix_client(path)
    assert unix.connect("anonymous-unix").reason_code == 0
    tcp.close()
    unix.close()


# -- connection limits --------------------------------------------------------------------


def test_listener_max_connections_refuses_further_connections_on_that_listener_only(
        start: Any) -> None:
    broker = start({"type": "tcp", "max_connections": 2, "name": "small"}, {"type": "tcp"})
    small, other = (lc["port"] for lc in broker.listeners)
    first, second = RawClient("127.0.0.1", small), RawClient("127.0.0.1", small)
    assert first.connect("small-1").reason_code == 0
    assert second.connect("small-2").reason_code == 0
    third = RawClient("127.0.0.1", small)
    assert third.closed_by_broker() == []
    assert "the listener's max_connections reached" in broker.log()
    elsewhere = RawClient("127.0.0.1", other)
    assert elsewhere.connect("other-listener").reason_code == 0
    # A slot freed by a client that leaves is given to the next one.
    first.close()
    next_client = _connect_when_admitted("127.0.0.1", small, "small-3")
    assert next_client.recv().reason_code == 0
    for c in (second, elsewhere, next_client):
        c.close()


def _connect_when_admitted(host: str, port: int, client_id: str) -> RawClient:
    """A client connected once the broker has a free slot (it closes earlier attempts)."""
    for _ in range(50):
        client = RawClient(host, port)
        client.send(connect_packet(client_id, 5))
        try:
            client.sock.settimeout(WAIT)
            data = client.sock.recv(65536, socket.MSG_PEEK)
        except ConnectionResetError:
            data = b""
        if data:
            return client
        client.close()
    raise AssertionError("the listener never freed a slot")


# -- several listeners --------------------------------------------------------------------


def test_messages_cross_between_tcp_websocket_and_unix_listeners(start: Any,
                                                                  tmp_path: Path) -> None:
    path = tmp_path / "cross.sock"
    broker = start({"type": "tcp", "name": "plain"}, {"type": "ws", "name": "web"},
                   {"type": "unix", "path": str(path), "name": "local"})
    ws_port = broker.listeners[1]["port"]
    over_tcp = Paho("cross-tcp", broker.port)
    over_ws = Paho("cross-ws", ws_port, transport="websockets")
    over_unix = Paho("cross-unix", transport="unix", unix_path=str(path))
    roundtrip(over_ws, over_tcp, "cross/tcp-to-ws", b"1")
    roundtrip(over_unix, over_ws, "cross/ws-to-unix", b"2")
    roundtrip(over_tcp, over_unix, "cross/unix-to-tcp", b"3")
    log = broker.log()
    for name in ("plain", "web", "local"):
        assert f"listening listener={name} " in log
        assert f"listener={name}" in next(line for line in log.splitlines()
                                          if "client connected" in line
                                          and f"listener={name}" in line)
    for c in (over_tcp, over_ws, over_unix):
        c.close()


def test_listener_changes_on_sighup_wait_for_a_restart(start: Any) -> None:
    broker = start({"type": "tcp", "max_connections": 1, "name": "reloaded"})
    text = broker.config_path.read_text()
    broker.config_path.write_text(text.replace("max_connections = 1", "max_connections = 5"))
    offset = len(broker.log())
    broker.signal(signal.SIGHUP)
    deadline = time.monotonic() + WAIT
    while "need a restart" not in broker.log()[offset:] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "these changes need a restart and were not applied: listeners" in broker.log()
    # The running listener keeps its limit of one connection.
    first = RawClient(broker.host, broker.port)
    assert first.connect("kept-limit-1").reason_code == 0
    assert RawClient(broker.host, broker.port).closed_by_broker() == []
    first.close()
