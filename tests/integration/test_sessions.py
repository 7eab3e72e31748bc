"""Sessions: clean session / clean start, expiry, offline queues (MQTT 5.0 section 4.1)."""

import time

from clients import QUIET, PahoClient, RawClient
from hbroker_ext.codec import (
    RECEIVE_MAXIMUM,
    SESSION_EXPIRY_INTERVAL,
    Connect,
    Disconnect,
    Puback,
)


def test_clean_session_1_discards_previous_session_in_v311(broker, uid):
    c = PahoClient(broker.host, broker.port, uid, version=4, clean=False)
    c.subscribe(f"{uid}/t", 1)
    c.disconnect()
    c2 = PahoClient(broker.host, broker.port, uid, version=4, clean=True)
    assert not c2.session_present  # [MQTT-3.2.2-1]
    pub = PahoClient(broker.host, broker.port, f"{uid}-p")
    pub.publish(f"{uid}/t", b"x", 1)
    c2.expect_none()


def test_persistent_v311_session_is_resumed_with_session_present(broker, uid):
    # [MQTT-3.2.2-2]
    c = PahoClient(broker.host, broker.port, uid, version=4, clean=False)
    c.subscribe(f"{uid}/t", 1)
    c.disconnect()
    c2 = PahoClient(broker.host, broker.port, uid, version=4, clean=False)
    assert c2.session_present


def test_offline_qos1_messages_are_queued_for_persistent_session(broker, uid):
    c = PahoClient(broker.host, broker.port, uid, version=4, clean=False)
    c.subscribe(f"{uid}/t", 1)
    c.disconnect()
    pub = PahoClient(broker.host, broker.port, f"{uid}-p")
    for i in range(5):
        pub.publish(f"{uid}/t", f"m{i}".encode(), 1)
    c2 = PahoClient(broker.host, broker.port, uid, version=4, clean=False)
    assert [c2.expect().payload for _ in range(5)] == [f"m{i}".encode() for i in range(5)]


def test_offline_qos0_messages_are_not_queued_by_default(broker, uid):
    c = PahoClient(broker.host, broker.port, uid, version=4, clean=False)
    c.subscribe(f"{uid}/t", 0)
    c.disconnect()
    pub = PahoClient(broker.host, broker.port, f"{uid}-p")
    pub.publish(f"{uid}/t", b"q0", 0)
    time.sleep(0.2)
    c2 = PahoClient(broker.host, broker.port, uid, version=4, clean=False)
    c2.expect_none()


def test_offline_qos0_messages_are_queued_when_configured(make_broker, uid):
    b = make_broker(sessions={"queue_qos0_messages": True})
    c = PahoClient(b.host, b.port, uid, version=4, clean=False)
    c.subscribe(f"{uid}/t", 0)
    c.disconnect()
    pub = PahoClient(b.host, b.port, f"{uid}-p")
    pub.publish(f"{uid}/t", b"q0", 0)
    time.sleep(0.2)
    c2 = PahoClient(b.host, b.port, uid, version=4, clean=False)
    assert c2.expect().payload == b"q0"


def test_offline_queue_is_bounded_by_max_queued_messages(make_broker, uid):
    b = make_broker(limits={"max_queued_messages": 3})
    c = PahoClient(b.host, b.port, uid, version=4, clean=False)
    c.subscribe(f"{uid}/t", 1)
    c.disconnect()
    pub = PahoClient(b.host, b.port, f"{uid}-p")
    for i in range(6):
        pub.publish(f"{uid}/t", f"m{i}".encode(), 1)
    c2 = PahoClient(b.host, b.port, uid, version=4, clean=False)
    assert [c2.expect().payload for _ in range(3)] == [b"m0", b"m1", b"m2"]
    c2.expect_none()


def test_v5_session_with_zero_expiry_ends_at_disconnect(broker, uid):
    c = PahoClient(broker.host, broker.port, uid, session_expiry=0)
    c.subscribe(f"{uid}/t", 1)
    c.disconnect()
    c2 = PahoClient(broker.host, broker.port, uid, clean=False, session_expiry=0)
    assert not c2.session_present


def test_v5_session_is_resumed_with_clean_start_0_within_expiry(broker, uid):
    c = PahoClient(broker.host, broker.port, uid, session_expiry=60)
    c.subscribe(f"{uid}/t", 1)
    c.disconnect()
    pub = PahoClient(broker.host, broker.port, f"{uid}-p")
    pub.publish(f"{uid}/t", b"waiting", 1)
    c2 = PahoClient(broker.host, broker.port, uid, clean=False, session_expiry=60)
    assert c2.session_present
    assert c2.expect().payload == b"waiting"


def test_v5_clean_start_1_discards_existing_session(broker, uid):
    c = PahoClient(broker.host, broker.port, uid, session_expiry=60)
    c.subscribe(f"{uid}/t", 1)
    c.disconnect()
    c2 = PahoClient(broker.host, broker.port, uid, clean=True, session_expiry=60)
    assert not c2.session_present


def test_session_expires_after_session_expiry_interval(broker, uid):
    c = RawClient(broker.host, broker.port, 5)
    c.connect(uid, properties={SESSION_EXPIRY_INTERVAL: 1})
    c.subscribe(f"{uid}/t", 1)
    c.close()
    time.sleep(2.2)
    c2 = RawClient(broker.host, broker.port, 5)
    assert not c2.connect(uid, clean_start=False,
                          properties={SESSION_EXPIRY_INTERVAL: 1}).session_present


def test_session_expiry_can_be_changed_in_disconnect(broker, uid):
    c = RawClient(broker.host, broker.port, 5)
    c.connect(uid, properties={SESSION_EXPIRY_INTERVAL: 60})
    c.send(Disconnect(0, {SESSION_EXPIRY_INTERVAL: 0}))
    c.closed_by_broker()
    c2 = RawClient(broker.host, broker.port, 5)
    assert not c2.connect(uid, clean_start=False).session_present


def test_session_expiry_set_in_disconnect_after_zero_is_a_protocol_error(broker, uid):
    # [MQTT-3.14.2-2]
    c = RawClient(broker.host, broker.port, 5)
    c.connect(uid)
    c.send(Disconnect(0, {SESSION_EXPIRY_INTERVAL: 30}))
    got = c.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(14, 0x82)]


def test_persistent_client_expiration_ends_idle_v311_sessions(make_broker, uid):
    b = make_broker(sessions={"persistent_client_expiration": 1})
    c = RawClient(b.host, b.port, 4)
    c.connect(uid, clean_start=False)
    c.close()
    time.sleep(2.2)
    c2 = RawClient(b.host, b.port, 4)
    assert not c2.connect(uid, clean_start=False).session_present


def test_subscriptions_survive_in_resumed_session(broker, uid):
    c = RawClient(broker.host, broker.port, 5)
    c.connect(uid, properties={SESSION_EXPIRY_INTERVAL: 60})
    c.subscribe(f"{uid}/t", 1)
    c.close()
    c2 = RawClient(broker.host, broker.port, 5)
    c2.connect(uid, clean_start=False, properties={SESSION_EXPIRY_INTERVAL: 60})
    pub = RawClient(broker.host, broker.port, 5)
    pub.connect(f"{uid}-p")
    assert pub.publish(f"{uid}/t", b"still here", 1).reason_code == 0
    msg = c2.recv_type(3)
    assert msg.payload == b"still here"
    c2.send(Puback(msg.packet_id))
    assert c2.recv_or_none(QUIET) is None


def test_v31_connack_has_no_session_present_flag(broker, uid):
    # MQTT 3.1's CONNACK has a reserved byte where 3.1.1 put Session Present: it is 0, also
    # when the session is resumed (its offline message still arrives).
    client_id = uid[-23:]  # MQTT 3.1 client ids have at most 23 characters
    c = RawClient(broker.host, broker.port, 3)
    c.connect(client_id, clean_start=False)
    c.subscribe(f"{uid}/t", 1)
    c.send(Disconnect())
    assert c.closed_by_broker() == []
    pub = PahoClient(broker.host, broker.port, f"{uid}-p")
    pub.publish(f"{uid}/t", b"kept", 1)
    again = RawClient(broker.host, broker.port, 3)
    again.send(Connect(client_id, 3, "MQIsdp", False, 60))
    assert again.sock.recv(4) == b"\x20\x02\x00\x00"
    assert again.recv_type(3).payload == b"kept"


def test_resumed_session_resends_inflight_within_the_new_receive_maximum(broker, uid):
    # Receive Maximum (MQTT 5.0 section 3.3.4) bounds re-sent PUBLISHes too [MQTT-3.3.4-9]:
    # the rest wait until acknowledgements open the window, and go out with DUP and their
    # original packet ids [MQTT-4.4.0-1], in their original order [MQTT-4.6.0-1], before
    # anything queued since.
    sub = RawClient(broker.host, broker.port, 5)
    sub.connect(f"{uid}-s", properties={SESSION_EXPIRY_INTERVAL: 60})
    sub.subscribe(f"{uid}/t", 1)
    pub = RawClient(broker.host, broker.port, 5)
    pub.connect(f"{uid}-p")
    for i in range(6):
        pub.publish(f"{uid}/t", f"m{i}".encode(), 1, packet_id=i + 1)
    first = [sub.recv_type(3) for _ in range(6)]  # none acknowledged
    ids = {p.payload: p.packet_id for p in first}
    sub.close()
    sub = RawClient(broker.host, broker.port, 5)
    assert sub.connect(f"{uid}-s", clean_start=False,
                       properties={SESSION_EXPIRY_INTERVAL: 60, RECEIVE_MAXIMUM: 2}
                       ).session_present
    pub.publish(f"{uid}/t", b"new", 1, packet_id=7)
    window = [sub.recv_type(3), sub.recv_type(3)]
    assert sub.recv_or_none(QUIET) is None  # two unacknowledged: the window is full
    got = list(window)
    while len(got) < 7:  # each PUBACK lets exactly one more through
        sub.send(Puback(window.pop(0).packet_id))
        window.append(sub.recv_type(3))
        got.append(window[-1])
    for p in window:
        sub.send(Puback(p.packet_id))
    assert sub.recv_or_none(QUIET) is None
    assert [p.payload for p in got] == [f"m{i}".encode() for i in range(6)] + [b"new"]
    for p in got[:6]:
        assert (p.dup, p.packet_id) == (True, ids[p.payload])
    assert not got[6].dup
