"""Rebuilding the broker's state from stored rows at start.

The rows are a state the broker was in (the journal commits a message together with its
deliveries and retained update, `hbroker.storage.journal`), so a restart rebuilds that state
and replays nothing: retained messages come from the retained table only, each session's
inflight and queued messages from its own delivery rows in their order, incoming QoS 2 packet
ids from theirs. No stored message is routed again: routing it would overwrite newer retained
state, deliver it again to sessions that had acknowledged it, and deliver it to sessions that
subscribed after it was published. A message row no delivery references is deleted.

Wall-clock times in rows become the broker's monotonic deadlines, so expiry continues from the
time left. A session whose client was connected when the broker stopped without a word (a
crash) is disconnected from now on: its expiry and its will delay start now, and its will is
published like any will of a connection that closed without DISCONNECT [MQTT-3.1.2-8] (a new
message, published now to the subscriptions restored).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Protocol

import msgpack

from hbroker.session import NEVER, Delivery, Message
from hbroker.storage.base import StoredState
from hbroker.storage.journal import unpack_properties
from hbroker.subscription import SubscriptionOptions

if TYPE_CHECKING:
    from hbroker_ext.topics import RetainedTree

    from hbroker.session import Session
    from hbroker.storage.journal import Journal

log = logging.getLogger("hbroker.storage")


class Target(Protocol):
    """What restoring fills: the broker's sessions (made by the broker, and handed back to it
    with their subscriptions) and retained messages, and its journal (which tracks the rows)."""

    journal: Journal | None
    sessions: dict[str, Session]
    retained: RetainedTree

    def new_session(self, client_id: str, protocol_version: int) -> Session: ...

    def restore_session(self, session: Session) -> None: ...

    def restore_subscription(self, session: Session, topic_filter: str,
                             opts: SubscriptionOptions) -> None: ...

    def publish_will(self, session: Session, now: float) -> None: ...


def restore(broker: Target, state: StoredState) -> dict[str, int]:
    """Load `state` into an empty broker; returns counts for the start-up log. Rows are
    unpacked in the column order of `hbroker.storage.schema`."""
    journal = broker.journal
    assert journal is not None
    now = time.monotonic()
    to_mono = now - time.time()

    def mono(t: float | None) -> float:
        return NEVER if t is None else t + to_mono

    for topic, payload, qos, props, expires_at in state.retained:
        expires = 0.0 if expires_at is None else mono(expires_at)
        msg = Message(topic, payload, qos, True, unpack_properties(props), expires, None)
        if msg.expired(now):
            journal.retained_changed(topic)  # drop the row too
            continue
        broker.retained.set(topic, msg)

    messages: dict[int, Message] = {}
    for (msg_id, topic, payload, qos, retain, props, expires_at,
         sender) in state.messages:
        msg = Message(topic, payload, qos, bool(retain), unpack_properties(props),
                      0.0 if expires_at is None else mono(expires_at), sender)
        journal.restored_message(msg, msg_id, True)
        messages[msg_id] = msg

    sessions: dict[str, Session] = {}
    due: list[Session] = []  # sessions whose will is due at once
    for (client_id, version, expiry_interval, expires_at, will_row, will_delay, will_due,
         next_packet_id) in state.sessions:
        session = broker.new_session(client_id, version)
        session.expiry_interval = NEVER if expiry_interval is None else expiry_interval
        connected_at_stop = expires_at is None and session.expiry_interval != NEVER
        session.expires_at = now + session.expiry_interval if connected_at_stop \
            else mono(expires_at)
        session.next_packet_id = next_packet_id
        if will_row is not None:
            topic, payload, qos, retain, props = msgpack.unpackb(will_row, raw=False)
            session.will = Message(topic, payload, qos, bool(retain), unpack_properties(props),
                                   0, client_id)
            session.will_delay = will_delay
            if will_due is not None:
                session.will_due = mono(will_due)
            else:
                session.will_due = now + min(will_delay, session.expiry_interval)
        sessions[client_id] = session
        broker.restore_session(session)
        if session.will is not None and session.will_due <= now:
            due.append(session)

    for (client_id, topic_filter, qos, no_local, rap, rh, sub_id) in state.subscriptions:
        session = sessions.get(client_id)
        if session is None:
            continue
        broker.restore_subscription(
            session, topic_filter, SubscriptionOptions(qos, bool(no_local), bool(rap), rh, sub_id))

    deliveries = 0
    carried = 0  # messages stored in the row of their only delivery
    for (client_id, seq, msg_id, qos, retain, sub_ids, packet_id, st, group, m_topic,
         m_payload, m_qos, m_retain, m_props, m_expires_at, m_sender) in state.deliveries:
        session = sessions.get(client_id)
        journal.note_delivery_row(client_id, seq, msg_id)
        if session is None:
            continue
        msg = messages.get(msg_id)
        if msg is None:
            if m_payload is None:
                continue
            msg = Message(m_topic, m_payload, m_qos, bool(m_retain), unpack_properties(m_props),
                          0.0 if m_expires_at is None else mono(m_expires_at), m_sender)
            journal.restored_message(msg, msg_id, False)  # no row of its own
            carried += 1
        d = Delivery(msg, qos, bool(retain), tuple(msgpack.unpackb(sub_ids)) if sub_ids else (),
                     group)
        journal.restored_delivery(d, seq)
        deliveries += 1
        if packet_id:
            d.packet_id = packet_id
            d.state = st
        session.restore_delivery(d)

    for client_id, packet_id in state.incoming_qos2:
        session = sessions.get(client_id)
        if session is not None:
            session.restore_qos2(packet_id)

    # A message row no delivery references is deleted with the next commit. (The journal
    # deletes a message row in the commit that deletes its last delivery, so these are rows
    # of an older version of the broker, which routed such messages again at start.)
    unreferenced = [msg for msg in messages.values() if not msg.store_refs]
    for msg in unreferenced:
        journal.forget(msg)

    # Wills of sessions whose client was connected at a crash, with no delay: due now.
    for session in due:
        broker.publish_will(session, now)
    counts = {"sessions": len(state.sessions), "subscriptions": len(state.subscriptions),
              "retained": len(broker.retained), "deliveries": deliveries,
              "messages": len(messages) - len(unreferenced) + carried,
              "messages_deleted": len(unreferenced)}
    return counts
