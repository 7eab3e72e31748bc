# Sessions (section 4.1; included by routing.pyx, fields declared in routing.pxd): the
# outgoing flow of a client (the inflight window of QoS 1/2 messages, the bounded queue, the
# re-sends of a resumed session; flow control, section 4.9), the acknowledgements that advance
# it (PUBACK, PUBREC, PUBCOMP), and the packet ids of incoming QoS 2 messages awaiting PUBREL.


cdef class Session:
    """The state MQTT keeps for a client id across network connections (section 4.1)."""

    def __init__(self, client_id, int protocol_version, *, max_queued_messages,
                 max_queued_bytes, bint queue_qos0, Stats stats, journal=None,
                 BrokerCore broker=None):
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
        self.broker = broker
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

    cdef void _dropped(self, Message msg, str reason) except *:
        """A delivery to this session was dropped (and counted): told to the hooks that
        provide on_message_dropped."""
        cdef BrokerCore broker = self.broker
        if broker is not None and broker.drop_hooks:
            broker.message_dropped(msg, self.client_id, reason)

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
                self._dropped(delivery.message, DROP_SLOW_SUBSCRIBER)
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
            _write_publish(conn, data, 0, self.stats)

    cpdef queue_for_append(self):
        if self.queue is NO_QUEUE:
            self.queue = deque()
        return self.queue

    # -- incoming QoS 2 ----------------------------------------------------------------------

    cpdef receive_qos2(self, int packet_id):
        """An incoming QoS 2 PUBLISH was accepted (PUBREC): its packet id awaits the PUBREL
        [MQTT-4.3.3-9], and a re-sent PUBLISH with it is not delivered again. Recorded with
        the journal when the session outlives its connection."""
        self.restore_qos2(packet_id)
        if self.journal is not None and self.expiry_interval:
            self.journal.qos2_changed(self, packet_id)

    cpdef bint release_qos2(self, int packet_id) except -1:
        """PUBREL (or a refusal of the PUBLISH) frees an incoming QoS 2 packet id; whether it
        was awaiting. The removal is recorded with the journal when the session is durable."""
        if packet_id not in self.awaiting_pubrel:
            return False
        self.awaiting_pubrel.discard(packet_id)
        if self.journal is not None and self.expiry_interval:
            self.journal.qos2_changed(self, packet_id)
        return True

    cpdef restore_qos2(self, int packet_id):
        """An incoming QoS 2 packet id awaiting PUBREL, as storage had it (nothing recorded)."""
        if self.awaiting_pubrel is NO_PACKET_IDS:
            self.awaiting_pubrel = set()
        self.awaiting_pubrel.add(packet_id)

    cdef void _enqueue(self, Delivery delivery) except *:
        cdef Py_ssize_t size = len(delivery.message.payload)
        if (len(self.queue) >= self.max_queued_messages
                or self.queued_bytes + size > self.max_queued_bytes):
            self.dropped += 1
            self.stats.dropped_queue_full += 1
            self._dropped(delivery.message, DROP_QUEUE_FULL)
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
        _write_publish(conn, data, delivery.qos, self.stats)

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
                self._dropped(delivery.message, DROP_EXPIRED)
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
                conn._write(encode_ack(T_PUBREL, pid, 0, conn.protocol_version))
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
                _write_publish(conn, data, delivery.qos, self.stats)
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

    # -- durable storage: restore and withdrawal ----------------------------------------------

    cpdef restore_delivery(self, Delivery delivery):
        """A delivery as storage had it: in flight under its packet id (with the state it was
        in), or queued when it has none. Nothing is recorded (its row is what it came from)."""
        if delivery.packet_id:
            self.inflight[delivery.packet_id] = delivery
        else:
            self.queue_for_append().append(delivery)
            self.queued_bytes += len(delivery.message.payload)

    cpdef list withdraw(self, object refused):
        """Take the queued deliveries of the `refused` messages (a set of Messages) out of the
        queue and return them, in queue order; the caller records their removal. A delivery
        in flight stays: its PUBLISH has been sent, and the session completes it with the
        client."""
        cdef Delivery d
        queue = self.queue
        if not queue:
            return []
        removed = [d for d in queue if d.message in refused]
        if removed:
            self.queue = deque([d for d in queue if d.message not in refused])
            for d in removed:
                self.queued_bytes -= len(d.message.payload)
        return removed

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
