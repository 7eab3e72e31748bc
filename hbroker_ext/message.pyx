# Application messages and their deliveries (included by routing.pyx; fields declared in
# routing.pxd): `Message`, `Delivery`, the properties of one delivery and the encoding of a
# PUBLISH for one connection, cached on the message across its fan-out.

# Encodings of one message kept for reuse across its fan-out beyond the first one; a message
# is rarely delivered in more than a handful of distinct forms.
cdef enum:
    ENCODING_CACHE_LIMIT = 16


cdef class Message:
    """An application message as the broker received it, shared by every delivery of it.

    `properties` holds the 5.0 properties that travel with the message to subscribers (the
    topic alias, subscription identifiers and message expiry are per delivery, not here).
    `expires_at` is a monotonic deadline, or 0 when the message does not expire.
    Durable storage (hbroker.storage.journal) keeps its id, the number of stored deliveries
    that need it, and whether it has a row of its own (its only delivery may carry it).
    """

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


cdef inline bint _fits(ConnectionCore conn, Message msg, bytes data) except -1:
    """Whether a PUBLISH is within the client's Maximum Packet Size; one that is not is
    discarded for that client [MQTT-3.1.2-25] and counted."""
    if len(data) > <Py_ssize_t>conn.max_packet_size_out:
        _too_large(conn, msg)
        return False
    return True


cdef void _too_large(ConnectionCore conn, Message msg) except *:
    cdef BrokerCore broker = conn.broker
    broker.stats.dropped_too_large += 1
    if broker.drop_hooks:
        broker.message_dropped(msg, conn.client_id, DROP_TOO_LARGE)


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
    if not _fits(conn, msg, data):
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
    if not _fits(conn, msg, data):
        return None
    return data


cdef inline void _write_publish(ConnectionCore conn, bytes data, int qos,
                                Stats stats) except *:
    """Write one PUBLISH to a client and count it, in all and by its QoS."""
    conn._write(data)
    stats.publish_sent += 1
    if qos == 0:
        stats.publish_sent_qos0 += 1
    elif qos == 1:
        stats.publish_sent_qos1 += 1
    else:
        stats.publish_sent_qos2 += 1


cdef void _write_qos0(ConnectionCore conn, int version, Delivery delivery, double now,
                     Stats stats) except *:
    data = _publish_bytes(conn, version, delivery.message, 0, delivery.retain, delivery.sub_ids,
                          0, False, now)
    if data is not None:
        _write_publish(conn, data, 0, stats)
