"""Retained messages (MQTT 5.0 section 3.3.1.3, 3.1.1 section 3.3.1.3)."""

from clients import QUIET, PahoClient, RawClient


def test_retained_message_is_delivered_to_new_subscriber_with_retain_flag(broker, uid):
    # [MQTT-3.3.1-5, MQTT-3.3.1-8]
    pub = PahoClient(broker.host, broker.port, f"{uid}-p")
    pub.publish(f"{uid}/t", b"kept", 1, retain=True)
    sub = PahoClient(broker.host, broker.port, f"{uid}-s", version=4)
    sub.subscribe(f"{uid}/#", 1)
    msg = sub.expect()
    assert (msg.topic, msg.payload, msg.retain) == (f"{uid}/t", b"kept", True)


def test_retained_message_is_replaced_by_a_newer_one(broker, uid):
    pub = PahoClient(broker.host, broker.port, f"{uid}-p")
    pub.publish(f"{uid}/t", b"old", 1, retain=True)
    pub.publish(f"{uid}/t", b"new", 1, retain=True)
    sub = PahoClient(broker.host, broker.port, f"{uid}-s")
    sub.subscribe(f"{uid}/t", 1)
    assert sub.expect().payload == b"new"
    sub.expect_none()


def test_retained_message_is_cleared_by_empty_payload(broker, uid):
    # [MQTT-3.3.1-6, MQTT-3.3.1-7]
    pub = PahoClient(broker.host, broker.port, f"{uid}-p")
    pub.publish(f"{uid}/t", b"soon gone", 1, retain=True)
    pub.publish(f"{uid}/t", b"", 1, retain=True)
    sub = PahoClient(broker.host, broker.port, f"{uid}-s")
    sub.subscribe(f"{uid}/t", 1)
    sub.expect_none()


def test_live_message_to_existing_v311_subscriber_has_retain_flag_cleared(broker, uid):
    # [MQTT-3.3.1-9]
    sub = PahoClient(broker.host, broker.port, f"{uid}-s", version=4)
    sub.subscribe(f"{uid}/t", 0)
    pub = PahoClient(broker.host, broker.port, f"{uid}-p")
    pub.publish(f"{uid}/t", b"live", 0, retain=True)
    assert sub.expect().retain is False


def test_retain_as_published_keeps_retain_flag_on_live_messages(broker, uid):
    # [MQTT-3.3.1-12]
    sub = PahoClient(broker.host, broker.port, f"{uid}-s")
    sub.subscribe(f"{uid}/t", 0, retainAsPublished=True)
    pub = PahoClient(broker.host, broker.port, f"{uid}-p")
    pub.publish(f"{uid}/t", b"live", 0, retain=True)
    assert sub.expect().retain is True


def test_retain_handling_0_sends_retained_on_every_subscribe(broker, uid):
    pub = PahoClient(broker.host, broker.port, f"{uid}-p")
    pub.publish(f"{uid}/t", b"r", 1, retain=True)
    sub = RawClient(broker.host, broker.port, 5)
    sub.connect(f"{uid}-s")
    sub.subscribe(f"{uid}/t", 0, retain_handling=0)
    assert sub.recv_type(3).payload == b"r"
    sub.subscribe(f"{uid}/t", 0, packet_id=2, retain_handling=0)
    assert sub.recv_type(3).payload == b"r"  # [MQTT-3.3.1-10]


def test_retain_handling_1_sends_retained_only_for_new_subscription(broker, uid):
    pub = PahoClient(broker.host, broker.port, f"{uid}-p")
    pub.publish(f"{uid}/t", b"r", 1, retain=True)
    sub = RawClient(broker.host, broker.port, 5)
    sub.connect(f"{uid}-s")
    sub.subscribe(f"{uid}/t", 0, retain_handling=1)
    assert sub.recv_type(3).payload == b"r"
    sub.subscribe(f"{uid}/t", 0, packet_id=2, retain_handling=1)
    assert sub.recv_or_none(QUIET) is None  # [MQTT-3.3.1-10]


def test_retain_handling_2_never_sends_retained(broker, uid):
    pub = PahoClient(broker.host, broker.port, f"{uid}-p")
    pub.publish(f"{uid}/t", b"r", 1, retain=True)
    sub = RawClient(broker.host, broker.port, 5)
    sub.connect(f"{uid}-s")
    sub.subscribe(f"{uid}/t", 0, retain_handling=2)
    assert sub.recv_or_none(QUIET) is None  # [MQTT-3.3.1-11]


def test_retained_messages_match_wildcard_filters(broker, uid):
    pub = PahoClient(broker.host, broker.port, f"{uid}-p")
    for topic in ("a/x", "a/y", "b/x"):
        pub.publish(f"{uid}/{topic}", topic.encode(), 1, retain=True)
    sub = PahoClient(broker.host, broker.port, f"{uid}-s")
    sub.subscribe(f"{uid}/+/x", 0)
    got = {sub.expect().payload, sub.expect().payload}
    assert got == {b"a/x", b"b/x"}
    sub.expect_none()


def test_retained_delivery_uses_minimum_of_message_and_subscription_qos(broker, uid):
    pub = PahoClient(broker.host, broker.port, f"{uid}-p")
    pub.publish(f"{uid}/t", b"r", 2, retain=True)
    sub = PahoClient(broker.host, broker.port, f"{uid}-s")
    sub.subscribe(f"{uid}/t", 1)
    assert sub.expect().qos == 1


def test_publish_with_retain_when_not_available_disconnects_with_0x9a(make_broker, uid):
    b = make_broker(limits={"retain_available": False})
    c = RawClient(b.host, b.port, 5)
    c.connect(uid)
    c.publish(f"{uid}/t", b"x", 0, retain=True)
    got = c.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(14, 0x9A)]


def test_mosquitto_pub_retained_is_read_by_mosquitto_sub(broker, uid):
    import subprocess

    topic = f"{uid}/r"
    subprocess.run(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-V", "311",
                    "-t", topic, "-m", "from-mosquitto", "-r", "-q", "1"], check=True,
                   timeout=10)
    out = subprocess.run(["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-V", "5",
                          "-t", topic, "-C", "1", "-v", "-W", "5"], capture_output=True,
                         text=True, timeout=10, check=True)
    assert out.stdout.strip() == f"{topic} from-mosquitto"
