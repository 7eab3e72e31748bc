"""Shared subscriptions on a Broker instance, without sockets (MQTT 5.0 section 4.8.2)."""

from __future__ import annotations

from hbroker.broker import Broker, SubscriptionOptions
from hbroker.config import Config
from hbroker.session import Message, Session

GROUP = "$share/g/sensors/+"


def member(broker: Broker, client_id: str, topic_filter: str = GROUP) -> Session:
    session = broker.new_session(client_id, 5)
    session.expiry_interval = 60  # offline members keep what they are given
    broker.sessions[client_id] = session
    broker.subscribe(session, topic_filter, SubscriptionOptions(1, False, False, 0, 0))
    return session


def publish(broker: Broker, topic: str) -> int:
    return broker.publish(Message(topic, b"x", 1, False, None, 0, "publisher"), 0.0)


def test_round_robin_position_is_freed_when_the_last_member_unsubscribes() -> None:
    broker = Broker(Config())
    a, b = member(broker, "a"), member(broker, "b")
    assert publish(broker, "sensors/1") == 1
    assert GROUP in broker._shared_next
    broker.unsubscribe(a, GROUP)
    assert GROUP in broker._shared_next  # b is still a member: the rotation continues
    broker.unsubscribe(b, GROUP)
    assert broker._shared_next == {}
    assert publish(broker, "sensors/1") == 0


def test_round_robin_position_is_freed_when_the_last_members_session_ends() -> None:
    broker = Broker(Config())
    a, b = member(broker, "a"), member(broker, "b")
    other = member(broker, "c", "$share/h/sensors/#")
    for _ in range(3):
        publish(broker, "sensors/1")
    assert set(broker._shared_next) == {GROUP, "$share/h/sensors/#"}
    broker.end_session(a, publish_will=False, now=0.0)
    broker.end_session(b, publish_will=False, now=0.0)
    assert set(broker._shared_next) == {"$share/h/sensors/#"}
    broker.end_session(other, publish_will=False, now=0.0)
    assert broker._shared_next == {}


def test_round_robin_continues_for_a_group_that_keeps_members() -> None:
    broker = Broker(Config())
    a, b, c = member(broker, "a"), member(broker, "b"), member(broker, "c")
    for _ in range(3):
        publish(broker, "sensors/1")
    assert [len(s.queue) for s in (a, b, c)] == [1, 1, 1]
    broker.unsubscribe(c, GROUP)
    publish(broker, "sensors/1")
    publish(broker, "sensors/1")
    assert [len(s.queue) for s in (a, b)] == [2, 2]
