"""Sessions: the state MQTT keeps for a client id across network connections (section 4.1).

A session owns the outgoing flow of its client: the inflight window of QoS 1/2 messages awaiting
acknowledgement, the bounded queue of messages waiting for the window or for the client to come
back, and the packet ids of incoming QoS 2 messages awaiting PUBREL.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, Any

from hbroker_ext.codec import (
    MESSAGE_EXPIRY_INTERVAL,
    PUBREL,
    SUBSCRIPTION_IDENTIFIER,
    TOPIC_ALIAS,
    encode_ack,
    encode_publish,
    set_packet_id,
)

if TYPE_CHECKING:
    from hbroker.connection import Connection
    from hbroker.storage.journal import Journal

NEVER = math.inf

# Most sessions never queue a message or receive a QoS 2 PUBLISH: they share these empty,
# immutable stand-ins until they do (a deque costs 624 bytes, a set 216; with 10,000 idle
# connections that was a third of the broker's memory per connection).
NO_QUEUE: Any = ()
NO_PACKET_IDS: Any = frozenset()

# Outgoing QoS 1/2 states.
AWAITING_PUBACK_OR_PUBREC = 1  # PUBLISH sent
AWAITING_PUBCOMP = 2  # PUBREL sent

# Encodings of one message kept for reuse across its fan-out; a message is rarely delivered
# in more than a handful of distinct forms.
_ENCODING_CACHE_LIMIT = 16


class Message:
    """An application message as the broker received it, shared by every delivery of it.

    `properties` holds the 5.0 properties that travel with the message to subscribers (the
    topic alias, subscription identifiers and message expiry are per delivery, not here).
    `expires_at` is a monotonic deadline, or 0 when the message does not expire.
    """

    __slots__ = ("topic", "payload", "qos", "retain", "properties", "expires_at", "sender",
                 "encodings", "store_id", "store_refs", "store_written")

    def __init__(self, topic: str, payload: bytes, qos: int, retain: bool,
                 properties: dict[int, Any] | None, expires_at: float, sender: str | None) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.properties = properties
        self.expires_at = expires_at
        self.sender = sender
        self.encodings: dict[tuple, bytes] | None = None
        # Durable storage: the row id, the stored deliveries (and a deferred routing) that
        # need the row, and whether the row was written (see hbroker.storage.journal).
        self.store_id = 0
        self.store_refs = 0
        self.store_written = False

    def expired(self, now: float) -> bool:
        return self.expires_at != 0 and now >= self.expires_at

    def remaining_expiry(self, now: float) -> int:
        """Message Expiry Interval to send: the time left, in whole seconds [MQTT-3.3.2-6]."""
        return max(0, math.ceil(self.expires_at - now))


class Delivery:
    """One message on its way to one session: queued, or inflight with a packet id."""

    __slots__ = ("message", "qos", "retain", "sub_ids", "packet_id", "state", "group", "seq",
                 "written")

    def __init__(self, message: Message, qos: int, retain: bool, sub_ids: tuple[int, ...],
                 group: str | None) -> None:
        self.message = message
        self.qos = qos
        self.retain = retain
        self.sub_ids = sub_ids
        self.packet_id = 0
        self.state = 0
        self.group = group
        self.seq = 0  # non-zero while tracked by the journal for a durable session
        self.written = False  # whether its row has been written


def publish_bytes(conn: Connection, msg: Message, qos: int, retain: bool,
                  sub_ids: tuple[int, ...], packet_id: int, dup: bool, now: float) -> bytes | None:
    """The PUBLISH packet for one delivery on one connection, or None if it is too large.

    Encodings are cached on the message by everything that shapes them except the packet id, so
    a fan-out encodes once per distinct form and QoS 1/2 copies only patch the packet id.
    """
    version = conn.protocol_version
    expiry = msg.remaining_expiry(now) if msg.expires_at else -1
    if conn.topic_aliases_out is not None:
        data = _encode_with_topic_alias(conn, msg, qos, retain, sub_ids, expiry)
    else:
        key = (version, qos, retain, sub_ids, expiry)
        cache = msg.encodings
        if cache is None:
            cache = msg.encodings = {}
        data = cache.get(key)
        if data is None:
            props = _delivery_properties(msg, sub_ids, expiry) if version == 5 else None
            data = encode_publish(msg.topic, msg.payload, qos, retain, False, 1 if qos else 0,
                                  props, version)
            if len(cache) < _ENCODING_CACHE_LIMIT:
                cache[key] = data
    if qos:
        data = set_packet_id(data, packet_id, dup)
    if len(data) > conn.max_packet_size_out:
        # [MQTT-3.1.2-25] a message too large for the client is discarded for that client.
        conn.broker.stats.dropped_too_large += 1
        return None
    return data


def _delivery_properties(msg: Message, sub_ids: tuple[int, ...],
                         expiry: int) -> dict[int, Any] | None:
    if not sub_ids and expiry < 0:
        return msg.properties
    props = dict(msg.properties) if msg.properties else {}
    if sub_ids:
        props[SUBSCRIPTION_IDENTIFIER] = list(sub_ids)
    if expiry >= 0:
        props[MESSAGE_EXPIRY_INTERVAL] = expiry
    return props


def _encode_with_topic_alias(conn: Connection, msg: Message, qos: int, retain: bool,
                             sub_ids: tuple[int, ...], expiry: int) -> bytes:
    """Encode for a client that accepts topic aliases: the first topics get an alias each, and
    later messages on an aliased topic are sent with an empty topic name [MQTT-3.3.2-12]."""
    props = _delivery_properties(msg, sub_ids, expiry)
    aliases = conn.topic_aliases_out
    topic = msg.topic
    alias = aliases.get(topic)
    if alias is None:
        if len(aliases) < conn.topic_alias_maximum_out:
            alias = aliases[topic] = len(aliases) + 1
            props = dict(props) if props else {}
            props[TOPIC_ALIAS] = alias
    else:
        props = dict(props) if props else {}
        props[TOPIC_ALIAS] = alias
        topic = ""
    return encode_publish(topic, msg.payload, qos, retain, False, 1 if qos else 0, props, 5)


class Session:
    __slots__ = (
        "client_id", "protocol_version", "connection", "subscriptions", "expiry_interval",
        "inflight", "queue", "queued_bytes", "next_packet_id", "awaiting_pubrel", "will",
        "will_delay", "will_due", "expires_at", "send_window", "max_queued_messages",
        "max_queued_bytes", "queue_qos0", "dropped", "stats", "journal", "ended",
    )

    def __init__(self, client_id: str, protocol_version: int, *, max_queued_messages: int,
                 max_queued_bytes: int, queue_qos0: bool, stats: Any,
                 journal: Journal | None = None) -> None:
        self.client_id = client_id
        self.protocol_version = protocol_version
        self.connection: Connection | None = None
        # topic filter (as subscribed, `$share/...` included) -> SubscriptionOptions
        self.subscriptions: dict[str, Any] = {}
        self.expiry_interval: float = 0  # seconds after disconnect; NEVER for no expiry
        self.inflight: dict[int, Delivery] = {}
        self.queue: deque[Delivery] = NO_QUEUE  # a deque once something is queued
        self.queued_bytes = 0
        self.next_packet_id = 1
        # incoming QoS 2 packet ids [MQTT-4.3.3-9]; a set once there is one (await_pubrel)
        self.awaiting_pubrel: set[int] = NO_PACKET_IDS
        self.will: Message | None = None
        self.will_delay: float = 0
        self.will_due: float = 0  # monotonic time at which a delayed will is published
        self.expires_at: float = NEVER  # monotonic time at which a disconnected session ends
        self.send_window = 65535  # the client's Receive Maximum, or max_inflight for 3.1.1
        self.max_queued_messages = max_queued_messages
        self.max_queued_bytes = max_queued_bytes
        self.queue_qos0 = queue_qos0
        self.dropped = 0
        self.stats = stats
        self.journal: Journal | None = journal
        self.ended = False

    def __repr__(self) -> str:
        return f"<Session {self.client_id!r} v{self.protocol_version}>"

    # -- durable storage -------------------------------------------------------------------

    def _stored(self, delivery: Delivery) -> None:
        """A delivery was queued or changed state: recorded if this session outlives its
        connection (a session without expiry is gone after a crash anyway)."""
        journal = self.journal
        if journal is not None and self.expiry_interval:
            journal.delivery_changed(self, delivery)

    def _unstored(self, delivery: Delivery) -> None:
        if delivery.seq:
            assert self.journal is not None
            self.journal.delivery_removed(self, delivery)

    # -- outgoing flow ---------------------------------------------------------------------

    def deliver(self, delivery: Delivery, now: float) -> None:
        """Send now if the client is connected and the window allows, otherwise queue."""
        conn = self.connection
        if conn is None or conn.closing:
            if delivery.qos or self.queue_qos0:
                self._enqueue(delivery)
            return
        if delivery.qos == 0:
            if conn.write_paused and conn.transport_buffer_size() > self.max_queued_bytes:
                # A slow reader: QoS 0 is dropped within the bound, never buffered without one.
                self.stats.dropped_qos0_slow += 1
                return
            self._write_qos0(conn, delivery, now)
            return
        if self.queue or len(self.inflight) >= self.send_window:
            self._enqueue(delivery)
            return
        self._send_new(delivery, conn, now)

    def deliver_qos0(self, msg: Message, retain: bool, sub_ids: tuple[int, ...],
                     now: float) -> None:
        """QoS 0 to a connected, unblocked client: no Delivery object on the way."""
        conn = self.connection
        if conn is None or conn.closing or conn.write_paused:
            self.deliver(Delivery(msg, 0, retain, sub_ids, None), now)
            return
        data = publish_bytes(conn, msg, 0, retain, sub_ids, 0, False, now)
        if data is not None:
            conn.write_publish(data)

    @staticmethod
    def _write_qos0(conn: Connection, delivery: Delivery, now: float) -> None:
        data = publish_bytes(conn, delivery.message, 0, delivery.retain, delivery.sub_ids, 0,
                             False, now)
        if data is not None:
            conn.write_publish(data)

    def queue_for_append(self) -> deque[Delivery]:
        queue = self.queue
        if queue is NO_QUEUE:
            queue = self.queue = deque()
        return queue

    def await_pubrel(self, packet_id: int) -> None:
        """An incoming QoS 2 PUBLISH was PUBRECed: its packet id waits for the PUBREL."""
        if self.awaiting_pubrel is NO_PACKET_IDS:
            self.awaiting_pubrel = set()
        self.awaiting_pubrel.add(packet_id)

    def _enqueue(self, delivery: Delivery) -> None:
        size = len(delivery.message.payload)
        if (len(self.queue) >= self.max_queued_messages
                or self.queued_bytes + size > self.max_queued_bytes):
            self.dropped += 1
            self.stats.dropped_queue_full += 1
            return
        self.queue_for_append().append(delivery)
        self.queued_bytes += size
        self._stored(delivery)

    def _send_new(self, delivery: Delivery, conn: Connection, now: float) -> None:
        pid = self._allocate_packet_id()
        data = publish_bytes(conn, delivery.message, delivery.qos, delivery.retain,
                             delivery.sub_ids, pid, False, now)
        if data is None:
            self._unstored(delivery)
            return
        delivery.packet_id = pid
        delivery.state = AWAITING_PUBACK_OR_PUBREC
        self.inflight[pid] = delivery
        self._stored(delivery)
        conn.write_publish(data)

    def _allocate_packet_id(self) -> int:
        pid = self.next_packet_id
        inflight = self.inflight
        while pid in inflight:
            pid = pid % 65535 + 1
        self.next_packet_id = pid % 65535 + 1
        return pid

    def drain(self, now: float) -> None:
        """Move queued messages to the client while its window has room."""
        conn = self.connection
        if conn is None or conn.closing:
            return
        queue = self.queue
        while queue and len(self.inflight) < self.send_window:
            delivery = queue.popleft()
            self.queued_bytes -= len(delivery.message.payload)
            if delivery.message.expired(now):
                # [MQTT-3.3.2-5] an expired message is not delivered.
                self.stats.dropped_expired += 1
                self._unstored(delivery)
                continue
            if delivery.qos == 0:
                self._unstored(delivery)
                self._write_qos0(conn, delivery, now)
            else:
                self._send_new(delivery, conn, now)

    def resend_inflight(self, now: float) -> None:
        """On session resume, re-send unacknowledged PUBLISH with DUP and PUBREL [MQTT-4.4.0-1]."""
        conn = self.connection
        assert conn is not None
        for pid, delivery in list(self.inflight.items()):
            if delivery.state == AWAITING_PUBCOMP:
                conn.write(encode_ack(PUBREL, pid, 0, conn.protocol_version))
                continue
            data = publish_bytes(conn, delivery.message, delivery.qos, delivery.retain,
                                 delivery.sub_ids, pid, True, now)
            if data is None:
                del self.inflight[pid]
                self._unstored(delivery)
            else:
                conn.write_publish(data)

    def on_puback(self, packet_id: int, now: float) -> bool:
        delivery = self.inflight.get(packet_id)
        if delivery is None or delivery.qos != 1:
            return False
        del self.inflight[packet_id]
        self._unstored(delivery)
        if self.queue:
            self.drain(now)
        return True

    def on_pubrec(self, packet_id: int, reason_code: int) -> bool:
        """Returns False when the packet id is unknown; the caller answers PUBREL 0x92."""
        delivery = self.inflight.get(packet_id)
        if delivery is None or delivery.qos != 2:
            return False
        if reason_code >= 0x80:
            # [MQTT-4.3.3-?] a PUBREC with an error ends the exchange; the id is free again.
            del self.inflight[packet_id]
            self._unstored(delivery)
            return True
        delivery.state = AWAITING_PUBCOMP
        self._stored(delivery)
        return True

    def on_pubcomp(self, packet_id: int, now: float) -> bool:
        delivery = self.inflight.get(packet_id)
        if delivery is None or delivery.state != AWAITING_PUBCOMP:
            return False
        del self.inflight[packet_id]
        self._unstored(delivery)
        if self.queue:
            self.drain(now)
        return True

    def take_shared_deliveries(self) -> list[Delivery]:
        """Remove and return the shared-subscription messages not yet acknowledged, so the
        broker can offer them to another member of the group."""
        taken = [d for d in self.inflight.values()
                 if d.group is not None and d.state == AWAITING_PUBACK_OR_PUBREC]
        for d in taken:
            del self.inflight[d.packet_id]
        queued = [d for d in self.queue if d.group is not None]
        if queued:
            self.queue = deque(d for d in self.queue if d.group is None)
            self.queued_bytes = sum(len(d.message.payload) for d in self.queue)
            taken.extend(queued)
        for d in taken:
            self._unstored(d)
            d.packet_id = 0
            d.state = 0
        return taken
