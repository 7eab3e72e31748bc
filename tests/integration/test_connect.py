"""CONNECT and CONNACK (MQTT 5.0 section 3.1/3.2, 3.1.1 section 3.1/3.2)."""

import time

from clients import PahoClient, RawClient
from hbroker_ext.codec import (
    ASSIGNED_CLIENT_IDENTIFIER,
    AUTHENTICATION_METHOD,
    MAXIMUM_PACKET_SIZE,
    RECEIVE_MAXIMUM,
    REQUEST_RESPONSE_INFORMATION,
    RESPONSE_INFORMATION,
    SERVER_KEEP_ALIVE,
    SESSION_EXPIRY_INTERVAL,
    TOPIC_ALIAS_MAXIMUM,
    Connect,
    Disconnect,
    Pingreq,
    Publish,
    Will,
)


def test_v5_connect_is_accepted_with_broker_limits_in_connack(broker, uid):
    c = RawClient(broker.host, broker.port, 5)
    connack = c.connect(uid)
    assert connack.reason_code == 0
    assert not connack.session_present
    props = connack.properties
    assert props[RECEIVE_MAXIMUM] == 20
    assert props[TOPIC_ALIAS_MAXIMUM] == 10
    assert props[MAXIMUM_PACKET_SIZE] == 1048576  # the configured maximum (default 1 MiB)


def test_v311_connect_is_accepted(broker, uid):
    c = RawClient(broker.host, broker.port, 4)
    connack = c.connect(uid)
    assert (connack.reason_code, connack.properties) == (0, None)


def test_v31_connect_with_mqisdp_is_accepted(broker, uid):
    c = RawClient(broker.host, broker.port, 3)
    assert c.connect(uid[:23]).reason_code == 0


def test_unsupported_protocol_level_gets_connack_0x01_and_close(broker):
    # [MQTT-3.1.2-2] 3.1.1 return code 0x01: unacceptable protocol version.
    c = RawClient(broker.host, broker.port, 4)
    c.send_raw(b"\x10\x0c\x00\x04MQTT\x07\x02\x00\x3c\x00\x00")
    got = c.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(2, 0x01)]


def test_first_packet_other_than_connect_closes_connection(broker):
    # [MQTT-3.1.0-1]
    c = RawClient(broker.host, broker.port, 4)
    c.send(Pingreq())
    assert c.closed_by_broker() == []


def test_second_connect_is_a_protocol_error(broker, uid):
    # [MQTT-3.1.0-2]
    c = RawClient(broker.host, broker.port, 5)
    c.connect(uid)
    c.send(Connect(uid, 5))
    got = c.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(14, 0x82)]


def test_reserved_connect_flag_closes_connection(broker):
    # [MQTT-3.1.2-3] the reserved flag must be 0.
    c = RawClient(broker.host, broker.port, 4)
    c.send_raw(b"\x10\x0c\x00\x04MQTT\x04\x03\x00\x3c\x00\x00")
    got = c.closed_by_broker()
    assert all(p.packet_type != 2 or p.reason_code != 0 for p in got)


def test_zero_length_client_id_gets_assigned_identifier_in_v5(broker):
    # [MQTT-3.1.3-6, MQTT-3.2.2-16]
    c = RawClient(broker.host, broker.port, 5)
    connack = c.connect("")
    assert connack.reason_code == 0
    assert connack.properties[ASSIGNED_CLIENT_IDENTIFIER].startswith("auto-")


def test_zero_length_client_id_with_clean_session_0_is_rejected_in_v311(broker):
    # [MQTT-3.1.3-8] CONNACK 0x02 identifier rejected, then close.
    c = RawClient(broker.host, broker.port, 4)
    c.send(Connect("", 4, clean_start=False))
    got = c.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(2, 0x02)]


def test_zero_length_client_id_is_accepted_with_clean_session_1_in_v311(broker):
    c = RawClient(broker.host, broker.port, 4)
    assert c.connect("", clean_start=True).reason_code == 0


def test_zero_length_client_id_refused_when_configured(make_broker):
    b = make_broker(sessions={"allow_zero_length_client_id": False})
    c = RawClient(b.host, b.port, 5)
    c.send(Connect("", 5))
    got = c.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(2, 0x85)]


def test_client_id_longer_than_configured_is_rejected(make_broker):
    b = make_broker(sessions={"max_client_id_length": 8})
    c = RawClient(b.host, b.port, 5)
    c.send(Connect("x" * 9, 5))
    got = c.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(2, 0x85)]
    c4 = RawClient(b.host, b.port, 4)
    c4.send(Connect("x" * 9, 4))
    got = c4.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(2, 0x02)]


def test_unknown_authentication_method_is_refused_with_0x8c(broker, uid):
    c = RawClient(broker.host, broker.port, 5)
    c.send(Connect(uid, 5, properties={AUTHENTICATION_METHOD: "SCRAM-SHA-1"}))
    got = c.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(2, 0x8C)]


def test_will_qos_above_maximum_is_refused(make_broker, uid):
    b = make_broker(limits={"max_qos": 1})
    c = RawClient(b.host, b.port, 5)
    c.send(Connect(uid, 5, will=Will("w", b"x", 2)))
    got = c.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(2, 0x9B)]


def test_will_retain_refused_when_retain_not_available(make_broker, uid):
    b = make_broker(limits={"retain_available": False})
    c = RawClient(b.host, b.port, 5)
    c.send(Connect(uid, 5, will=Will("w", b"x", 0, True)))
    got = c.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(2, 0x9A)]


def test_will_topic_with_wildcard_is_refused(broker, uid):
    c = RawClient(broker.host, broker.port, 5)
    c.send(Connect(uid, 5, will=Will("a/+", b"x")))
    got = c.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(2, 0x90)]


def test_takeover_sends_0x8e_to_old_v5_connection_and_publishes_its_will(broker, uid):
    # [MQTT-3.1.4-3] the existing connection is closed; 5.0 tells it why.
    watcher = PahoClient(broker.host, broker.port, f"{uid}-w")
    watcher.subscribe(f"{uid}/will", 1)
    old = RawClient(broker.host, broker.port, 5)
    old.connect(uid, will=Will(f"{uid}/will", b"gone", 1))
    new = RawClient(broker.host, broker.port, 5)
    assert new.connect(uid).reason_code == 0
    got = old.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(14, 0x8E)]
    assert watcher.expect().payload == b"gone"


def test_takeover_of_v311_connection_closes_it(broker, uid):
    old = RawClient(broker.host, broker.port, 4)
    old.connect(uid)
    new = RawClient(broker.host, broker.port, 4)
    assert new.connect(uid).reason_code == 0
    assert old.closed_by_broker() == []


def test_socket_without_connect_is_closed_after_connect_timeout(make_broker):
    b = make_broker(limits={"connect_timeout": 0.5})
    c = RawClient(b.host, b.port, 4)
    start = time.monotonic()
    assert c.closed_by_broker(timeout=5) == []
    assert time.monotonic() - start >= 0.4


def test_server_keep_alive_caps_client_keepalive(make_broker, uid):
    # [MQTT-3.2.2-21] the client must use the Server Keep Alive value.
    b = make_broker(limits={"max_keepalive": 30})
    c = RawClient(b.host, b.port, 5)
    assert c.connect(uid, keepalive=120).properties[SERVER_KEEP_ALIVE] == 30
    c0 = RawClient(b.host, b.port, 5)
    assert c0.connect(f"{uid}-0", keepalive=0).properties[SERVER_KEEP_ALIVE] == 30


def test_session_expiry_above_maximum_is_capped_in_connack(make_broker, uid):
    b = make_broker(sessions={"max_session_expiry_interval": 60})
    c = RawClient(b.host, b.port, 5)
    connack = c.connect(uid, properties={SESSION_EXPIRY_INTERVAL: 3600})
    assert connack.properties[SESSION_EXPIRY_INTERVAL] == 60


def test_request_response_information_returns_response_information(broker, uid):
    c = RawClient(broker.host, broker.port, 5)
    connack = c.connect(uid, properties={REQUEST_RESPONSE_INFORMATION: 1})
    assert connack.properties[RESPONSE_INFORMATION] == f"responses/{uid}"


def test_paho_v5_and_v311_clients_connect(broker, uid):
    for version in (5, 4):
        c = PahoClient(broker.host, broker.port, f"{uid}-{version}", version=version)
        assert not c.session_present
        c.disconnect()


def test_packet_before_connack_completion_in_same_buffer_is_handled(broker, uid):
    # One buffer with CONNECT, PUBLISH QoS 0 and DISCONNECT: every packet is handled in order.
    from hbroker_ext.codec import encode

    sub = PahoClient(broker.host, broker.port, f"{uid}-s")
    sub.subscribe(f"{uid}/t")
    c = RawClient(broker.host, broker.port, 5)
    c.send_raw(encode(Connect(uid, 5), 5) + encode(Publish(f"{uid}/t", b"batched"), 5)
               + encode(Disconnect(), 5))
    got = c.closed_by_broker()
    assert got[0].packet_type == 2
    assert sub.expect().payload == b"batched"
