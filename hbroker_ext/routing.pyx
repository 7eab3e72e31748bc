# cython: language_level=3
"""The per-message half of the broker, compiled: application messages, their deliveries,
sessions' outgoing flow (section 4.1: the inflight window, the bounded queue, incoming QoS 2
packet ids) and the PUBLISH fan-out.

`hbroker.session` re-exports `Message`, `Delivery` and `Session`. `publish_bytes` encodes a
message for one connection, once per distinct form; `route` delivers a message to the
non-shared subscriptions of a topic, writing QoS 0 copies straight into the connections'
output. Connections, the broker's statistics and the storage journal stay Python objects:
this module reads their attributes and calls their methods; it does no I/O of its own.
"""

import math
from collections import deque

from libc.math cimport ceil
from cpython.dict cimport PyDict_GetItem
from cpython.object cimport PyObject

from hbroker_ext.codec cimport (
    Framer,
    Puback,
    Publish,
    encode_ack,
    encode_publish,
    set_packet_id,
)
from hbroker_ext.codec import (
    MESSAGE_EXPIRY_INTERVAL,
    PUBREL,
    SUBSCRIPTION_IDENTIFIER,
    TOPIC_ALIAS,
    MQTTError,
)
from time import monotonic

NEVER = math.inf

# Most sessions never queue a message or receive a QoS 2 PUBLISH: they share these empty,
# immutable stand-ins until they do (a deque costs 624 bytes, a set 216; with 10,000 idle
# connections that was a third of the broker's memory per connection).
NO_QUEUE = ()
NO_PACKET_IDS = frozenset()

# Outgoing QoS 1/2 states.
DEF S_AWAITING_PUBACK_OR_PUBREC = 1  # PUBLISH sent
DEF S_AWAITING_PUBCOMP = 2  # PUBREL sent
AWAITING_PUBACK_OR_PUBREC = S_AWAITING_PUBACK_OR_PUBREC
AWAITING_PUBCOMP = S_AWAITING_PUBCOMP

# What an acknowledgement from the client (PUBACK, PUBREC, PUBCOMP) was to the session's
# outgoing flows (`Session.on_puback`, `on_pubrec`, `on_pubcomp`).
DEF A_ACCEPTED = 0  # it advanced the flow of its packet id
DEF A_UNKNOWN = 1  # no message is in flight with that packet id
DEF A_WRONG_TYPE = 2  # the packet id is in flight, but this packet has no place in its flow
ACK_ACCEPTED = A_ACCEPTED
ACK_UNKNOWN = A_UNKNOWN
ACK_WRONG_TYPE = A_WRONG_TYPE

# Encodings of one message kept for reuse across its fan-out beyond the first one; a message
# is rarely delivered in more than a handful of distinct forms.
DEF ENCODING_CACHE_LIMIT = 16


cdef class Stats:
    """The broker's counters, for $SYS and metrics: incremented on the hot path (typed, so
    compiled code adds to them without a Python attribute lookup), read by Python."""

    cdef public long long packets_received
    cdef public long long packets_sent
    cdef public long long bytes_received
    cdef public long long bytes_sent
    cdef public long long publish_received
    cdef public long long publish_sent
    cdef public long long publish_routed
    cdef public long long publish_dropped
    cdef public long long clients_connected
    cdef public long long clients_maximum
    cdef public long long connections_total
    cdef public long long takeovers
    cdef public long long wills_published
    cdef public long long sessions_expired
    cdef public long long retained_changes
    cdef public long long dropped_qos0_slow
    cdef public long long dropped_queue_full
    cdef public long long dropped_expired
    cdef public long long dropped_too_large
    cdef public long long protocol_errors
    cdef public long long connections_rate_limited
    cdef public long long publish_rate_limited
    cdef public long long publish_throttled

    NAMES = ("packets_received", "packets_sent", "bytes_received", "bytes_sent",
             "publish_received", "publish_sent", "publish_routed", "publish_dropped",
             "clients_connected", "clients_maximum", "connections_total", "takeovers",
             "wills_published", "sessions_expired", "retained_changes", "dropped_qos0_slow",
             "dropped_queue_full", "dropped_expired", "dropped_too_large", "protocol_errors",
             "connections_rate_limited", "publish_rate_limited", "publish_throttled")

    def as_dict(self):
        return {name: getattr(self, name) for name in self.NAMES}


cdef class Message:
    """An application message as the broker received it, shared by every delivery of it.

    `properties` holds the 5.0 properties that travel with the message to subscribers (the
    topic alias, subscription identifiers and message expiry are per delivery, not here).
    `expires_at` is a monotonic deadline, or 0 when the message does not expire.
    Durable storage (hbroker.storage.journal) keeps its id, the number of stored deliveries
    that need it, and whether it has a row of its own (its only delivery may carry it).
    """

    cdef public str topic
    cdef public bytes payload
    cdef public int qos
    cdef public bint retain
    cdef public object properties
    cdef public double expires_at
    cdef public object sender
    cdef public long long store_id
    cdef public long store_refs
    cdef public bint store_written
    # The first encoding made, by (protocol version, QoS, retain, subscription ids, expiry):
    # every copy of a 1:N fan-out to one kind of client. Other forms go to `encodings`.
    cdef int _version
    cdef int _qos
    cdef bint _retain
    cdef object _sub_ids
    cdef long _expiry
    cdef bytes _encoded
    cdef public object encodings

    def __init__(self, str topic, payload, int qos, bint retain, properties,
                 double expires_at, sender):
        self.topic = topic
        self.payload = payload if type(payload) is bytes else bytes(payload)
        self.qos = qos
        self.retain = retain
        self.properties = properties
        self.expires_at = expires_at
        self.sender = sender
        self.encodings = None
        self.store_id = 0
        self.store_refs = 0
        self.store_written = False
        self._encoded = None

    def __repr__(self):
        return f"<Message {self.topic!r} qos={self.qos} retain={self.retain}>"

    cpdef bint expired(self, double now):
        return self.expires_at != 0 and now >= self.expires_at

    cpdef long remaining_expiry(self, double now):
        """Message Expiry Interval to send: the time left, in whole seconds [MQTT-3.3.2-6]."""
        cdef double left = ceil(self.expires_at - now)
        return <long>left if left > 0 else 0

    cdef bytes _cached(self, int version, int qos, bint retain, object sub_ids, long expiry):
        if self._encoded is not None and self._version == version and self._qos == qos \
                and self._retain == retain and self._expiry == expiry \
                and (self._sub_ids is sub_ids or self._sub_ids == sub_ids):
            return self._encoded
        if self.encodings is not None:
            return self.encodings.get((version, qos, retain, sub_ids, expiry))
        return None

    cdef void _cache(self, int version, int qos, bint retain, object sub_ids, long expiry,
                     bytes data):
        if self._encoded is None:
            self._version = version
            self._qos = qos
            self._retain = retain
            self._sub_ids = sub_ids
            self._expiry = expiry
            self._encoded = data
            return
        if self.encodings is None:
            self.encodings = {}
        if len(self.encodings) < ENCODING_CACHE_LIMIT:
            self.encodings[(version, qos, retain, sub_ids, expiry)] = data


cdef class Delivery:
    """One message on its way to one session: queued, or inflight with a packet id.
    `seq` is non-zero while the journal tracks it for a durable session; `written` tells
    whether its row has been written. `awaiting_resend`: inflight from an earlier network
    connection, not yet re-sent on this one (`Session.resend_inflight`)."""

    cdef public Message message
    cdef public int qos
    cdef public bint retain
    cdef public object sub_ids
    cdef public int packet_id
    cdef public int state
    cdef public object group
    cdef public long long seq
    cdef public bint written
    cdef public bint awaiting_resend

    def __init__(self, Message message, int qos, bint retain, sub_ids, group):
        self.message = message
        self.qos = qos
        self.retain = retain
        self.sub_ids = sub_ids
        self.packet_id = 0
        self.state = 0
        self.group = group
        self.seq = 0
        self.written = False

    def __repr__(self):
        return (f"<Delivery {self.message.topic!r} qos={self.qos} packet_id={self.packet_id} "
                f"state={self.state}>")


cdef inline Message _new_message(str topic, bytes payload, int qos, bint retain, object properties,
                                 double expires_at, object sender):
    """`Message(...)` without the argument parsing of a Python call (once per PUBLISH)."""
    cdef Message msg = Message.__new__(Message)
    msg.topic = topic
    msg.payload = payload
    msg.qos = qos
    msg.retain = retain
    msg.properties = properties
    msg.expires_at = expires_at
    msg.sender = sender
    return msg


cdef inline Delivery _new_delivery(Message message, int qos, bint retain, object sub_ids):
    """`Delivery(message, qos, retain, sub_ids, None)` without a Python call (once per QoS 1/2
    delivery)."""
    cdef Delivery delivery = Delivery.__new__(Delivery)
    delivery.message = message
    delivery.qos = qos
    delivery.retain = retain
    delivery.sub_ids = sub_ids
    return delivery


cpdef object delivery_properties(Message msg, object sub_ids, long expiry):
    """The properties of one delivery: the message's, plus its subscription identifiers and
    the message expiry left (`expiry` < 0: none)."""
    if not sub_ids and expiry < 0:
        return msg.properties
    props = dict(msg.properties) if msg.properties else {}
    if sub_ids:
        props[SUBSCRIPTION_IDENTIFIER] = list(sub_ids)
    if expiry >= 0:
        props[MESSAGE_EXPIRY_INTERVAL] = expiry
    return props


cdef inline bint _fits(ConnectionCore conn, bytes data) except -1:
    """Whether a PUBLISH is within the client's Maximum Packet Size; one that is not is
    discarded for that client [MQTT-3.1.2-25] and counted."""
    if len(data) > <Py_ssize_t>conn.max_packet_size_out:
        conn.broker.stats.dropped_too_large += 1
        return False
    return True


cdef object _encode_with_topic_alias(ConnectionCore conn, Message msg, int qos, bint retain,
                                     object sub_ids, long expiry, int packet_id, bint dup):
    """The PUBLISH for a client that accepts topic aliases, or None if it is too large for the
    client: the first topics get an alias each, and later messages on an aliased topic are
    sent with an empty topic name [MQTT-3.3.2-12]. A new alias is recorded only when its
    PUBLISH goes out: the client learns the mapping from that packet, so a packet dropped for
    its size must leave the topic unaliased."""
    props = delivery_properties(msg, sub_ids, expiry)
    aliases = conn.topic_aliases_out
    topic = msg.topic
    cdef int new_alias = 0
    alias = aliases.get(topic)
    if alias is None:
        if len(aliases) < conn.topic_alias_maximum_out:
            new_alias = len(aliases) + 1
            props = dict(props) if props else {}
            props[TOPIC_ALIAS] = new_alias
    else:
        props = dict(props) if props else {}
        props[TOPIC_ALIAS] = alias
        topic = ""
    data = encode_publish(topic, msg.payload, qos, retain, dup, packet_id if qos else 0, props,
                          5)
    if not _fits(conn, data):
        return None
    if new_alias:
        aliases[topic] = new_alias
    return data


cdef object _publish_bytes(ConnectionCore conn, int version, Message msg, int qos, bint retain,
                           object sub_ids, int packet_id, bint dup, double now):
    """The PUBLISH packet for one delivery on a connection speaking `version` (a session knows
    its client's), or None if it is too large for the client.

    Encodings are cached on the message by everything that shapes them except the packet id, so
    a fan-out encodes once per distinct form and QoS 1/2 copies only patch the packet id.
    """
    cdef long expiry = msg.remaining_expiry(now) if msg.expires_at != 0 else -1
    cdef bytes data
    if conn.topic_aliases_out is not None:
        return _encode_with_topic_alias(conn, msg, qos, retain, sub_ids, expiry, packet_id, dup)
    data = msg._cached(version, qos, retain, sub_ids, expiry)
    if data is None:
        props = delivery_properties(msg, sub_ids, expiry) if version == 5 else None
        data = encode_publish(msg.topic, msg.payload, qos, retain, False, 1 if qos else 0,
                              props, version)
        msg._cache(version, qos, retain, sub_ids, expiry, data)
    if qos:
        data = set_packet_id(data, packet_id, dup)
    if not _fits(conn, data):
        return None
    return data


cdef inline void _write_publish(ConnectionCore conn, bytes data, Stats stats) except *:
    conn._write(data)
    stats.publish_sent += 1


# -- quotas ([quotas], hbroker.quotas) ------------------------------------------------------

cdef class TokenBucket:
    """`rate` tokens per second, at most `burst` held; starts full. `allows`/`try_take` refuse
    what the bucket cannot cover (an amount above the burst is covered by a full bucket, which
    it leaves in debt); `take` always takes and reports how long the debt lasts."""

    cdef public double rate
    cdef public double burst
    cdef public double tokens
    cdef public double updated

    def __init__(self, double rate, double burst, double now):
        if not rate > 0 or not burst > 0:
            raise ValueError("a token bucket needs a positive rate and burst")
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = now

    cdef inline void _refill(self, double now):
        if now > self.updated:
            self.tokens += (now - self.updated) * self.rate
            if self.tokens > self.burst:
                self.tokens = self.burst
            self.updated = now

    cpdef bint allows(self, double amount, double now):
        """Whether `amount` could be taken now (nothing is taken)."""
        self._refill(now)
        return self.tokens >= (amount if amount < self.burst else self.burst)

    cpdef bint try_take(self, double amount, double now):
        if self.allows(amount, now):
            self.tokens -= amount
            return True
        return False

    cpdef double take(self, double amount, double now):
        """Take `amount` even into debt; the seconds until the bucket is out of debt."""
        self._refill(now)
        self.tokens -= amount
        return -self.tokens / self.rate if self.tokens < 0 else 0.0


DEF OVER_MESSAGE_RATE = 1
DEF OVER_BYTE_RATE = 2


cdef class PublishQuota:
    """One connection's publish rates: a bucket of PUBLISH packets and one of payload bytes
    (None when that rate is off). `throttle`: over-rate messages are accepted and the caller
    stops reading (backpressure); otherwise they are refused (`disconnect`: by closing).
    `refused`/`logged_at`: refusals since the last log line, and when that line was written."""

    cdef public TokenBucket messages
    cdef public TokenBucket payload_bytes
    cdef public bint throttle
    cdef public bint disconnect
    cdef public long long refused
    cdef public double logged_at

    def __init__(self, TokenBucket messages, TokenBucket payload_bytes, bint throttle,
                 bint disconnect):
        self.messages = messages
        self.payload_bytes = payload_bytes
        self.throttle = throttle
        self.disconnect = disconnect
        self.refused = 0
        self.logged_at = -math.inf

    cpdef int check(self, Py_ssize_t size, double now):
        """0 and both buckets charged when a PUBLISH of `size` payload bytes fits them;
        otherwise nothing is charged and the rate it exceeds: 1 messages, 2 bytes."""
        if self.messages is not None and not self.messages.allows(1.0, now):
            return OVER_MESSAGE_RATE
        if self.payload_bytes is not None and not self.payload_bytes.allows(<double>size, now):
            return OVER_BYTE_RATE
        if self.messages is not None:
            self.messages.tokens -= 1.0
        if self.payload_bytes is not None:
            self.payload_bytes.tokens -= <double>size
        return 0

    cpdef double charge(self, Py_ssize_t size, double now):
        """Charge a PUBLISH that is accepted anyway; the seconds before reading may resume."""
        cdef double delay = 0.0
        cdef double d
        if self.messages is not None:
            delay = self.messages.take(1.0, now)
        if self.payload_bytes is not None:
            d = self.payload_bytes.take(<double>size, now)
            if d > delay:
                delay = d
        return delay


cdef class TopicLimits:
    """`[quotas] max_topic_levels` and `max_topic_length`, typed for the PUBLISH path."""

    cdef public Py_ssize_t max_levels
    cdef public Py_ssize_t max_length

    def __init__(self, Py_ssize_t max_levels, Py_ssize_t max_length):
        self.max_levels = max_levels
        self.max_length = max_length

    cpdef bint allows(self, str topic):
        """Whether a topic name (or a filter without its `$share/GROUP/` prefix) is within
        both limits."""
        cdef Py_ssize_t n = len(topic)
        if n > self.max_length:
            return False
        # n characters hold at most n + 1 levels: count the separators only when that could
        # exceed the limit (one comparison for the usual short topic).
        return n < self.max_levels or topic.count("/") < self.max_levels


cdef class Session:
    """The state MQTT keeps for a client id across network connections (section 4.1)."""

    cdef public object client_id
    cdef public int protocol_version
    cdef public ConnectionCore connection
    # topic filter (as subscribed, `$share/...` included) -> SubscriptionOptions
    cdef public dict subscriptions
    cdef public object expiry_interval  # seconds after disconnect; NEVER for no expiry
    cdef public dict inflight  # packet id -> Delivery
    # Inflight PUBLISHes of an earlier network connection not yet re-sent on this one, in
    # their original order (NO_QUEUE when none): those with `awaiting_resend` set, counted
    # by `resends_pending` (an entry whose flag was cleared is skipped when popped).
    cdef public object resends
    cdef public long resends_pending
    cdef public object queue  # NO_QUEUE, a deque once something is queued
    cdef public long long queued_bytes
    cdef public int next_packet_id
    # incoming QoS 2 packet ids [MQTT-4.3.3-9]; a set once there is one (await_pubrel)
    cdef public object awaiting_pubrel
    cdef public object will
    cdef public object will_delay
    cdef public object will_due  # monotonic time at which a delayed will is published
    cdef public object expires_at  # monotonic time at which a disconnected session ends
    cdef public long send_window  # the client's Receive Maximum, or max_inflight for 3.1.1
    cdef public long long max_queued_messages
    cdef public long long max_queued_bytes
    cdef public bint queue_qos0
    cdef public long long dropped
    cdef public Stats stats
    cdef public object journal
    cdef public bint ended
    # The connection's publish rate buckets ([quotas]); None when no rate is configured, so
    # the check costs one comparison per PUBLISH.
    cdef public PublishQuota publish_quota

    def __init__(self, client_id, int protocol_version, *, max_queued_messages,
                 max_queued_bytes, bint queue_qos0, Stats stats, journal=None):
        self.client_id = client_id
        self.protocol_version = protocol_version
        self.connection = None
        self.subscriptions = {}
        self.expiry_interval = 0
        self.inflight = {}
        self.resends = NO_QUEUE
        self.resends_pending = 0
        self.queue = NO_QUEUE
        self.queued_bytes = 0
        self.next_packet_id = 1
        self.awaiting_pubrel = NO_PACKET_IDS
        self.will = None
        self.will_delay = 0
        self.will_due = 0
        self.expires_at = NEVER
        self.send_window = 65535
        self.max_queued_messages = max_queued_messages
        self.max_queued_bytes = max_queued_bytes
        self.queue_qos0 = queue_qos0
        self.dropped = 0
        self.stats = stats
        self.journal = journal
        self.ended = False
        self.publish_quota = None

    def __repr__(self):
        return f"<Session {self.client_id!r} v{self.protocol_version}>"

    # -- durable storage -------------------------------------------------------------------

    cdef void _stored(self, Delivery delivery) except *:
        """A delivery was queued or changed state: recorded if this session outlives its
        connection (a session without expiry is gone after a crash anyway)."""
        if self.journal is not None and self.expiry_interval:
            self.journal.delivery_changed(self, delivery)

    cdef void _unstored(self, Delivery delivery) except *:
        if delivery.seq:
            self.journal.delivery_removed(self, delivery)

    # -- outgoing flow ---------------------------------------------------------------------

    cpdef deliver(self, Delivery delivery, double now):
        """Send now if the client is connected and the window allows, otherwise queue."""
        cdef ConnectionCore conn = self.connection
        if conn is None or conn.closing:
            if delivery.qos or self.queue_qos0:
                self._enqueue(delivery)
            return
        if delivery.qos == 0:
            if conn.write_paused and conn.transport_buffer_size() > self.max_queued_bytes:
                # A slow reader: QoS 0 is dropped within the bound, never buffered without one.
                self.stats.dropped_qos0_slow += 1
                return
            _write_qos0(conn, self.protocol_version, delivery, now, self.stats)
            return
        if self.queue or len(self.inflight) >= self.send_window:
            self._enqueue(delivery)
            return
        self._send_new(delivery, conn, now)

    cpdef deliver_qos0(self, Message msg, bint retain, object sub_ids, double now):
        """QoS 0 to a connected, unblocked client: no Delivery object on the way."""
        cdef ConnectionCore conn = self.connection
        if conn is None or conn.closing or conn.write_paused:
            self.deliver(Delivery(msg, 0, retain, sub_ids, None), now)
            return
        data = _publish_bytes(conn, self.protocol_version, msg, 0, retain, sub_ids, 0, False,
                              now)
        if data is not None:
            _write_publish(conn, data, self.stats)

    def queue_for_append(self):
        if self.queue is NO_QUEUE:
            self.queue = deque()
        return self.queue

    def await_pubrel(self, int packet_id):
        """An incoming QoS 2 PUBLISH was PUBRECed: its packet id waits for the PUBREL."""
        if self.awaiting_pubrel is NO_PACKET_IDS:
            self.awaiting_pubrel = set()
        self.awaiting_pubrel.add(packet_id)

    cdef void _enqueue(self, Delivery delivery) except *:
        cdef Py_ssize_t size = len(delivery.message.payload)
        if (len(self.queue) >= self.max_queued_messages
                or self.queued_bytes + size > self.max_queued_bytes):
            self.dropped += 1
            self.stats.dropped_queue_full += 1
            return
        self.queue_for_append().append(delivery)
        self.queued_bytes += size
        self._stored(delivery)

    cdef void _send_new(self, Delivery delivery, ConnectionCore conn, double now) except *:
        cdef int pid = self._allocate_packet_id()
        data = _publish_bytes(conn, self.protocol_version, delivery.message, delivery.qos,
                              delivery.retain, delivery.sub_ids, pid, False, now)
        if data is None:
            self._unstored(delivery)
            return
        delivery.packet_id = pid
        delivery.state = S_AWAITING_PUBACK_OR_PUBREC
        self.inflight[pid] = delivery
        self._stored(delivery)
        _write_publish(conn, data, self.stats)

    cdef int _allocate_packet_id(self) except -1:
        cdef int pid = self.next_packet_id
        cdef dict inflight = self.inflight
        while pid in inflight:
            pid = pid % 65535 + 1
        self.next_packet_id = pid % 65535 + 1
        return pid

    cpdef drain(self, double now):
        """Fill the client's window: first the PUBLISHes that resuming the session left to
        re-send, then queued messages."""
        cdef Delivery delivery
        cdef ConnectionCore conn = self.connection
        if conn is None or conn.closing:
            return
        if self.resends_pending:
            self._resend(conn, now)
            if self.resends_pending:
                return  # the window is full of re-sends; new messages wait behind them
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
                _write_qos0(conn, self.protocol_version, delivery, now, self.stats)
            else:
                self._send_new(delivery, conn, now)

    def resend_inflight(self, double now):
        """On session resume, re-send what the client has not acknowledged, with the original
        packet ids [MQTT-4.4.0-1]: every PUBREL, and the unacknowledged PUBLISHes with DUP in
        the order they were first sent [MQTT-4.6.0-1], as many as the new connection's
        window (Receive Maximum, section 3.3.4) allows. The rest go out as acknowledgements
        open the window (`drain`), before anything queued."""
        cdef Delivery delivery
        cdef ConnectionCore conn = self.connection
        for delivery in self.resends:  # left over from an earlier connection: rebuilt below
            delivery.awaiting_resend = False
        resends = deque()
        for pid, delivery in self.inflight.items():
            if delivery.state == S_AWAITING_PUBCOMP:
                # A PUBREL is no PUBLISH: not bounded by the window [MQTT-4.9.0-3].
                conn._write(encode_ack(PUBREL, pid, 0, conn.protocol_version))
            else:
                delivery.awaiting_resend = True
                resends.append(delivery)
        self.resends = resends if resends else NO_QUEUE
        self.resends_pending = len(resends)
        if resends:
            self._resend(conn, now)

    cdef void _resend(self, ConnectionCore conn, double now) except *:
        """Re-send waiting PUBLISHes (DUP, original packet id) while the window has room.

        The window counts every packet id in flight except the PUBLISHes still waiting, so
        QoS 2 messages awaiting PUBCOMP since the earlier connection count too, although the
        send quota of section 4.9 starts afresh on a new connection: fewer re-sends go out at
        once than allowed, never more, and each PUBCOMP opens the window by one."""
        cdef Delivery delivery
        resends = self.resends
        while self.resends_pending and \
                len(self.inflight) - self.resends_pending < self.send_window:
            delivery = resends.popleft()
            if not delivery.awaiting_resend:
                continue  # acknowledged or taken away while it waited
            delivery.awaiting_resend = False
            self.resends_pending -= 1
            data = _publish_bytes(conn, self.protocol_version, delivery.message, delivery.qos,
                                  delivery.retain, delivery.sub_ids, delivery.packet_id, True,
                                  now)
            if data is None:
                self._release(delivery.packet_id, delivery)
            else:
                _write_publish(conn, data, self.stats)
        if not self.resends_pending:
            self.resends = NO_QUEUE

    cdef Delivery _inflight(self, int packet_id):
        """The outgoing QoS 1/2 delivery with this packet id, or None."""
        return self.inflight.get(packet_id)

    cdef void _release(self, int packet_id, Delivery delivery) except *:
        """The packet id is free again and the delivery no longer stored."""
        del self.inflight[packet_id]
        if delivery.awaiting_resend:
            # Acknowledged before it was re-sent: one re-send fewer to wait for.
            delivery.awaiting_resend = False
            self.resends_pending -= 1
        self._unstored(delivery)

    # Acknowledgements. Each one answers a packet the broker sent on the same network
    # connection: a receiver re-sends nothing on a new connection (only PUBLISH and PUBREL
    # are re-sent [MQTT-4.4.0-1]), packets arrive in order, and a packet id is freed only by
    # the flow's last acknowledgement. So a packet id in `inflight` names exactly the flow the
    # client is answering, and an acknowledgement that has no place in it (PUBREC for QoS 1,
    # PUBACK for QoS 2, PUBCOMP before PUBREL was sent) is the client's protocol error
    # (A_WRONG_TYPE; 5.0: DISCONNECT 0x82, section 4.13; 3.1.1: close [MQTT-4.8.0-1]). An
    # acknowledgement for a packet id not in flight (A_UNKNOWN) has no flow to be wrong for,
    # and the spec expects such acknowledgements from a peer whose state differs from ours
    # (reason code 0x92 Packet Identifier not found; a session lost in a restart without
    # durable storage, a re-send dropped as too large for the new connection, a client that
    # re-sends an acknowledgement): it is tolerated. PUBACK and PUBCOMP are ignored; PUBREC
    # is answered by the caller. A repeated PUBREC for a QoS 2 message already released is in
    # its flow: answered with PUBREL again.

    cpdef int on_puback(self, int packet_id, double now) except -1:
        cdef Delivery delivery = self._inflight(packet_id)
        if delivery is None:
            return A_UNKNOWN
        if delivery.qos != 1:
            return A_WRONG_TYPE
        self._completed(packet_id, delivery, now)
        return A_ACCEPTED

    cpdef int on_pubrec(self, int packet_id, int reason_code) except -1:
        """A_UNKNOWN: the caller answers PUBREL 0x92 unless `reason_code` >= 0x80. A PUBREC
        with an error frees the packet id; the caller drains what was waiting for it."""
        cdef Delivery delivery = self._inflight(packet_id)
        if delivery is None:
            return A_UNKNOWN
        if delivery.qos != 2:
            return A_WRONG_TYPE
        if reason_code >= 0x80:
            # A PUBREC with an error ends the exchange (section 4.3.3); the id is free again.
            self._release(packet_id, delivery)
            return A_ACCEPTED
        delivery.state = S_AWAITING_PUBCOMP
        self._stored(delivery)
        return A_ACCEPTED

    cpdef int on_pubcomp(self, int packet_id, double now) except -1:
        cdef Delivery delivery = self._inflight(packet_id)
        if delivery is None:
            return A_UNKNOWN
        if delivery.state != S_AWAITING_PUBCOMP:
            return A_WRONG_TYPE  # QoS 1, or QoS 2 whose PUBREC has not come
        self._completed(packet_id, delivery, now)
        return A_ACCEPTED

    cdef void _completed(self, int packet_id, Delivery delivery, double now) except *:
        """The last acknowledgement of an outgoing QoS 1/2 message: its packet id is free and
        the window has room for what is queued."""
        self._release(packet_id, delivery)
        if self.queue or self.resends_pending:
            self.drain(now)

    def take_shared_deliveries(self):
        """Remove and return the shared-subscription messages the broker may offer to another
        member of the group (MQTT 5.0 section 4.8.2): QoS 1 messages not yet acknowledged and
        messages still queued. A QoS 2 message in flight stays: it is completed with this
        member when it reconnects [MQTT-4.8.2-4] and never sent to another member, not even
        when this session ends [MQTT-4.8.2-5]."""
        cdef Delivery d
        taken = [d for d in self.inflight.values() if d.group is not None and d.qos == 1]
        for d in taken:
            del self.inflight[d.packet_id]
            if d.awaiting_resend:
                d.awaiting_resend = False
                self.resends_pending -= 1
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


cdef class BrokerCore:
    """The broker's state on the per-message path, typed so compiled code reads it without a
    Python attribute lookup. `hbroker.broker.Broker` extends it with everything else; Python
    code sees these as ordinary attributes. `limits` copies the values the PUBLISH path checks
    into typed fields whenever it is set (at start and on SIGHUP)."""

    cdef public Stats stats
    cdef public dict sessions  # client id -> Session
    cdef public object subscriptions  # hbroker_ext.topics.SubscriptionTree
    # topic -> (normal targets, shared groups), valid while _match_generation is the tree's
    cdef public dict _match_cache
    cdef public long long _match_generation
    cdef public object hooks
    cdef public object journal  # hbroker.storage.journal.Journal, None with the memory backend
    cdef public TopicLimits topic_limits
    cdef public list _dirty  # connections with output this loop iteration
    cdef public bint flush_scheduled
    cdef public object loop
    cdef object _limits
    cdef readonly int max_qos
    cdef readonly bint retain_available
    cdef readonly int topic_alias_maximum
    cdef readonly int max_inflight

    @property
    def limits(self):
        return self._limits

    @limits.setter
    def limits(self, limits):
        self.max_qos = limits.max_qos
        self.retain_available = limits.retain_available
        self.topic_alias_maximum = limits.topic_alias_maximum
        self.max_inflight = limits.max_inflight
        self._limits = limits

    cdef void _mark_dirty(self, object conn) except *:
        """`conn` has output for this loop iteration: flushed with the others once."""
        self._dirty.append(conn)
        if not self.flush_scheduled:
            self.schedule_flush()

    def schedule_flush(self):
        """Flush at the end of this loop iteration (once, however many connections wrote)."""
        self.flush_scheduled = True
        if self.loop is None:
            raise RuntimeError("the broker has no event loop yet")
        self.loop.call_soon(self.flush)

    def flush(self):
        """Write everything queued this loop iteration: one writelines per connection. With
        durable storage in sync mode, the output waits for the commit of what this iteration
        changed (the journal holds it) and that commit starts now."""
        cdef ConnectionCore conn
        self.flush_scheduled = False
        dirty = self._dirty
        self._dirty = []
        journal = self.journal
        if journal is not None:
            if journal.holds_output():
                for conn in dirty:
                    journal.hold(conn)
                dirty = []
            if journal.sync:
                journal.kick()  # periodic mode commits on its own timer
        for conn in dirty:
            conn._flush()

    def publish(self, Message msg, double now, skip=None):
        """Route one application message; returns the number of subscriptions it reached.
        `skip`: client ids not to deliver to."""
        return _publish(self, msg, now, skip)


cdef class ConnectionCore:
    """A connection's state on the per-message path, typed (see BrokerCore):
    `hbroker.connection.Connection` extends it with the protocol state machine."""

    cdef public BrokerCore broker
    cdef public Session session
    cdef public object client_id
    cdef public int protocol_version
    cdef public bint connected
    cdef public bint closing
    cdef public bint write_paused
    cdef public double last_received  # monotonic time of the last read
    cdef public list out  # packets queued for this loop iteration's flush
    cdef public dict topic_aliases_in
    cdef public object topic_aliases_out  # topic -> alias, None when the client takes none
    cdef public int topic_alias_maximum_out
    cdef public long max_packet_size_out
    cdef public long deferred  # PUBLISHes waiting for a storage commit before their ack
    cdef public object client_info
    cdef public object pending_connect
    cdef public object transport
    cdef public Framer framer
    # packet type -> handler(connection, packet) for what handle_packets does not handle
    cdef public dict handlers

    def data_received(self, data):
        """asyncio.Protocol: every complete packet of the read, in order (handle_packets); a
        malformed packet after them closes the connection with its reason code."""
        cdef Stats stats
        cdef list packets
        if self.closing:
            return
        self.last_received = monotonic()
        stats = self.broker.stats
        stats.bytes_received += len(data)
        error = None
        try:
            packets = self.framer.feed(data)
        except MQTTError as exc:
            packets = exc.packets or []
            error = exc
        stats.packets_received += len(packets)
        if _handle_packets(self, packets, self.handlers) and error is not None \
                and not self.closing:
            self.codec_error(error)

    def flush(self):
        """Write what is queued for this loop iteration."""
        self._flush()

    cdef void _flush(self) except *:
        cdef list out = self.out
        if out:
            self.out = []
            self._write_output(out)

    def take_output(self):
        """What is queued for this loop iteration, for the journal to hold behind a commit."""
        out = self.out
        self.out = []
        return out

    def write_output(self, list out):
        """Write packets now, in one writelines (counted in the statistics)."""
        self._write_output(out)

    cdef void _write_output(self, list out) except *:
        cdef Stats stats
        cdef Py_ssize_t size = 0
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        for data in out:
            size += len(<bytes>data)
        stats = self.broker.stats
        stats.packets_sent += len(out)
        stats.bytes_sent += size
        transport.writelines(out)

    def write(self, bytes data):
        """Queue a packet for this loop iteration (the broker flushes every connection that
        has output once per iteration, one writelines each)."""
        self._write(data)

    cdef inline void _write(self, bytes data) except *:
        if not self.out:
            self.broker._mark_dirty(self)
        self.out.append(data)


cdef void _write_qos0(ConnectionCore conn, int version, Delivery delivery, double now,
                     Stats stats) except *:
    data = _publish_bytes(conn, version, delivery.message, 0, delivery.retain, delivery.sub_ids,
                          0, False, now)
    if data is not None:
        _write_publish(conn, data, stats)


cdef int _publish(BrokerCore broker, Message msg, double now, object skip) except -1:
    """Route one application message; returns the number of subscriptions it reached.

    The topic's targets come from the broker's match cache while the subscription tree has
    not changed (the same test as `Broker._targets`, which fills the cache)."""
    cdef int reached
    cdef tuple entry = None
    if msg.retain:
        broker._retain(msg)
    topic = msg.topic
    if <long long>broker.subscriptions.generation == broker._match_generation:
        entry = broker._match_cache.get(topic)
    if entry is None:
        entry = broker._targets(topic)
    normal = entry[0]
    shared = entry[1]
    reached = _route(broker.sessions, normal, msg, now, skip)
    if shared:
        reached += broker._publish_shared(msg, shared, now, skip)
    broker.stats.publish_routed += 1
    return reached


cdef int _route(dict sessions, tuple normal, Message msg, double now, object skip) except -1:
    cdef int reached = 0
    cdef int qos
    cdef int msg_qos = msg.qos
    cdef bint retain
    cdef tuple entry
    cdef PyObject* found
    cdef Session session
    sender = msg.sender
    for entry in normal:
        client_id = entry[0]
        if skip is not None and client_id in skip:
            continue
        if client_id == sender:
            local = entry[4]
            if local is None:
                continue  # [MQTT-3.8.3-3] No Local
            qos = (<tuple>local)[0]
            rap = (<tuple>local)[1]
            sub_ids = (<tuple>local)[2]
        else:
            qos = entry[1]
            rap = entry[2]
            sub_ids = entry[3]
        found = PyDict_GetItem(sessions, client_id)
        if found is NULL:
            continue
        session = <Session>found
        reached += 1
        if qos > msg_qos:
            qos = msg_qos
        retain = msg.retain and rap
        if qos == 0:
            session.deliver_qos0(msg, retain, sub_ids, now)
        else:
            session.deliver(_new_delivery(msg, qos, retain, sub_ids), now)
    return reached


# -- incoming PUBLISH ------------------------------------------------------------------------

# Reason codes used below (hbroker.reason_codes.ReasonCode).
DEF RC_NO_MATCHING_SUBSCRIBERS = 0x10
DEF RC_PROTOCOL_ERROR = 0x82
DEF RC_NOT_AUTHORIZED = 0x87
DEF RC_TOPIC_ALIAS_INVALID = 0x94
DEF RC_RECEIVE_MAXIMUM_EXCEEDED = 0x93
DEF RC_PAYLOAD_FORMAT_INVALID = 0x99
DEF RC_RETAIN_NOT_SUPPORTED = 0x9A
DEF RC_TOPIC_NAME_INVALID = 0x90
DEF RC_QOS_NOT_SUPPORTED = 0x9B
# Property identifiers and packet types (hbroker_ext.codec).
DEF P_PAYLOAD_FORMAT_INDICATOR = 0x01
DEF P_MESSAGE_EXPIRY_INTERVAL = 0x02
DEF P_SUBSCRIPTION_IDENTIFIER = 0x0B
DEF P_TOPIC_ALIAS = 0x23
DEF T_CONNECT = 1
DEF T_PUBLISH = 3
DEF T_PUBACK = 4
DEF T_PUBREC = 5
DEF T_DISCONNECT = 14
DEF T_AUTH = 15

_ACTION_PUBLISH = "publish"  # hbroker.hooks.PUBLISH


cdef void _puback_for_qos2(ConnectionCore conn, int packet_id) except *:
    """A PUBACK for a QoS 2 message in flight: a protocol error (see Session.on_puback). Out
    of line, so the packet loop stays small."""
    conn.protocol_error(RC_PROTOCOL_ERROR, f"PUBACK for QoS 2 message {packet_id}")


cdef bint _handle_packets(ConnectionCore conn, list packets, dict handlers) except -1:
    """The packets of one read, in order (`ConnectionCore.data_received`): PUBLISH straight to
    `handle_publish` and PUBACK to the session, the others to their handler in `handlers`
    (packet type -> function of the connection and the packet). Returns False when the
    connection stopped reading (it is closing, or a packet was refused) before the end.

    Before the CONNACK the framer hands over one packet at a time and holds the rest (see
    `Framer`): once the connection has answered it (CONNECT accepted, enhanced authentication
    going on), the packets held behind it are appended to `packets` and handled next, in
    order; while an authenticate hook is still deciding, they stay held (the connection
    reads them once it has decided: `Connection._authenticated`)."""
    cdef int ptype
    cdef object held_error = None
    for packet in packets:  # `packets` may grow while it is walked (packets held, above)
        if conn.closing:
            return False
        if conn.connected:
            if type(packet) is Publish:
                _handle_publish(conn, <Publish>packet)
                continue
            if type(packet) is Puback:
                if conn.session.on_puback((<Puback>packet).packet_id, conn.last_received) \
                        == A_WRONG_TYPE:
                    _puback_for_qos2(conn, (<Puback>packet).packet_id)
                    return False
                continue
        ptype = packet.packet_type
        if not conn.connected:
            if conn.pending_connect is not None:
                if ptype != T_AUTH and ptype != T_DISCONNECT:
                    # [MQTT-3.1.2-30] during enhanced authentication, only AUTH or
                    # DISCONNECT before the CONNACK.
                    conn.protocol_error(RC_PROTOCOL_ERROR, f"packet type {ptype} during "
                                        "enhanced authentication, before the CONNACK")
                    return False
            elif ptype != T_CONNECT:
                # [MQTT-3.1.0-1] the first packet must be CONNECT.
                conn.abort("first packet was not CONNECT")
                return False
            handlers[ptype](conn, packet)
            if held_error is None and not conn.closing and not conn.framer.held:
                held_error = _read_held(conn, packets)
            continue
        handler = handlers.get(ptype)
        if handler is None:
            # A packet only a server sends (CONNACK, SUBACK, …) is a protocol error.
            conn.protocol_error(RC_PROTOCOL_ERROR, f"unexpected packet type {ptype} from client")
            return False
        handler(conn, packet)
    if held_error is not None and not conn.closing:
        conn.codec_error(held_error)  # a malformed packet among those held
        return False
    return True


cdef object _read_held(ConnectionCore conn, list packets):
    """The packets the framer held behind one handled before the CONNACK, appended to
    `packets`; returns the MQTTError that ended them, if any."""
    error = None
    try:
        held = conn.framer.feed(b"")
    except MQTTError as exc:
        held = exc.packets or []
        error = exc
    conn.broker.stats.packets_received += len(held)
    packets.extend(held)
    return error


cdef _handle_publish(ConnectionCore conn, Publish p):
    """A PUBLISH from a client (section 3.3): checked, acknowledged and routed
    (`Connection.handle_publish`); the rare outcomes (protocol errors, refusals, storage
    deferral) call back into the connection and the journal."""
    cdef int qos = p.qos
    cdef int version
    cdef double now
    cdef double expires_at = 0
    cdef int alias
    cdef int pid
    cdef Session session
    cdef Message msg
    cdef PublishQuota quota
    cdef TopicLimits topic_limits
    cdef int over
    cdef double delay
    cdef str topic
    cdef bint retain
    cdef BrokerCore broker = conn.broker
    session = conn.session
    session.stats.publish_received += 1
    if qos > broker.max_qos:
        # [MQTT-3.2.2-11]
        conn.protocol_error(RC_QOS_NOT_SUPPORTED, f"PUBLISH with QoS {qos}")
        return
    retain = p.retain
    if retain and not broker.retain_available:
        conn.protocol_error(RC_RETAIN_NOT_SUPPORTED, "retain not available")
        return
    topic = p.topic
    props = p.properties
    now = conn.last_received
    if props is not None:
        props = dict(props)
        alias = props.pop(P_TOPIC_ALIAS, 0)
        if alias:
            if alias > broker.topic_alias_maximum:
                # [MQTT-3.3.2-9]
                conn.protocol_error(RC_TOPIC_ALIAS_INVALID, f"topic alias {alias} above maximum")
                return
            if topic:
                conn.topic_aliases_in[alias] = topic
            else:
                topic = conn.topic_aliases_in.get(alias)
                if topic is None:
                    conn.protocol_error(RC_PROTOCOL_ERROR, f"unknown topic alias {alias}")
                    return
        if P_SUBSCRIPTION_IDENTIFIER in props:
            # [MQTT-3.3.4-6] a client must not send a subscription identifier.
            conn.protocol_error(RC_PROTOCOL_ERROR,
                                "PUBLISH from a client with a subscription identifier")
            return
        expiry = props.pop(P_MESSAGE_EXPIRY_INTERVAL, None)
        if expiry is not None:
            expires_at = now + expiry if expiry else now
        if props.get(P_PAYLOAD_FORMAT_INDICATOR) == 1:
            try:
                p.payload.decode("utf-8")
            except UnicodeDecodeError:
                conn._refuse_publish(p, RC_PAYLOAD_FORMAT_INVALID,
                                     "payload is not UTF-8 as its format indicator says")
                return
        if not props:
            props = None
    topic_limits = broker.topic_limits
    if not topic_limits.allows(topic):
        # Well formed but not accepted: 0x90 in the acknowledgement for 5.0 QoS 1/2, the
        # connection stays open (MQTT 5.0 section 3.4.2.1: "The Topic Name is not malformed,
        # but is not accepted by this Client or Server"). 3.1.1 cannot be told: acknowledged
        # and dropped, as the 3.1.1 spec allows for a refused PUBLISH [MQTT-3.3.5-2].
        conn._refuse_publish(p, RC_TOPIC_NAME_INVALID,
                             f"topic over max_topic_levels ({topic_limits.max_levels}) or "
                             f"max_topic_length ({topic_limits.max_length})")
        return
    if len(topic) >= 4 and topic[0] == u"$" and topic.startswith("$SYS"):
        conn._refuse_publish(p, RC_NOT_AUTHORIZED, "clients may not publish to $SYS")
        return
    hooks = broker.hooks
    if hooks.check_acl and not hooks.allowed(conn.client_info, topic, _ACTION_PUBLISH):
        conn._refuse_publish(p, RC_NOT_AUTHORIZED, "not authorised")
        return
    if qos == 2:
        pid = p.packet_id
        if pid in session.awaiting_pubrel:
            # [MQTT-4.3.3-10] a re-sent QoS 2 PUBLISH is not delivered again.
            conn._write(encode_ack(T_PUBREC, pid, 0, conn.protocol_version))
            return
        if conn.protocol_version == 5 and len(session.awaiting_pubrel) >= broker.max_inflight:
            # [MQTT-3.3.4-9] more unacknowledged QoS 2 than the Receive Maximum in our
            # CONNACK. 3.1.1 has no Receive Maximum: a 3.1.1 client is bound only by the
            # packet id space (at most 65,535 ids awaiting PUBREL per session).
            conn.protocol_error(RC_RECEIVE_MAXIMUM_EXCEEDED, "receive maximum exceeded")
            return
    quota = session.publish_quota
    if quota is not None:
        if quota.throttle:
            delay = quota.charge(len(p.payload), now)
            if delay > 0:
                conn.throttle(now + delay)
        else:
            over = quota.check(len(p.payload), now)
            if over:
                conn.publish_over_rate(p, over == OVER_BYTE_RATE)
                return
    msg = _new_message(topic, p.payload, qos, retain, props, expires_at, conn.client_id)
    journal = broker.journal
    # A message that must outlive a crash is acknowledged once it is stored (sync mode),
    # and refused while storage is failing. Periodic mode needs no look at the targets.
    if qos and journal is not None and (journal.sync or journal.degraded) and (
            conn.deferred or retain or broker.has_durable_target(topic)):
        if journal.degraded:
            conn.refuse_unstored(msg, p.packet_id, journal.full)
            return
        if qos == 2:
            session.await_pubrel(p.packet_id)
            if session.expiry_interval:
                journal.qos2_changed(session, p.packet_id)
        # Routed now, so that its deliveries, its retained update and its packet id go into
        # the same commit; what routing wrote to subscribers is held behind that commit, and
        # the PUBACK/PUBREC waits for it (Journal.defer).
        previous = broker.retained.get(topic) if retain else None
        journal.defer(conn, msg, p.packet_id, _publish(broker, msg, now, None), previous)
        return
    reached = _publish(broker, msg, now, None)
    if qos == 0:
        return
    version = conn.protocol_version
    code = 0 if reached or version != 5 else RC_NO_MATCHING_SUBSCRIBERS
    if qos == 1:
        conn._write(encode_ack(T_PUBACK, p.packet_id, code, version))
    else:
        session.await_pubrel(p.packet_id)
        if journal is not None and session.expiry_interval:
            journal.qos2_changed(session, p.packet_id)
        conn._write(encode_ack(T_PUBREC, p.packet_id, code, version))
