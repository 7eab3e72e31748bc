"""PUBLISH at QoS 0, 1 and 2 in both directions (MQTT 5.0 section 4.3, 3.1.1 section 4.3)."""

from clients import QUIET, PahoClient, RawClient
from hbroker_ext.codec import (
    SESSION_EXPIRY_INTERVAL,
    Pingreq,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
)


def test_qos0_message_is_delivered_to_subscriber(broker, uid):
    sub = PahoClient(broker.host, broker.port, f"{uid}-s")
    sub.subscribe(f"{uid}/t", 0)
    pub = PahoClient(broker.host, broker.port, f"{uid}-p")
    pub.publish(f"{uid}/t", b"zero", 0)
    msg = sub.expect()
    assert (msg.topic, msg.payload, msg.qos) == (f"{uid}/t", b"zero", 0)


def test_qos1_publish_is_acknowledged_and_delivered_at_qos1(broker, uid):
    sub = PahoClient(broker.host, broker.port, f"{uid}-s", version=4)
    sub.subscribe(f"{uid}/t", 1)
    pub = PahoClient(broker.host, broker.port, f"{uid}-p", version=4)
    pub.publish(f"{uid}/t", b"one", 1)
    msg = sub.expect()
    assert (msg.payload, msg.qos) == (b"one", 1)


def test_qos2_exchange_completes_in_both_directions(broker, uid):
    sub = RawClient(broker.host, broker.port, 5)
    sub.connect(f"{uid}-s")
    sub.subscribe(f"{uid}/t", 2)
    pub = RawClient(broker.host, broker.port, 5)
    pub.connect(f"{uid}-p")
    comp = pub.publish(f"{uid}/t", b"two", 2, packet_id=77)
    assert (comp.packet_type, comp.packet_id, comp.reason_code) == (7, 77, 0)
    msg = sub.recv_type(3)
    assert (msg.payload, msg.qos) == (b"two", 2)
    sub.send(Pubrec(msg.packet_id))
    rel = sub.recv_type(6)
    assert rel.packet_id == msg.packet_id
    sub.send(Pubcomp(msg.packet_id))


def test_qos2_message_resent_before_pubrel_is_delivered_once(broker, uid):
    # [MQTT-4.3.3-10] method A: the packet id is remembered until PUBREL.
    sub = PahoClient(broker.host, broker.port, f"{uid}-s")
    sub.subscribe(f"{uid}/t", 2)
    pub = RawClient(broker.host, broker.port, 5)
    pub.connect(f"{uid}-p")
    pub.send(Publish(f"{uid}/t", b"once", 2, False, False, 5))
    assert pub.recv_type(5).packet_id == 5
    pub.send(Publish(f"{uid}/t", b"once", 2, False, True, 5))  # DUP re-send
    assert pub.recv_type(5).packet_id == 5
    pub.send(Pubrel(5))
    assert pub.recv_type(7).packet_id == 5
    assert sub.expect().payload == b"once"
    sub.expect_none()


def test_pubrel_for_unknown_packet_id_gets_pubcomp_0x92(broker, uid):
    c = RawClient(broker.host, broker.port, 5)
    c.connect(uid)
    c.send(Pubrel(999))
    comp = c.recv_type(7)
    assert (comp.packet_id, comp.reason_code) == (999, 0x92)


def test_puback_reports_no_matching_subscribers_in_v5(broker, uid):
    c = RawClient(broker.host, broker.port, 5)
    c.connect(uid)
    assert c.publish(f"{uid}/nobody", b"x", 1).reason_code == 0x10


def test_delivery_qos_is_downgraded_to_subscription_qos(broker, uid):
    sub = PahoClient(broker.host, broker.port, f"{uid}-s")
    sub.subscribe(f"{uid}/t", 0)
    pub = PahoClient(broker.host, broker.port, f"{uid}-p")
    pub.publish(f"{uid}/t", b"down", 2)
    assert sub.expect().qos == 0


def test_delivery_qos_never_exceeds_publish_qos(broker, uid):
    sub = PahoClient(broker.host, broker.port, f"{uid}-s")
    sub.subscribe(f"{uid}/t", 2)
    pub = PahoClient(broker.host, broker.port, f"{uid}-p")
    pub.publish(f"{uid}/t", b"low", 1)
    assert sub.expect().qos == 1


def test_outgoing_inflight_window_is_bounded_by_receive_maximum(broker, uid):
    # The broker must not send more unacknowledged QoS 1 messages than Receive Maximum.
    from hbroker_ext.codec import RECEIVE_MAXIMUM

    sub = RawClient(broker.host, broker.port, 5)
    sub.connect(f"{uid}-s", properties={RECEIVE_MAXIMUM: 3})
    sub.subscribe(f"{uid}/t", 1)
    pub = RawClient(broker.host, broker.port, 5)
    pub.connect(f"{uid}-p")
    for i in range(6):
        pub.publish(f"{uid}/t", str(i).encode(), 1, packet_id=i + 1)
    first = [sub.recv_type(3) for _ in range(3)]
    assert sub.recv_or_none(QUIET) is None  # window full
    assert [p.payload for p in first] == [b"0", b"1", b"2"]
    sub.send(Puback(first[0].packet_id))
    nxt = sub.recv_type(3)
    assert nxt.payload == b"3"
    assert sub.recv_or_none(QUIET) is None


def test_v311_outgoing_window_is_max_inflight(make_broker, uid):
    b = make_broker(limits={"max_inflight": 2})
    sub = RawClient(b.host, b.port, 4)
    sub.connect(f"{uid}-s")
    sub.subscribe(f"{uid}/t", 1)
    pub = RawClient(b.host, b.port, 4)
    pub.connect(f"{uid}-p")
    for i in range(4):
        pub.publish(f"{uid}/t", b"x", 1, packet_id=i + 1)
    assert len([sub.recv_type(3) for _ in range(2)]) == 2
    assert sub.recv_or_none(QUIET) is None


def test_unacknowledged_messages_are_resent_with_dup_on_session_resume(broker, uid):
    # [MQTT-4.4.0-1] re-send unacknowledged PUBLISH with DUP set on reconnect.
    sub = RawClient(broker.host, broker.port, 5)
    sub.connect(f"{uid}-s", clean_start=True, properties={SESSION_EXPIRY_INTERVAL: 60})
    sub.subscribe(f"{uid}/t", 1)
    pub = RawClient(broker.host, broker.port, 5)
    pub.connect(f"{uid}-p")
    pub.publish(f"{uid}/t", b"again", 1)
    first = sub.recv_type(3)
    assert not first.dup
    sub.close()
    sub2 = RawClient(broker.host, broker.port, 5)
    connack = sub2.connect(f"{uid}-s", clean_start=False,
                           properties={SESSION_EXPIRY_INTERVAL: 60})
    assert connack.session_present
    again = sub2.recv_type(3)
    assert (again.payload, again.dup, again.packet_id) == (b"again", True, first.packet_id)
    sub2.send(Puback(again.packet_id))


def test_pubrel_is_resent_on_session_resume(broker, uid):
    sub = RawClient(broker.host, broker.port, 4)
    sub.connect(f"{uid}-s", clean_start=False)
    sub.subscribe(f"{uid}/t", 2)
    pub = RawClient(broker.host, broker.port, 4)
    pub.connect(f"{uid}-p")
    pub.publish(f"{uid}/t", b"q2", 2)
    msg = sub.recv_type(3)
    sub.send(Pubrec(msg.packet_id))
    assert sub.recv_type(6).packet_id == msg.packet_id
    sub.close()
    sub2 = RawClient(broker.host, broker.port, 4)
    assert sub2.connect(f"{uid}-s", clean_start=False).session_present
    assert sub2.recv_type(6).packet_id == msg.packet_id
    sub2.send(Pubcomp(msg.packet_id))
    assert sub2.recv_or_none(QUIET) is None


def test_publish_above_maximum_qos_disconnects_with_0x9b(make_broker, uid):
    # [MQTT-3.2.2-11]
    b = make_broker(limits={"max_qos": 1})
    c = RawClient(b.host, b.port, 5)
    c.connect(uid)
    c.send(Publish(f"{uid}/t", b"x", 2, False, False, 1))
    got = c.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(14, 0x9B)]


def test_subscription_qos_is_granted_at_most_maximum_qos(make_broker, uid):
    b = make_broker(limits={"max_qos": 1})
    c = RawClient(b.host, b.port, 5)
    c.connect(uid)
    assert c.subscribe(f"{uid}/t", 2) == [1]


def test_receive_maximum_exceeded_by_client_disconnects_with_0x93(make_broker, uid):
    # [MQTT-3.3.4-9] more QoS 2 PUBLISH awaiting PUBREL than the broker's Receive Maximum.
    b = make_broker(limits={"max_inflight": 2})
    c = RawClient(b.host, b.port, 5)
    c.connect(uid)
    for pid in (1, 2, 3):
        c.send(Publish(f"{uid}/t", b"x", 2, False, False, pid))
    got = c.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got][-1] == (14, 0x93)


def test_packet_id_zero_on_qos1_publish_is_a_protocol_error(broker, uid):
    c = RawClient(broker.host, broker.port, 5)
    c.connect(uid)
    c.send_raw(b"\x32\x07\x00\x01t\x00\x00\x00x")
    got = c.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(14, 0x82)]


def test_publish_to_sys_topic_is_refused(broker, uid):
    c = RawClient(broker.host, broker.port, 5)
    c.connect(uid)
    assert c.publish("$SYS/broker/version", b"fake", 1).reason_code == 0x87


def test_v311_client_may_pipeline_more_qos2_publishes_than_max_inflight(broker, uid):
    # 3.1.1 has no Receive Maximum: the broker announced no limit, so a client awaiting more
    # PUBRECs/PUBCOMPs than `max_inflight` (20 by default) breaks no rule and must not be
    # disconnected. 500 messages, up to 100 unfinished at a time.
    sub = PahoClient(broker.host, broker.port, f"{uid}-s", version=4)
    sub.subscribe(f"{uid}/t", 2)
    pub = PahoClient(broker.host, broker.port, f"{uid}-p", version=4, max_inflight=100)
    expected = [f"m{i}".encode() for i in range(500)]
    mids = {pub.publish(f"{uid}/t", payload, 2, wait=False) for payload in expected}
    assert pub.wait_acked(mids, 30), f"{len(mids - pub.acks)} of 500 QoS 2 publishes not completed"
    assert not pub.disconnected.is_set(), f"publisher disconnected: {pub.disconnect_reason}"
    got = [sub.expect().payload for _ in range(500)]
    assert sorted(got) == sorted(expected)  # each exactly once
    sub.expect_none()
    assert not sub.disconnected.is_set()


def test_pubrec_with_error_for_unknown_packet_id_is_not_answered(broker, uid):
    # A PUBREC with a reason code >= 0x80 ends the exchange (MQTT 5.0 section 4.3.3): there is
    # nothing to release, known packet id or not.
    c = RawClient(broker.host, broker.port, 5)
    c.connect(uid)
    c.send(Pubrec(999, 0x80))
    assert c.recv_or_none(QUIET) is None
    c.send(Pubrec(998))  # without an error: PUBREL 0x92 Packet Identifier not found
    rel = c.recv_type(6)
    assert (rel.packet_id, rel.reason_code) == (998, 0x92)


def test_late_puback_and_pubcomp_for_unknown_packet_ids_are_ignored(broker, uid):
    # An acknowledgement for a packet id the broker no longer has in flight is not a fault
    # the broker can prove (the flow may have ended on its side): nothing is answered and the
    # connection stays open.
    c = RawClient(broker.host, broker.port, 5)
    c.connect(uid)
    c.send(Puback(4321))
    c.send(Pubcomp(4322))
    c.send(Pingreq())
    assert c.recv().packet_type == 13  # PINGRESP, nothing before it


def _delivered(broker, uid, qos, version=5):
    """A subscriber holding one unacknowledged QoS `qos` delivery from the broker."""
    sub = RawClient(broker.host, broker.port, version)
    sub.connect(f"{uid}-s")
    sub.subscribe(f"{uid}/t", qos)
    pub = RawClient(broker.host, broker.port, version)
    pub.connect(f"{uid}-p")
    pub.publish(f"{uid}/t", b"x", qos)
    msg = sub.recv_type(3)
    assert msg.qos == qos
    return sub, msg


def test_pubrec_for_a_qos1_delivery_is_a_protocol_error(broker, uid):
    sub, msg = _delivered(broker, uid, 1)
    sub.send(Pubrec(msg.packet_id))
    got = sub.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(14, 0x82)]


def test_puback_for_a_qos2_delivery_is_a_protocol_error(broker, uid):
    sub, msg = _delivered(broker, uid, 2)
    sub.send(Puback(msg.packet_id))
    got = sub.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(14, 0x82)]


def test_pubcomp_before_pubrel_for_a_qos2_delivery_is_a_protocol_error(broker, uid):
    sub, msg = _delivered(broker, uid, 2)
    sub.send(Pubcomp(msg.packet_id))  # the broker sent no PUBREL: PUBREC is due
    got = sub.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(14, 0x82)]


def test_pubcomp_for_a_qos1_delivery_is_a_protocol_error(broker, uid):
    sub, msg = _delivered(broker, uid, 1)
    sub.send(Pubcomp(msg.packet_id))
    got = sub.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(14, 0x82)]


def test_v311_acknowledgement_of_the_wrong_type_closes_the_connection(broker, uid):
    # [MQTT-4.8.0-1] 3.1.1: a protocol violation closes the network connection.
    sub, msg = _delivered(broker, uid, 1, version=4)
    sub.send(Pubrec(msg.packet_id))
    assert sub.closed_by_broker() == []
