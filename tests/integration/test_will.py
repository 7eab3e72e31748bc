"""Will messages (MQTT 5.0 section 3.1.2.5, 3.1.3.2; 3.1.1 section 3.1.2.5)."""

import time

from clients import QUIET, WAIT, PahoClient, RawClient
from hbroker_ext.codec import (
    SESSION_EXPIRY_INTERVAL,
    WILL_DELAY_INTERVAL,
    Disconnect,
    Will,
)
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def test_will_is_published_when_client_vanishes(broker, uid):
    watcher = PahoClient(broker.host, broker.port, f"{uid}-w")
    watcher.subscribe(f"{uid}/will", 1)
    c = PahoClient(broker.host, broker.port, uid, version=4, will=(f"{uid}/will", b"lost", 1,
                                                                   False))
    c.drop()
    msg = watcher.expect()
    assert (msg.payload, msg.qos) == (b"lost", 1)


def test_will_is_not_published_on_normal_disconnect(broker, uid):
    # [MQTT-3.1.2-10]
    watcher = PahoClient(broker.host, broker.port, f"{uid}-w")
    watcher.subscribe(f"{uid}/will", 1)
    c = PahoClient(broker.host, broker.port, uid, will=(f"{uid}/will", b"lost", 1, False))
    c.disconnect()
    watcher.expect_none()


def test_will_is_published_on_disconnect_with_will_message_0x04(broker, uid):
    watcher = PahoClient(broker.host, broker.port, f"{uid}-w")
    watcher.subscribe(f"{uid}/will", 1)
    c = RawClient(broker.host, broker.port, 5)
    c.connect(uid, will=Will(f"{uid}/will", b"asked", 1))
    c.send(Disconnect(0x04))
    assert watcher.expect().payload == b"asked"


def test_retained_will_is_kept_as_retained_message(broker, uid):
    c = RawClient(broker.host, broker.port, 4)
    c.connect(uid, will=Will(f"{uid}/status", b"offline", 1, True))
    c.close()
    time.sleep(0.3)
    watcher = PahoClient(broker.host, broker.port, f"{uid}-w")
    watcher.subscribe(f"{uid}/status", 1)
    msg = watcher.expect()
    assert (msg.payload, msg.retain) == (b"offline", True)


def test_will_delay_interval_delays_the_will(broker, uid):
    watcher = PahoClient(broker.host, broker.port, f"{uid}-w")
    watcher.subscribe(f"{uid}/will", 0)
    c = RawClient(broker.host, broker.port, 5)
    c.connect(uid, properties={SESSION_EXPIRY_INTERVAL: 60},
              will=Will(f"{uid}/will", b"late", 0, False, {WILL_DELAY_INTERVAL: 2}))
    start = time.monotonic()
    c.close()
    watcher.expect_none(1.0)
    assert watcher.expect(5).payload == b"late"
    assert time.monotonic() - start >= 1.5


def test_will_is_not_sent_if_client_reconnects_within_will_delay(broker, uid):
    # [MQTT-3.1.3-9]
    watcher = PahoClient(broker.host, broker.port, f"{uid}-w")
    watcher.subscribe(f"{uid}/will", 0)
    c = RawClient(broker.host, broker.port, 5)
    c.connect(uid, properties={SESSION_EXPIRY_INTERVAL: 60},
              will=Will(f"{uid}/will", b"late", 0, False, {WILL_DELAY_INTERVAL: 2}))
    c.close()
    c2 = RawClient(broker.host, broker.port, 5)
    assert c2.connect(uid, clean_start=False,
                      properties={SESSION_EXPIRY_INTERVAL: 60}).session_present
    watcher.expect_none(3.0)


def test_will_is_sent_when_session_ends_before_will_delay(broker, uid):
    # The will goes when the delay elapses or the session ends, whichever first.
    watcher = PahoClient(broker.host, broker.port, f"{uid}-w")
    watcher.subscribe(f"{uid}/will", 0)
    c = RawClient(broker.host, broker.port, 5)
    c.connect(uid, will=Will(f"{uid}/will", b"session over", 0, False,
                             {WILL_DELAY_INTERVAL: 30}))  # session expiry 0
    c.close()
    assert watcher.expect(3).payload == b"session over"


def test_will_properties_are_passed_to_subscribers(broker, uid):
    watcher = PahoClient(broker.host, broker.port, f"{uid}-w")
    watcher.subscribe(f"{uid}/will", 0)
    props = Properties(PacketTypes.WILLMESSAGE)
    props.ContentType = "text/plain"
    props.UserProperty = ("k", "v")
    c = PahoClient(broker.host, broker.port, uid, will=(f"{uid}/will", b"w", 0, False, props))
    c.drop()
    msg = watcher.expect()
    assert msg.properties.ContentType == "text/plain"
    assert msg.properties.UserProperty == [("k", "v")]


def test_no_will_when_none_was_set(broker, uid):
    watcher = PahoClient(broker.host, broker.port, f"{uid}-w")
    watcher.subscribe(f"{uid}/#", 0)
    c = RawClient(broker.host, broker.port, 4)
    c.connect(uid)
    c.close()
    watcher.expect_none(QUIET)


def wait_for_log(broker, text: str) -> None:
    deadline = time.monotonic() + WAIT
    while text not in broker.log():
        assert time.monotonic() < deadline, f"{text!r} not logged"
        time.sleep(0.05)


def will_with_delay(topic: str, delay: int) -> tuple:
    props = Properties(PacketTypes.WILLMESSAGE)
    props.WillDelayInterval = delay
    return (topic, b"offline", 1, False, props)


def test_will_is_not_published_when_client_reconnects_with_clean_start_within_will_delay(
        broker, uid):
    # [MQTT-3.1.2-8] no will when "a new Network Connection for the ClientID is opened before
    # the Will Delay Interval has elapsed", also when Clean Start 1 then ends the old session.
    watcher = PahoClient(broker.host, broker.port, f"{uid}-w")
    watcher.subscribe(f"{uid}/will", 1)
    c = PahoClient(broker.host, broker.port, uid, session_expiry=60,
                   will=will_with_delay(f"{uid}/will", 3))
    c.drop()
    wait_for_log(broker, f"connection closed client_id={uid} ")  # gone, not taken over
    again = PahoClient(broker.host, broker.port, uid, clean=True)
    assert not again.session_present
    again.publish(f"{uid}/will", b"back", 1)
    # The will would have been published as the new connection opened, before this message.
    assert watcher.expect().payload == b"back"


def test_takeover_with_clean_start_1_within_will_delay_does_not_publish_the_will(broker, uid):
    # The same rule when the old connection is still open: the takeover is the new Network
    # Connection, opened before the Will Delay Interval elapsed.
    watcher = PahoClient(broker.host, broker.port, f"{uid}-w")
    watcher.subscribe(f"{uid}/will", 1)
    old = RawClient(broker.host, broker.port, 5)
    old.connect(uid, properties={SESSION_EXPIRY_INTERVAL: 60},
                will=Will(f"{uid}/will", b"offline", 1, False, {WILL_DELAY_INTERVAL: 3}))
    again = PahoClient(broker.host, broker.port, uid, clean=True)
    assert [p.reason_code for p in old.closed_by_broker()] == [0x8E]
    again.publish(f"{uid}/will", b"back", 1)
    assert watcher.expect().payload == b"back"
