"""MQTT 5.0 properties: keepalive, topic aliases, packet size, expiry, pass-through, AUTH."""

import time

from clients import QUIET, PahoClient, RawClient
from hbroker_ext.codec import (
    AUTHENTICATION_METHOD,
    MAXIMUM_PACKET_SIZE,
    MESSAGE_EXPIRY_INTERVAL,
    PAYLOAD_FORMAT_INDICATOR,
    SESSION_EXPIRY_INTERVAL,
    TOPIC_ALIAS,
    TOPIC_ALIAS_MAXIMUM,
    Auth,
    Pingreq,
    Publish,
    Will,
)
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

# -- keepalive ------------------------------------------------------------------------------


def test_silent_client_is_disconnected_after_one_and_a_half_keepalive(broker, uid):
    # [MQTT-3.1.2-22] with DISCONNECT 0x8D for a 5.0 client.
    c = RawClient(broker.host, broker.port, 5)
    c.connect(uid, keepalive=1)
    # Within the keep alive itself the connection stays open: nothing arrives...
    assert c.recv_or_none(1.0) is None
    # ...and once one and a half times it has passed without a packet, the broker closes it.
    got = c.closed_by_broker(timeout=5)
    assert [(p.packet_type, p.reason_code) for p in got] == [(14, 0x8D)]


def test_pingreq_keeps_the_connection_alive(broker, uid):
    c = RawClient(broker.host, broker.port, 4)
    c.connect(uid, keepalive=1)
    for _ in range(4):
        time.sleep(0.5)
        c.send(Pingreq())
        assert c.recv_type(13).packet_type == 13


def test_keepalive_timeout_publishes_the_will(broker, uid):
    watcher = PahoClient(broker.host, broker.port, f"{uid}-w")
    watcher.subscribe(f"{uid}/will", 0)
    c = RawClient(broker.host, broker.port, 4)
    c.connect(uid, keepalive=1, will=Will(f"{uid}/will", b"timed out"))
    assert watcher.expect(5).payload == b"timed out"


def test_keepalive_zero_disables_the_timeout(broker, uid):
    c = RawClient(broker.host, broker.port, 4)
    c.connect(uid, keepalive=0)
    time.sleep(1.5)
    c.send(Pingreq())
    assert c.recv_type(13).packet_type == 13


# -- topic aliases --------------------------------------------------------------------------


def test_client_topic_alias_is_resolved_by_the_broker(broker, uid):
    sub = PahoClient(broker.host, broker.port, f"{uid}-s")
    sub.subscribe(f"{uid}/t", 0)
    c = RawClient(broker.host, broker.port, 5)
    c.connect(uid)
    c.send(Publish(f"{uid}/t", b"first", 0, properties={TOPIC_ALIAS: 1}))
    c.send(Publish("", b"second", 0, properties={TOPIC_ALIAS: 1}))
    assert [sub.expect().payload, sub.expect().payload] == [b"first", b"second"]
    assert sub.expect_none() is None


def test_topic_alias_above_maximum_disconnects_with_0x94(broker, uid):
    # [MQTT-3.3.2-9]
    c = RawClient(broker.host, broker.port, 5)
    c.connect(uid)
    c.send(Publish(f"{uid}/t", b"x", 0, properties={TOPIC_ALIAS: 11}))
    got = c.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(14, 0x94)]


def test_unknown_topic_alias_with_empty_topic_is_a_protocol_error(broker, uid):
    c = RawClient(broker.host, broker.port, 5)
    c.connect(uid)
    c.send(Publish("", b"x", 0, properties={TOPIC_ALIAS: 3}))
    got = c.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(14, 0x82)]


def test_broker_uses_topic_aliases_towards_client_that_allows_them(broker, uid):
    sub = RawClient(broker.host, broker.port, 5)
    sub.connect(f"{uid}-s", properties={TOPIC_ALIAS_MAXIMUM: 5})
    sub.subscribe(f"{uid}/t", 0)
    pub = RawClient(broker.host, broker.port, 5)
    pub.connect(f"{uid}-p")
    pub.publish(f"{uid}/t", b"1")
    pub.publish(f"{uid}/t", b"2")
    first, second = sub.recv_type(3), sub.recv_type(3)
    assert first.topic == f"{uid}/t" and first.properties[TOPIC_ALIAS] == 1
    assert second.topic == "" and second.properties[TOPIC_ALIAS] == 1
    assert second.payload == b"2"


def test_broker_sends_no_topic_alias_to_client_without_topic_alias_maximum(broker, uid):
    sub = RawClient(broker.host, broker.port, 5)
    sub.connect(f"{uid}-s")
    sub.subscribe(f"{uid}/t", 0)
    pub = RawClient(broker.host, broker.port, 5)
    pub.connect(f"{uid}-p")
    pub.publish(f"{uid}/t", b"1")
    msg = sub.recv_type(3)
    assert msg.topic == f"{uid}/t" and TOPIC_ALIAS not in (msg.properties or {})



def test_topic_alias_is_not_assigned_by_a_publish_dropped_as_too_large(broker, uid):
    # [MQTT-3.1.2-25] the big message is not sent to this client, so the alias it would have
    # carried was never told: the next message on the topic must name the topic (and may set
    # up the alias then), never use an alias the client does not know [MQTT-3.3.2-12].
    sub = RawClient(broker.host, broker.port, 5)
    sub.connect(f"{uid}-s", properties={TOPIC_ALIAS_MAXIMUM: 5, MAXIMUM_PACKET_SIZE: 200})
    sub.subscribe(f"{uid}/t", 0)
    pub = RawClient(broker.host, broker.port, 5)
    pub.connect(f"{uid}-p")
    pub.publish(f"{uid}/t", b"x" * 500)
    pub.publish(f"{uid}/t", b"small")
    pub.publish(f"{uid}/t", b"again")
    first, second = sub.recv_type(3), sub.recv_type(3)
    assert (first.topic, first.payload) == (f"{uid}/t", b"small")
    alias = first.properties[TOPIC_ALIAS]
    assert (second.topic, second.payload, second.properties[TOPIC_ALIAS]) == \
        ("", b"again", alias)

# -- maximum packet size -------------------------------------------------------------------


def test_packet_larger_than_maximum_disconnects_with_0x95(make_broker, uid):
    b = make_broker(limits={"max_packet_size": 1024})
    c = RawClient(b.host, b.port, 5)
    assert c.connect(uid).properties[MAXIMUM_PACKET_SIZE] == 1024
    c.send(Publish(f"{uid}/t", b"x" * 2000))
    got = c.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(14, 0x95)]


def test_message_too_large_for_a_client_is_dropped_for_that_client_only(broker, uid):
    # [MQTT-3.1.2-25]
    small = RawClient(broker.host, broker.port, 5)
    small.connect(f"{uid}-small", properties={MAXIMUM_PACKET_SIZE: 200})
    small.subscribe(f"{uid}/t", 1)
    big = PahoClient(broker.host, broker.port, f"{uid}-big")
    big.subscribe(f"{uid}/t", 1)
    pub = PahoClient(broker.host, broker.port, f"{uid}-p")
    pub.publish(f"{uid}/t", b"x" * 500, 1)
    pub.publish(f"{uid}/t", b"small", 1)
    assert big.expect().payload == b"x" * 500
    assert small.recv_type(3).payload == b"small"


# -- message expiry ------------------------------------------------------------------------


def test_queued_message_expires_and_is_not_delivered(broker, uid):
    # [MQTT-3.3.2-5]
    c = RawClient(broker.host, broker.port, 5)
    c.connect(uid, properties={SESSION_EXPIRY_INTERVAL: 60})
    c.subscribe(f"{uid}/t", 1)
    c.close()
    pub = RawClient(broker.host, broker.port, 5)
    pub.connect(f"{uid}-p")
    pub.publish(f"{uid}/t", b"short", 1, properties={MESSAGE_EXPIRY_INTERVAL: 1})
    pub.publish(f"{uid}/t", b"long", 1, properties={MESSAGE_EXPIRY_INTERVAL: 60})
    time.sleep(1.5)
    c2 = RawClient(broker.host, broker.port, 5)
    c2.connect(uid, clean_start=False, properties={SESSION_EXPIRY_INTERVAL: 60})
    msg = c2.recv_type(3)
    assert msg.payload == b"long"
    # [MQTT-3.3.2-6] the interval sent is what is left of it.
    assert 55 <= msg.properties[MESSAGE_EXPIRY_INTERVAL] <= 59


def test_expired_retained_message_is_not_delivered(broker, uid):
    pub = RawClient(broker.host, broker.port, 5)
    pub.connect(f"{uid}-p")
    pub.publish(f"{uid}/t", b"r", 1, retain=True, properties={MESSAGE_EXPIRY_INTERVAL: 1})
    time.sleep(1.5)
    sub = RawClient(broker.host, broker.port, 5)
    sub.connect(f"{uid}-s")
    sub.subscribe(f"{uid}/t", 1)
    assert sub.recv_or_none(QUIET) is None


# -- pass-through -------------------------------------------------------------------------


def test_application_properties_are_passed_through(broker, uid):
    sub = PahoClient(broker.host, broker.port, f"{uid}-s")
    sub.subscribe(f"{uid}/req", 1)
    pub = PahoClient(broker.host, broker.port, f"{uid}-p")
    props = Properties(PacketTypes.PUBLISH)
    props.PayloadFormatIndicator = 1
    props.ContentType = "application/json"
    props.ResponseTopic = f"{uid}/resp"
    props.CorrelationData = b"\x01\x02"
    props.UserProperty = [("a", "1"), ("b", "2")]
    pub.publish(f"{uid}/req", b'{"x": 1}', 1, properties=props)
    got = sub.expect().properties
    assert got.PayloadFormatIndicator == 1
    assert got.ContentType == "application/json"
    assert got.ResponseTopic == f"{uid}/resp"
    assert got.CorrelationData == b"\x01\x02"
    assert got.UserProperty == [("a", "1"), ("b", "2")]  # order kept [MQTT-3.3.2-18]


def test_payload_not_utf8_despite_format_indicator_is_refused_with_0x99(broker, uid):
    c = RawClient(broker.host, broker.port, 5)
    c.connect(uid)
    ack = c.publish(f"{uid}/t", b"\xff\xfe", 1, properties={PAYLOAD_FORMAT_INDICATOR: 1})
    assert ack.reason_code == 0x99


# -- AUTH -------------------------------------------------------------------------------


def test_auth_packet_with_unknown_method_disconnects_with_0x8c(broker, uid):
    c = RawClient(broker.host, broker.port, 5)
    c.connect(uid)
    c.send(Auth(0x19, {AUTHENTICATION_METHOD: "SCRAM-SHA-256"}))
    got = c.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(14, 0x8C)]
