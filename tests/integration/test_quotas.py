"""Quotas and abuse resistance ([quotas], docs/security.md): connection and publish rates,
subscriptions and topic sizes, against the real broker with real clients. Assertions are on
counts, reason codes, order and completeness, never on durations."""

from __future__ import annotations

import selectors
import socket
import time
from typing import Any

from clients import WAIT, PahoClient, RawClient
from hbroker_ext.codec import (
    SESSION_EXPIRY_INTERVAL,
    Connect,
    Disconnect,
    Publish,
    Pubrel,
    Subscribe,
    Subscription,
    Will,
)

QUOTA_EXCEEDED = 0x97
TOPIC_FILTER_INVALID = 0x8F
TOPIC_NAME_INVALID = 0x90
UNSPECIFIED_ERROR = 0x80
LONG_WAIT = 60.0  # a bound for waits that include throttling or sweeps, never asserted on


def wait_acks(client: PahoClient, mids: list[int], timeout: float = LONG_WAIT) -> None:
    with client._cond:
        assert client._cond.wait_for(lambda: client.acks.issuperset(mids), timeout), \
            f"{len(set(mids) - client.acks)} of {len(mids)} publishes not acknowledged"


def receive_all(client: PahoClient, count: int, timeout: float = LONG_WAIT) -> list[bytes]:
    return [client.expect(timeout).payload for _ in range(count)]


def sys_value_reaches(b: Any, topic: str, wanted: Any, client_id: str) -> int:
    """Subscribe to a $SYS topic until `wanted(value)`; the value (published on change)."""
    watcher = PahoClient(b.host, b.port, client_id)
    watcher.subscribe(topic, 0)
    deadline = time.monotonic() + LONG_WAIT
    value = -1
    while time.monotonic() < deadline:
        value = int(watcher.expect(LONG_WAIT).payload)
        if wanted(value):
            watcher.disconnect()
            return value
    raise AssertionError(f"{topic} stayed at {value}")


def connect_or_refused(b: Any, client_id: str) -> bool:
    """True when the broker answers CONNECT with CONNACK 0; False when it closes at once."""
    c = RawClient(b.host, b.port, 5)
    try:
        c.send(Connect(client_id, 5, "MQTT", True, 60))
        connack = c.recv()
    except (AssertionError, OSError):
        return False
    finally:
        c.close()
    assert (connack.packet_type, connack.reason_code) == (2, 0), connack
    return True


# -- sockets that never send CONNECT ---------------------------------------------------------

def test_thousand_silent_sockets_are_closed_while_qos1_traffic_loses_nothing(start):
    b = start(limits={"connect_timeout": 1.0})
    sub = PahoClient(b.host, b.port, "silent-sub", version=4)
    sub.subscribe("silent/t", 1)
    # The normal clients connect first: with a 1 s connect_timeout, a CONNECT that a loaded
    # machine delays past it would be refused like the silent sockets' (a test artefact).
    pub = PahoClient(b.host, b.port, "silent-pub", version=5)
    silent = [socket.create_connection((b.host, b.port)) for _ in range(1000)]
    try:
        mids = [pub.publish("silent/t", str(i), 1, wait=False) for i in range(200)]
        wait_acks(pub, mids)
        assert receive_all(sub, 200) == [str(i).encode() for i in range(200)]
        sub.expect_none()

        selector = selectors.DefaultSelector()
        for s in silent:
            s.setblocking(False)
            selector.register(s, selectors.EVENT_READ)
        closed = 0
        received = b""
        deadline = time.monotonic() + LONG_WAIT
        while closed < len(silent) and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=1.0):
                try:
                    data = key.fileobj.recv(1024)
                except ConnectionResetError:
                    data = b""
                received += data
                if not data:
                    selector.unregister(key.fileobj)
                    closed += 1
        assert (closed, received) == (1000, b"")  # closed without a word
        pub.publish("silent/t", b"after", 1)
        assert sub.expect().payload == b"after"
    finally:
        for s in silent:
            s.close()
    assert b.log().count("no CONNECT within connect_timeout") == 1000


# -- publish rate ----------------------------------------------------------------------------

def test_v5_flood_over_message_rate_gets_quota_exceeded_and_others_lose_nothing(start):
    b = start(quotas={"max_publish_rate": 5, "publish_rate_burst": 12},
              limits={"max_queued_messages": 10}, sys={"interval": 1})
    # An offline persistent subscriber: its queue must hold at max_queued_messages.
    offline = RawClient(b.host, b.port, 5)
    offline.connect("flood-offline", properties={SESSION_EXPIRY_INTERVAL: 600})
    offline.subscribe("flood/a", 1)
    offline.send(Disconnect())
    offline.close()
    sub = PahoClient(b.host, b.port, "flood-sub")
    sub.subscribe("flood/a", 1)
    normal_sub = PahoClient(b.host, b.port, "normal-sub")
    normal_sub.subscribe("normal/t", 1)
    normal = RawClient(b.host, b.port, 5)
    normal.connect("normal-pub")
    flood = RawClient(b.host, b.port, 5)
    flood.connect("flooder")

    normal_codes = []
    for pid in range(1, 61):
        flood.send(Publish("flood/a", str(pid).encode(), 1, False, False, pid))
        if pid % 12 == 0:  # a normal client, within its own rate, in the middle of the flood
            normal_codes.append(normal.publish("normal/t", str(pid).encode(), 1,
                                               packet_id=pid).reason_code)
    codes: dict[int, int] = {}
    while len(codes) < 60:
        ack = flood.recv_type(4)
        assert ack.packet_id not in codes
        codes[ack.packet_id] = ack.reason_code
    accepted = [pid for pid in range(1, 61) if codes[pid] == 0]
    refused = [pid for pid in range(1, 61) if codes[pid] == QUOTA_EXCEEDED]
    assert len(accepted) + len(refused) == 60
    assert len(accepted) >= 12 and refused  # the burst passes, the flood beyond it does not
    assert normal_codes == [0] * 5

    # Subscribers get exactly the accepted messages, in order; nothing refused leaks.
    assert receive_all(sub, len(accepted)) == [str(p).encode() for p in accepted]
    sub.expect_none()
    assert receive_all(normal_sub, 5) == [str(p).encode() for p in (12, 24, 36, 48, 60)]
    normal_sub.expect_none()

    # QoS 0 over the rate is dropped and counted (5.0 has no acknowledgement to refuse in).
    for i in range(30):
        flood.send(Publish("flood/a", f"q0-{i}".encode(), 0, False, False, 0))
    flood.publish("flood/a", b"marker", 2, packet_id=500)  # PUBCOMP or PUBREC 0x97
    qos0_got = []
    while True:
        try:
            msg = sub.expect(1.0)
        except AssertionError:
            break
        qos0_got.append(msg.payload)
    qos0_passed = [p for p in qos0_got if p.startswith(b"q0-")]
    indexes = [int(p[3:]) for p in qos0_passed]
    assert indexes == sorted(set(indexes))  # in order, none twice
    dropped_qos0 = 30 - len(qos0_passed)
    assert dropped_qos0 >= 1
    marker_refused = b"marker" not in qos0_got
    expected = len(refused) + dropped_qos0 + int(marker_refused)
    assert sys_value_reaches(b, "$SYS/broker/quotas/publish/refused",
                             lambda v: v >= expected, "flood-sys") == expected

    # The offline session's queue held at max_queued_messages: the first 10 accepted.
    back = RawClient(b.host, b.port, 5)
    back.connect("flood-offline", clean_start=False,
                 properties={SESSION_EXPIRY_INTERVAL: 600})
    got = []
    while (packet := back.recv_or_none()) is not None:
        if packet.packet_type == 3 and packet.payload.isdigit():
            got.append(int(packet.payload))
            back.ack(packet)
    assert got == accepted[:10]
    assert "publish refused: message rate (max_publish_rate) exceeded" in b.log()


def test_v5_publish_over_byte_rate_gets_quota_exceeded_on_qos1_and_qos2(start):
    b = start(quotas={"max_publish_bytes_rate": 1000, "publish_bytes_burst": 1000})
    sub = PahoClient(b.host, b.port, "bytes-sub")
    sub.subscribe("bytes/t", 2)
    flood = RawClient(b.host, b.port, 5)
    flood.connect("bytes-flooder")
    for pid in range(1, 21):
        flood.send(Publish("bytes/t", bytes([pid]) * 300, 1, False, False, pid))
    codes = {}
    while len(codes) < 20:
        ack = flood.recv_type(4)
        codes[ack.packet_id] = ack.reason_code
    accepted = [pid for pid in range(1, 21) if codes[pid] == 0]
    assert set(codes.values()) == {0, QUOTA_EXCEEDED}
    assert len(accepted) >= 3  # 1000 bytes of burst: three 300-byte messages
    rec = flood.publish("bytes/t", b"x" * 900, 2, packet_id=100)
    assert (rec.packet_type, rec.reason_code) == (5, QUOTA_EXCEEDED)  # PUBREC, no PUBREL
    assert [m[0] for m in receive_all(sub, len(accepted))] == accepted
    sub.expect_none()
    flood.send(Pubrel(100))  # the exchange ended with the PUBREC: unknown packet id now
    assert flood.recv_type(7).reason_code == 0x92
    assert "publish refused: byte rate (max_publish_bytes_rate) exceeded" in b.log()


def test_v311_flood_is_throttled_and_loses_nothing_it_was_acknowledged(start):
    b = start(quotas={"max_publish_rate": 40, "publish_rate_burst": 5}, sys={"interval": 1})
    sub = PahoClient(b.host, b.port, "throttle-sub", version=4)
    sub.subscribe("throttle/t", 1)
    normal_sub = PahoClient(b.host, b.port, "throttle-normal-sub", version=4)
    normal_sub.subscribe("throttle/normal", 1)
    flood = PahoClient(b.host, b.port, "throttle-flooder", version=4)
    mids = [flood.publish("throttle/t", str(i), 1, wait=False) for i in range(120)]
    normal = RawClient(b.host, b.port, 4)
    normal.connect("throttle-normal")
    for i in range(3):  # within its own burst: acknowledged while the flooder waits
        assert normal.publish("throttle/normal", str(i).encode(), 1,
                              packet_id=i + 1).packet_type == 4
    assert receive_all(normal_sub, 3) == [b"0", b"1", b"2"]
    wait_acks(flood, mids)
    assert receive_all(sub, 120) == [str(i).encode() for i in range(120)]
    sub.expect_none()
    assert sys_value_reaches(b, "$SYS/broker/quotas/publish/throttled", lambda v: v >= 1,
                             "throttle-sys") >= 1
    assert "publish rate exceeded: reading paused (throttled)" in b.log()
    assert "publish refused" not in b.log()


def test_v5_flood_with_throttle_action_is_acknowledged_in_full_and_in_order(start):
    b = start(quotas={"max_publish_rate": 40, "publish_rate_burst": 5,
                      "publish_rate_action": "throttle"})
    sub = PahoClient(b.host, b.port, "throttle5-sub")
    sub.subscribe("throttle5/t", 1)
    flood = RawClient(b.host, b.port, 5)
    flood.connect("throttle5-flooder")
    for pid in range(1, 81):
        flood.send(Publish("throttle5/t", str(pid).encode(), 1, False, False, pid))
    acks = [flood.recv_type(4, LONG_WAIT) for _ in range(80)]
    assert [(a.packet_id, a.reason_code) for a in acks] == [(p, 0) for p in range(1, 81)]
    assert receive_all(sub, 80) == [str(p).encode() for p in range(1, 81)]
    sub.expect_none()
    log = b.log()
    assert "reading paused (throttled)" in log and "publish refused" not in log


def test_publish_rate_disconnect_action_sends_disconnect_0x96(start):
    b = start(quotas={"max_publish_rate": 1, "publish_rate_burst": 2,
                      "publish_rate_action": "disconnect"})
    c = RawClient(b.host, b.port, 5)
    c.connect("rate-disconnect")
    for pid in range(1, 6):
        try:
            c.send(Publish("rd/t", b"x", 1, False, False, pid))
        except OSError:
            break
    packets = c.closed_by_broker()
    acks = [p for p in packets if p.packet_type == 4]
    assert [a.reason_code for a in acks] == [0x10, 0x10]  # the burst, no subscribers
    assert (packets[-1].packet_type, packets[-1].reason_code) == (14, 0x96)


# -- connection rate per address -------------------------------------------------------------

def test_connections_over_the_address_burst_are_refused_until_the_rate_allows(start):
    b = start(quotas={"max_connection_rate": 0.2, "connection_rate_burst": 5})
    outcomes = [connect_or_refused(b, f"rate-{i}") for i in range(12)]
    admitted = outcomes.count(True)
    # Admitted first, then refused: the burst (less the readiness probe's connection).
    assert outcomes == [True] * admitted + [False] * (12 - admitted)
    assert admitted >= 4 and 12 - admitted >= 6
    # Refused attempts take nothing from the bucket: one connects once a token is back.
    deadline = time.monotonic() + LONG_WAIT
    while not connect_or_refused(b, "rate-again"):
        assert time.monotonic() < deadline, "never admitted again"
        time.sleep(0.5)
    log = b.log()
    assert log.count("connection refused: connection rate exceeded") == 1  # not one per socket
    assert "closed by client" in log  # the admitted ones were served normally


# -- subscriptions and topic sizes -----------------------------------------------------------

def _suback(c: RawClient, filters: list[str], packet_id: int) -> list[int]:
    c.send(Subscribe(packet_id, [Subscription(f, 1) for f in filters]))
    suback = c.recv_type(9)
    assert suback.packet_id == packet_id
    return suback.reason_codes


def test_subscriptions_beyond_max_subscriptions_get_quota_exceeded_or_0x80(start):
    b = start(quotas={"max_subscriptions": 3})
    for version, over in ((5, QUOTA_EXCEEDED), (4, UNSPECIFIED_ERROR)):
        c = RawClient(b.host, b.port, version)
        c.connect(f"maxsubs-{version}")
        assert _suback(c, ["a", "b", "c", "d", "e"], 1) == [1, 1, 1, over, over]
        assert _suback(c, ["a", "f"], 2) == [1, over]  # re-subscribing always succeeds
        c.send(Publish("c", b"still subscribed", 0, False, False, 0))
        assert c.recv_type(3).payload == b"still subscribed"
        c.close()


def test_topic_filters_over_levels_or_length_get_0x8f_or_0x80(start):
    b = start(quotas={"max_topic_levels": 4, "max_topic_length": 32})
    filters = ["lim/a/b/c", "lim/a/b/c/d", "lim/" + "x" * 29, "$share/g/lim/+/b/#",
               "$share/g/lim/a/b/c/d"]
    for version, bad in ((5, TOPIC_FILTER_INVALID), (4, UNSPECIFIED_ERROR)):
        c = RawClient(b.host, b.port, version)
        c.connect(f"filters-{version}")
        assert _suback(c, filters, 1) == [1, bad, bad, 1, bad]
        c.close()


def test_publish_topic_over_levels_or_length_is_refused_with_0x90(start):
    b = start(quotas={"max_topic_levels": 4, "max_topic_length": 32})
    sub = PahoClient(b.host, b.port, "names-sub")
    sub.subscribe("#", 2)
    c = RawClient(b.host, b.port, 5)
    c.connect("names-v5")
    deep, long = "lim/a/b/c/d", "lim/" + "x" * 29
    assert c.publish("lim/a/b/c", b"ok1", 1).reason_code == 0
    assert c.publish(deep, b"deep", 1, packet_id=2).reason_code == TOPIC_NAME_INVALID
    assert c.publish(long, b"long", 1, packet_id=3).reason_code == TOPIC_NAME_INVALID
    rec = c.publish(deep, b"deep2", 2, packet_id=4)
    assert (rec.packet_type, rec.reason_code) == (5, TOPIC_NAME_INVALID)
    c.send(Publish(deep, b"deep0", 0, False, False, 0))
    assert c.publish("lim/a/b/c", b"ok2", 1, packet_id=5).reason_code == 0  # still open
    old = RawClient(b.host, b.port, 4)
    old.connect("names-v311")
    # 3.1.1 cannot be told: acknowledged [MQTT-3.3.5-2 of 3.1.1], not delivered.
    assert old.publish(deep, b"deep311", 1, packet_id=6).packet_type == 4
    assert old.publish("lim/a/b/c", b"ok3", 1, packet_id=7).packet_type == 4
    assert [sub.expect().payload for _ in range(3)] == [b"ok1", b"ok2", b"ok3"]
    sub.expect_none()


def test_will_topic_over_levels_is_refused_with_connack_0x90(start):
    b = start(quotas={"max_topic_levels": 2})
    c = RawClient(b.host, b.port, 5)
    c.send(Connect("will-deep", 5, "MQTT", True, 60, will=Will("a/b/c", b"x")))
    connack = c.recv(WAIT)
    assert (connack.packet_type, connack.reason_code) == (2, TOPIC_NAME_INVALID)
    c.closed_by_broker()
