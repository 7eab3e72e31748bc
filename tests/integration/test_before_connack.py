"""Before the CONNACK: what a client may send ahead of it, and what it can make the broker hold.

Clients may send packets right after CONNECT without waiting for the CONNACK (3.1.1
[MQTT-3.1.4-5], 5.0 section 3.1.4); the broker handles them, in order, once the CONNECT is
accepted, and never if it is refused. Until then a connection can make the broker hold at most
`limits.max_connect_packet_size` bytes: its CONNECT and whatever follows it.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from clients import QUIET, WAIT, PahoClient, RawClient
from hbroker_ext.codec import (
    AUTHENTICATION_DATA,
    AUTHENTICATION_METHOD,
    Connect,
    Disconnect,
    Pingreq,
    Publish,
    Subscribe,
    Subscription,
    Will,
    encode,
)

from hbroker.auth.passwords import make_entry
from hbroker.auth.scram import ScramClient

CONNACK, PUBLISH, PUBACK, SUBACK, AUTH = 2, 3, 4, 9, 15
LIMIT = 16384  # the default limits.max_connect_packet_size


@pytest.fixture
def secured(tmp_path: Path, start_broker: Any) -> Any:
    """A broker with a password file: each password is checked by scrypt in a worker thread,
    so every CONNECT with a username is authenticated asynchronously."""
    passwords = tmp_path / "passwords"
    passwords.write_text(make_entry("alice", b"wonderland", scram=True, ln=10).encode() + "\n")
    return start_broker("memory", auth={"password_file": str(passwords), "scram": True,
                                        "failure_delay": 0.0})


def connect(client_id: str, version: int, password: bytes = b"wonderland",
            **kw: Any) -> Connect:
    return Connect(client_id, version, "MQTT", True, 60, username="alice", password=password,
                   **kw)


def packets_until_closed(client: RawClient) -> list[Any]:
    return client.closed_by_broker()


def wait_for_log(broker: Any, text: str) -> str:
    """The first log line holding `text`, once the broker wrote it."""
    deadline = time.monotonic() + WAIT
    while True:
        for line in broker.log().splitlines():
            if text in line:
                return line
        assert time.monotonic() < deadline, f"no log line with {text!r}:\n{broker.log()}"
        time.sleep(0.05)


# -- packets sent ahead of the CONNACK ---------------------------------------------------


@pytest.mark.parametrize("version", [4, 5])
def test_packets_sent_right_after_connect_are_handled_in_order_once_it_is_accepted(
        secured: Any, version: int) -> None:
    c = RawClient(secured.host, secured.port, version)
    # One write: CONNECT, SUBSCRIBE, a retained PUBLISH the subscription matches, another
    # PUBLISH. The password check takes a thread; the packets behind it must wait, not fail.
    c.send_raw(encode(connect(f"ahead-{version}", version), version)
               + encode(Subscribe(1, [Subscription("ahead/#", 1)]), version)
               + encode(Publish("ahead/a", b"first", 1, True, False, 2), version)
               + encode(Publish("ahead/b", b"second", 1, False, False, 3), version))
    got = [c.recv() for _ in range(6)]
    assert got[0].packet_type == CONNACK and got[0].reason_code == 0
    assert got[1].packet_type == SUBACK and got[1].reason_codes == [1]
    acks = [p.packet_id for p in got if p.packet_type == PUBACK]
    assert acks == [2, 3]  # in the order they were sent
    delivered = [p.payload for p in got if p.packet_type == PUBLISH]
    assert delivered == [b"first", b"second"]  # the subscription came first
    assert "first packet was not CONNECT" not in secured.log()
    c.close()
    # The retained PUBLISH was handled as such.
    reader = RawClient(secured.host, secured.port, 5)
    assert reader.connect("ahead-reader").reason_code == 0
    assert reader.subscribe("ahead/a", 0) == [0]
    assert reader.recv_type(PUBLISH).payload == b"first"
    reader.close()


@pytest.mark.parametrize(("version", "code"), [(4, 0x04), (5, 0x86)])
def test_packets_sent_after_a_refused_connect_are_never_handled(
        secured: Any, version: int, code: int) -> None:
    c = RawClient(secured.host, secured.port, version)
    c.send_raw(encode(connect(f"refused-{version}", version, b"guess"), version)
               + encode(Publish("refused/r", b"must not be kept", 1, True, False, 1), version)
               + encode(Pingreq(), version))
    got = packets_until_closed(c)
    assert [(p.packet_type, p.reason_code) for p in got] == [(CONNACK, code)]
    # Nothing of what followed was handled: no retained message appeared.
    reader = RawClient(secured.host, secured.port, 5)
    assert reader.connect("refused-reader").reason_code == 0
    assert reader.subscribe("refused/#", 0) == [0]
    assert reader.recv_or_none(QUIET) is None
    reader.close()


def test_paho_publishing_before_its_connack_arrives_is_served(secured: Any) -> None:
    received: queue.Queue[paho.MQTTMessage] = queue.Queue()
    connacks: list[Any] = []
    subscribed = threading.Event()
    published = threading.Event()
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="paho-early",
                    protocol=paho.MQTTv5)
    c.username_pw_set("alice", "wonderland")
    c.on_connect = lambda cl, ud, flags, rc, props: connacks.append(rc)
    c.on_message = lambda cl, ud, msg: received.put(msg)
    c.on_subscribe = lambda *args: subscribed.set()
    c.on_publish = lambda *args: published.set()
    c.connect(secured.host, secured.port)
    # Sent at once, before the network loop has read the CONNACK.
    c.subscribe("paho-early/#", 1)
    c.publish("paho-early/t", b"before connack", 1)
    c.loop_start()
    try:
        assert subscribed.wait(WAIT) and published.wait(WAIT)
        assert received.get(timeout=WAIT).payload == b"before connack"
        assert [rc.value for rc in connacks] == [0]  # one connection, never dropped
    finally:
        c.disconnect()
        c.loop_stop()
    assert "first packet was not CONNECT" not in secured.log()


def test_enhanced_authentication_allows_only_auth_before_the_connack(secured: Any) -> None:
    # [MQTT-3.1.2-30] with an Authentication Method, nothing but AUTH or DISCONNECT may come
    # before the CONNACK.
    scram = ScramClient("alice", "wonderland")
    c = RawClient(secured.host, secured.port, 5)
    c.send_raw(encode(Connect("scram-early", 5, "MQTT", True, 60, properties={
        AUTHENTICATION_METHOD: "SCRAM-SHA-256", AUTHENTICATION_DATA: scram.first()}), 5)
        + encode(Publish("scram-early/t", b"x", 0), 5))
    got = packets_until_closed(c)
    assert [(p.packet_type, p.reason_code) for p in got] == [(AUTH, 0x18)]
    assert "packet type 3 during enhanced authentication, before the CONNACK" in secured.log()
    # DISCONNECT is allowed: the connection just ends.
    errors = secured.log().count("protocol error")
    c = RawClient(secured.host, secured.port, 5)
    c.send_raw(encode(Connect("scram-leaves", 5, "MQTT", True, 60, properties={
        AUTHENTICATION_METHOD: "SCRAM-SHA-256", AUTHENTICATION_DATA: scram.first()}), 5)
        + encode(Disconnect(), 5))
    assert [p.packet_type for p in packets_until_closed(c)] == [AUTH]
    closed = wait_for_log(secured, "connection closed client_id=scram-leaves")
    assert 'reason="client disconnected' in closed
    assert secured.log().count("protocol error") == errors


def test_more_sent_ahead_of_the_connack_than_the_limit_closes_that_connection(
        secured: Any) -> None:
    bystander = PahoClient(secured.host, secured.port, "bystander")
    bystander.subscribe("bystander/t")
    c = RawClient(secured.host, secured.port, 5)
    first = encode(connect("greedy", 5), 5)
    ahead = encode(Publish("greedy/t", b"x" * 4000, 0), 5) * 5  # 20 kB behind the CONNECT
    c.send_raw(first + ahead)
    got = packets_until_closed(c)
    assert [(p.packet_type, p.reason_code) for p in got] == [(CONNACK, 0x95)]
    assert f"exceed the {LIMIT - len(first)} left of the limit before it" in secured.log()
    # Only that connection: the others go on.
    other = RawClient(secured.host, secured.port, 5)
    assert other.connect("after-greedy").reason_code == 0
    other.publish("bystander/t", b"still here", 0)
    assert bystander.expect().payload == b"still here"
    other.close()
    bystander.disconnect()


# -- the size of the CONNECT --------------------------------------------------------------


@pytest.mark.parametrize("version", [4, 5])
def test_connect_larger_than_max_connect_packet_size_is_refused(start_broker: Any,
                                                                version: int) -> None:
    broker = start_broker("memory")
    bystander = PahoClient(broker.host, broker.port, "bystander")
    bystander.subscribe("bystander/t")
    c = RawClient(broker.host, broker.port, version)
    c.send(Connect("big", version, "MQTT", True, 60,
                   will=Will("big/will", b"w" * LIMIT, 0, False)))
    got = packets_until_closed(c)
    if version == 5:
        assert [(p.packet_type, p.reason_code) for p in got] == [(CONNACK, 0x95)]
    else:
        assert got == []  # 3.1.1 has no return code for it: closed
    assert f"exceeds the maximum of {LIMIT}" in broker.log()
    other = RawClient(broker.host, broker.port, 5)
    assert other.connect("after-big").reason_code == 0
    other.publish("bystander/t", b"unaffected", 0)
    assert bystander.expect().payload == b"unaffected"
    other.close()
    bystander.disconnect()


def test_oversized_connect_is_refused_from_its_header_before_its_body_arrives(
        start_broker: Any) -> None:
    broker = start_broker("memory")
    raw = encode(Connect("declared", 5, "MQTT", True, 60,
                         will=Will("w", b"w" * 1_000_000, 0, False)), 5)
    # Only the fixed header (1 MB declared) and the protocol name and level: the broker
    # answers at once instead of waiting for (and buffering) a megabyte.
    c = RawClient(broker.host, broker.port, 5)
    c.send_raw(raw[:4 + 7])
    got = packets_until_closed(c)
    assert [(p.packet_type, p.reason_code) for p in got] == [(CONNACK, 0x95)]


def test_after_the_connack_packets_up_to_max_packet_size_are_accepted(
        secured: Any) -> None:
    c = RawClient(secured.host, secured.port, 5)
    assert c.connect("large-after", username="alice", password=b"wonderland").reason_code == 0
    assert c.subscribe("large-after/t", 1) == [1]
    payload = b"p" * (4 * LIMIT)  # far over the CONNECT limit, within max_packet_size
    c.send(Publish("large-after/t", payload, 1, False, False, 7))
    got = {p.packet_type: p for p in (c.recv(), c.recv())}
    assert got[PUBACK].packet_id == 7
    assert got[PUBLISH].payload == payload
    c.close()
