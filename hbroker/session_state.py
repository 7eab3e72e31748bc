"""A session's state (MQTT 5.0 section 4.1) as plain data, to move a session between brokers.

`export_session` reads a disconnected session into a dict of plain values (msgpack-able:
subscriptions with their options, the outgoing QoS 1/2 messages in flight with their packet
ids and states, the queue in order, the incoming QoS 2 packet ids awaiting PUBREL, the next
packet id, the expiry); `import_session` builds the same session in another broker, so that a
client resuming it there gets the unacknowledged PUBLISHes again with their packet ids and DUP
[MQTT-4.4.0-1], the PUBRELs, then the queue in order [MQTT-4.6.0-1]. Message expiry travels as
the seconds left, so it keeps counting down.

The cluster layer moves a session from the instance that held it to the one its client
connects to with these (`hbroker.cluster.sessions`). Each message may carry a tag (`tag_of`):
the cluster's number for it, with which the importer recognises a message it already queued
itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hbroker_ext.codec import USER_PROPERTY

from hbroker.session import NEVER, NO_QUEUE, Delivery, Message
from hbroker.subscription import SubscriptionOptions

if TYPE_CHECKING:
    from hbroker.broker import Broker
    from hbroker.session import Session


def _message(msg: Message, now: float, tag: str | None) -> list[Any]:
    left = max(0.0, msg.expires_at - now) if msg.expires_at else 0.0
    return [msg.topic, msg.payload, msg.qos, msg.retain, msg.properties, left, msg.sender,
            tag]


def _delivery(d: Delivery, now: float, tag_of: Callable[[Message], str | None]) -> list[Any]:
    return [_message(d.message, now, tag_of(d.message)), d.qos, d.retain, d.sub_ids, d.group,
            d.packet_id, d.state]


def export_session(session: Session, now: float,
                   tag_of: Callable[[Message], str | None] = lambda m: None) -> dict[str, Any]:
    """The state of `session` (disconnected: nothing is being sent to it) as plain data."""
    assert session.connection is None, "export a disconnected session"
    expiry = session.expiry_interval
    return {
        "client_id": session.client_id,
        "protocol_version": session.protocol_version,
        "expiry": -1 if expiry == NEVER else expiry,
        "subscriptions": [
            [f, o.qos, o.no_local, o.retain_as_published, o.retain_handling, o.sub_id]
            for f, o in session.subscriptions.items()],
        "inflight": [_delivery(d, now, tag_of) for d in session.inflight.values()],
        "queue": [_delivery(d, now, tag_of) for d in session.queue],
        "awaiting_pubrel": sorted(session.awaiting_pubrel),
        "next_packet_id": session.next_packet_id,
    }


def subscriptions_of(state: dict[str, Any]) -> dict[str, SubscriptionOptions]:
    return {s[0]: SubscriptionOptions(s[1], bool(s[2]), bool(s[3]), s[4], s[5])
            for s in state["subscriptions"]}


def _to_message(m: list[Any], now: float) -> tuple[Message, str | None]:
    topic, payload, qos, retain, props, left, sender, tag = m
    if props:
        props = {int(k): v for k, v in props.items()}
        if USER_PROPERTY in props:
            props[USER_PROPERTY] = [tuple(pair) for pair in props[USER_PROPERTY]]
    return Message(topic, payload, qos, retain, props or None, now + left if left else 0.0,
                   sender), tag


def _to_delivery(d: list[Any], now: float) -> tuple[Delivery, str | None]:
    m, qos, retain, sub_ids, group, packet_id, state = d
    msg, tag = _to_message(m, now)
    delivery = Delivery(msg, qos, retain, tuple(sub_ids) if sub_ids else sub_ids, group)
    delivery.packet_id = packet_id
    delivery.state = state
    return delivery, tag


def import_session(broker: Broker, state: dict[str, Any], now: float,
                   session: Session | None = None,
                   tag_of: Callable[[Message], str | None] = lambda m: None) -> Session:
    """Build the exported session in `broker`, disconnected (its expiry running from now),
    with its subscriptions in the tree. `session`: a session of the same client id the
    broker already holds for it (made with the same subscriptions while the state was on its
    way): the imported inflight messages and queue go before what it queued meanwhile, less
    the messages whose tag (`tag_of`) the imported ones carry. Recorded with the journal
    when the session outlives its connection; the hooks are not told (the session is not
    new: it moved)."""
    client_id = state["client_id"]
    if session is None:
        session = broker.new_session(client_id, state["protocol_version"])
    expiry = state["expiry"]
    session.expiry_interval = NEVER if expiry == -1 else expiry
    session.protocol_version = state["protocol_version"]
    for topic_filter, opts in subscriptions_of(state).items():
        if topic_filter not in session.subscriptions:
            broker.restore_subscription(session, topic_filter, opts)
        else:
            session.subscriptions[topic_filter] = opts
    imported_tags = set()
    inflight = []
    for d in state["inflight"]:
        delivery, tag = _to_delivery(d, now)
        inflight.append(delivery)
        if tag is not None:
            imported_tags.add(tag)
    queued = []
    for d in state["queue"]:
        delivery, tag = _to_delivery(d, now)
        queued.append(delivery)
        if tag is not None:
            imported_tags.add(tag)
    # What the session queued here meanwhile (it was made offline: nothing is inflight)
    meanwhile = list(session.queue)
    session.queue = NO_QUEUE
    session.queued_bytes = 0
    for delivery in inflight:
        session.restore_delivery(delivery)
    for delivery in queued:
        session.restore_delivery(delivery)
    journal = broker.journal if session.expiry_interval else None
    kept = []
    for delivery in meanwhile:
        if journal is not None and delivery.seq:
            # recorded again below, after the imported ones: a restart keeps this order
            journal.delivery_removed(session, delivery)
        if imported_tags and tag_of(delivery.message) in imported_tags:
            continue  # it reached both: the copy that came with the session is kept
        session.restore_delivery(delivery)
        kept.append(delivery)
    for packet_id in state["awaiting_pubrel"]:
        session.restore_qos2(packet_id)
    session.next_packet_id = state["next_packet_id"]
    session.expires_at = NEVER if session.expiry_interval == NEVER \
        else now + session.expiry_interval
    broker.restore_session(session)
    if journal is not None:
        journal.session_changed(session)
        for topic_filter in session.subscriptions:
            journal.subscription_changed(session, topic_filter)
        for delivery in (*inflight, *queued, *kept):
            journal.delivery_changed(session, delivery)
        for packet_id in session.awaiting_pubrel:
            journal.qos2_changed(session, packet_id)
    return session


__all__ = ["export_session", "import_session", "subscriptions_of"]
