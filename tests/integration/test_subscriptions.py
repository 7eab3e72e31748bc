"""Subscriptions: filters, options, identifiers, shared subscriptions (MQTT 5.0 3.8, 4.7, 4.8)."""

from clients import QUIET, PahoClient, RawClient
from hbroker_ext.codec import (
    SUBSCRIPTION_IDENTIFIER,
    Puback,
    Subscribe,
    Subscription,
    Unsubscribe,
)


def test_single_level_wildcard_matches_one_level(broker, uid):
    sub = PahoClient(broker.host, broker.port, f"{uid}-s")
    sub.subscribe(f"{uid}/+/temp", 0)
    pub = PahoClient(broker.host, broker.port, f"{uid}-p")
    pub.publish(f"{uid}/room1/temp", b"yes")
    pub.publish(f"{uid}/room1/x/temp", b"no")
    assert sub.expect().payload == b"yes"
    sub.expect_none()


def test_multi_level_wildcard_matches_parent_and_children(broker, uid):
    # [MQTT-4.7.1-2] "sport/#" matches "sport" too.
    sub = PahoClient(broker.host, broker.port, f"{uid}-s")
    sub.subscribe(f"{uid}/#", 0)
    pub = PahoClient(broker.host, broker.port, f"{uid}-p")
    pub.publish(uid, b"parent")
    pub.publish(f"{uid}/a/b/c", b"deep")
    assert {sub.expect().payload, sub.expect().payload} == {b"parent", b"deep"}


def test_wildcard_filters_do_not_match_dollar_topics(broker, uid):
    # [MQTT-4.7.2-1]
    sub = PahoClient(broker.host, broker.port, f"{uid}-s")
    sub.subscribe("#", 0)
    sub.subscribe("+/broker/uptime", 0)
    while True:  # drain messages from other tests on the shared broker
        try:
            msg = sub.expect(0.3)
        except AssertionError:
            break
        assert not msg.topic.startswith("$")
    sub.client.unsubscribe("#")


def test_sys_topics_are_matched_by_explicit_dollar_filter(broker, uid):
    sub = PahoClient(broker.host, broker.port, f"{uid}-s")
    sub.subscribe("$SYS/broker/version", 0)
    msg = sub.expect()
    assert msg.payload.startswith(b"hbroker version ")


def test_invalid_topic_filter_gets_suback_0x8f_in_v5_and_0x80_in_v311(broker, uid):
    c5 = RawClient(broker.host, broker.port, 5)
    c5.connect(f"{uid}-5")
    c5.send(Subscribe(1, [Subscription("a/#/b"), Subscription("ok/+", 1),
                          Subscription("a+")]))
    assert c5.recv_type(9).reason_codes == [0x8F, 1, 0x8F]
    c4 = RawClient(broker.host, broker.port, 4)
    c4.connect(f"{uid}-4")
    assert c4.subscribe("x/#/y", 1) == [0x80]


def test_overlapping_subscriptions_deliver_once_with_highest_qos(broker, uid):
    # [MQTT-3.3.4-2] one message, the maximum QoS of the matching subscriptions.
    sub = RawClient(broker.host, broker.port, 5)
    sub.connect(f"{uid}-s")
    sub.subscribe(f"{uid}/#", 0, packet_id=1, properties={SUBSCRIPTION_IDENTIFIER: 1})
    sub.subscribe(f"{uid}/+", 1, packet_id=2, properties={SUBSCRIPTION_IDENTIFIER: 2})
    pub = RawClient(broker.host, broker.port, 5)
    pub.connect(f"{uid}-p")
    pub.publish(f"{uid}/t", b"once", 1)
    msg = sub.recv_type(3)
    assert msg.qos == 1
    assert sorted(msg.properties[SUBSCRIPTION_IDENTIFIER]) == [1, 2]  # [MQTT-3.3.4-3]
    sub.send(Puback(msg.packet_id))
    assert sub.recv_or_none(QUIET) is None


def test_subscription_identifier_is_returned_with_matching_messages(broker, uid):
    sub = RawClient(broker.host, broker.port, 5)
    sub.connect(f"{uid}-s")
    sub.subscribe(f"{uid}/t", 0, properties={SUBSCRIPTION_IDENTIFIER: 42})
    pub = RawClient(broker.host, broker.port, 5)
    pub.connect(f"{uid}-p")
    pub.publish(f"{uid}/t", b"x")
    assert sub.recv_type(3).properties[SUBSCRIPTION_IDENTIFIER] == [42]


def test_subscription_identifier_refused_when_not_available(make_broker, uid):
    b = make_broker(limits={"subscription_identifier_available": False})
    c = RawClient(b.host, b.port, 5)
    c.connect(uid)
    c.send(Subscribe(1, [Subscription("t")], {SUBSCRIPTION_IDENTIFIER: 3}))
    got = c.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(14, 0xA1)]


def test_no_local_does_not_send_own_messages_back(broker, uid):
    # [MQTT-3.8.3-3]
    c = PahoClient(broker.host, broker.port, uid)
    c.subscribe(f"{uid}/t", 0, noLocal=True)
    c.publish(f"{uid}/t", b"mine", 1)
    c.expect_none()
    other = PahoClient(broker.host, broker.port, f"{uid}-o")
    other.publish(f"{uid}/t", b"theirs", 1)
    assert c.expect().payload == b"theirs"


def test_without_no_local_own_messages_are_delivered(broker, uid):
    c = PahoClient(broker.host, broker.port, uid)
    c.subscribe(f"{uid}/t", 0)
    c.publish(f"{uid}/t", b"echo", 1)
    assert c.expect().payload == b"echo"


def test_unsubscribe_stops_delivery_and_reports_missing_subscription(broker, uid):
    c = RawClient(broker.host, broker.port, 5)
    c.connect(uid)
    c.subscribe(f"{uid}/t", 0)
    c.send(Unsubscribe(2, [f"{uid}/t", f"{uid}/never"]))
    assert c.recv_type(11).reason_codes == [0, 0x11]
    pub = RawClient(broker.host, broker.port, 5)
    pub.connect(f"{uid}-p")
    pub.publish(f"{uid}/t", b"x")
    assert c.recv_or_none(QUIET) is None


def test_invalid_unsubscribe_filter_gets_0x8f_in_v5_and_closes_v311(broker, uid):
    # UNSUBSCRIBE filters are validated as SUBSCRIBE's [MQTT-4.7.1-2, -3, MQTT-4.7.3-1]: 5.0
    # answers 0x8F (not 0x11 No subscription existed); a 3.1.1 UNSUBACK has no codes, so the
    # protocol violation closes the connection [MQTT-4.8.0-1].
    c = RawClient(broker.host, broker.port, 5)
    c.connect(uid)
    c.subscribe(f"{uid}/t", 0)
    c.send(Unsubscribe(2, ["", f"{uid}/t", f"{uid}/#/x", "$share//t"]))
    assert c.recv_type(11).reason_codes == [0x8F, 0, 0x8F, 0x8F]
    c4 = RawClient(broker.host, broker.port, 4)
    c4.connect(f"{uid}-4")
    c4.send(Unsubscribe(1, [""]))
    assert c4.closed_by_broker() == []


def test_wildcard_subscription_refused_when_not_available(make_broker, uid):
    b = make_broker(limits={"wildcard_subscription_available": False})
    c = RawClient(b.host, b.port, 5)
    c.connect(uid)
    assert c.subscribe("a/#", 0) == [0xA2]
    assert c.subscribe("a/b", 0, packet_id=2) == [0]


def test_shared_subscription_delivers_each_message_to_one_member_round_robin(broker, uid):
    members = [PahoClient(broker.host, broker.port, f"{uid}-m{i}") for i in range(3)]
    for m in members:
        m.subscribe(f"$share/g/{uid}/t", 1)
    pub = PahoClient(broker.host, broker.port, f"{uid}-p")
    for i in range(6):
        pub.publish(f"{uid}/t", f"{i}".encode(), 1)
    counts = []
    for m in members:
        got = []
        while True:
            try:
                got.append(m.expect(0.5).payload)
            except AssertionError:
                break
        counts.append(len(got))
    assert counts == [2, 2, 2]


def test_shared_and_normal_subscriptions_both_receive(broker, uid):
    shared = PahoClient(broker.host, broker.port, f"{uid}-sh")
    shared.subscribe(f"$share/g/{uid}/t", 0)
    normal = PahoClient(broker.host, broker.port, f"{uid}-n")
    normal.subscribe(f"{uid}/t", 0)
    pub = PahoClient(broker.host, broker.port, f"{uid}-p")
    pub.publish(f"{uid}/t", b"both")
    assert shared.expect().payload == b"both"
    assert normal.expect().payload == b"both"


def test_shared_subscription_does_not_receive_retained_messages(broker, uid):
    pub = PahoClient(broker.host, broker.port, f"{uid}-p")
    pub.publish(f"{uid}/t", b"r", 1, retain=True)
    c = PahoClient(broker.host, broker.port, f"{uid}-s")
    c.subscribe(f"$share/g/{uid}/t", 1)
    c.expect_none()


def test_unacked_shared_message_is_resent_to_another_member_on_disconnect(broker, uid):
    a = RawClient(broker.host, broker.port, 5)
    a.connect(f"{uid}-a")
    a.subscribe(f"$share/g/{uid}/t", 1)
    b = RawClient(broker.host, broker.port, 5)
    b.connect(f"{uid}-b")
    b.subscribe(f"$share/g/{uid}/t", 1)
    pub = RawClient(broker.host, broker.port, 5)
    pub.connect(f"{uid}-p")
    pub.publish(f"{uid}/t", b"must arrive", 1)
    first = a.recv_or_none(1.0)
    receiver, other = (a, b) if first is not None else (b, a)
    if first is None:
        first = b.recv_type(3)
    assert first.payload == b"must arrive"
    receiver.close()  # without PUBACK
    again = other.recv_type(3)
    assert again.payload == b"must arrive"


def test_no_local_on_shared_subscription_is_a_protocol_error(broker, uid):
    # [MQTT-3.8.3-4]
    c = RawClient(broker.host, broker.port, 5)
    c.connect(uid)
    c.send(Subscribe(1, [Subscription(f"$share/g/{uid}", 0, no_local=True)]))
    got = c.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(14, 0x82)]


def test_shared_subscription_refused_when_not_available(make_broker, uid):
    b = make_broker(limits={"shared_subscription_available": False})
    c = RawClient(b.host, b.port, 5)
    c.connect(uid)
    assert c.subscribe("$share/g/t", 0) == [0x9E]


def _member_holding_unacknowledged(broker, uid):
    """A persistent member A of `$share/g/<uid>/t` that stopped reading (so acknowledges
    nothing) while the broker sent it a QoS 2 message `q2` then a QoS 1 message `q1`, and a
    member B that joined afterwards; A then vanishes. Returns (B, the publisher)."""
    group = f"$share/g/{uid}/t"
    a = PahoClient(broker.host, broker.port, f"{uid}-a", session_expiry=300)
    a.subscribe(group, 2)
    a.client.loop_stop()  # A reads nothing from now on: no PUBREC, no PUBACK
    pub = PahoClient(broker.host, broker.port, f"{uid}-p")
    pub.publish(f"{uid}/t", b"q2", 2)  # completed for the publisher once routed to A
    pub.publish(f"{uid}/t", b"q1", 1)
    b = PahoClient(broker.host, broker.port, f"{uid}-b")
    b.subscribe(group, 2)
    a.drop()
    return b, pub


def test_shared_qos1_message_in_flight_moves_to_another_member_qos2_stays(broker, uid):
    # MQTT 5.0 section 4.8.2: an unacknowledged QoS 1 message may go to another member when
    # the first one's connection breaks; a QoS 2 message in flight is completed with the
    # member it was sent to when it reconnects [MQTT-4.8.2-4], never sent to another.
    b, pub = _member_holding_unacknowledged(broker, uid)
    moved = b.expect()
    assert (moved.payload, moved.qos) == (b"q1", 1)
    pub.publish(f"{uid}/t", b"after", 1)  # round robin prefers B, the connected member
    assert b.expect().payload == b"after"  # and nothing (no q2) before it
    a = PahoClient(broker.host, broker.port, f"{uid}-a", clean=False, session_expiry=300)
    assert a.session_present
    resumed = a.expect()
    assert (resumed.payload, resumed.qos, resumed.dup) == (b"q2", 2, True)
    a.expect_none()  # q1 went to B; it is not sent to A as well
    b.expect_none()


def test_shared_qos2_message_in_flight_is_not_sent_to_another_member_when_session_ends(
        broker, uid):
    # [MQTT-4.8.2-5] the member's session ends (it comes back with Clean Start 1) before it
    # completed the QoS 2 message: the message goes to no other member.
    b, pub = _member_holding_unacknowledged(broker, uid)
    assert b.expect().payload == b"q1"
    a = PahoClient(broker.host, broker.port, f"{uid}-a", clean=True, session_expiry=300)
    assert not a.session_present
    pub.publish(f"{uid}/t", b"after", 1)  # B is the group's only member now
    assert b.expect().payload == b"after"  # q2 was not moved to B when A's session ended
    b.expect_none()
    a.expect_none()
