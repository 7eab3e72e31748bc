# A publisher's acknowledgement held back until every holder is done with its message
# (included by routing.pyx, fields declared in routing.pxd; hbroker.acknowledgement is its
# documented Python face).
#
# A QoS 1/2 PUBLISH is acknowledged (PUBACK, or PUBREC for QoS 2) once the broker has routed
# it. Some work must be done before the acknowledgement may promise the message is safe: a
# storage commit (hbroker.storage.journal), a hook's own durable write (a cluster's stream, a
# bridge's ledger). Each of them `hold`s the message's HeldAck and `release`s it when done;
# the inbound PUBLISH handler holds it until it has routed the message (`routed`). When the
# last holder lets go, the acknowledgement is written at once, in PUBLISH order for the
# connection [MQTT-4.6.0-2]: it waits behind those of earlier PUBLISHes still held
# (ConnectionCore.held_acks, in PUBLISH order; ConnectionCore.deferred counts them).

ack_log = logging.getLogger("hbroker.acknowledgement")

# While a `grouped` block is active: connection -> acknowledgements to write when it ends.
cdef dict _grouped_out = None


cdef class grouped:
    """`with grouped():` acknowledgements released inside the block are written at its end,
    one write per connection (e.g. every PUBLISH a storage commit made durable) instead of
    one each. A nested block leaves the writing to the outer one."""

    cdef bint _outer

    def __enter__(self):
        global _grouped_out
        self._outer = _grouped_out is None
        if self._outer:
            _grouped_out = {}
        return self

    def __exit__(self, *exc_info):
        global _grouped_out
        cdef ConnectionCore conn
        if not self._outer:
            return False
        pending, _grouped_out = _grouped_out, None
        for key, out in (<dict>pending).items():
            conn = <ConnectionCore>key
            if not conn.closing:
                conn._write_output(<list>out)
        return False


cdef void _write_acks(ConnectionCore conn, list out) except *:
    cdef object queued
    if _grouped_out is None:
        conn._write_output(out)
        return
    queued = _grouped_out.get(conn)
    if queued is None:
        _grouped_out[conn] = out
    else:
        (<list>queued).extend(out)


cdef void _write_grouped_now(ConnectionCore conn) except *:
    """Write what a `grouped` block holds for `conn` (before the connection closes)."""
    if _grouped_out is not None:
        out = _grouped_out.pop(conn, None)
        if out:
            conn._write_output(<list>out)


cdef inline object _ack_queue(ConnectionCore conn):
    """The connection's HeldAcks in PUBLISH order (ConnectionCore.held_acks)."""
    queue = conn.held_acks
    if queue is None:
        queue = conn.held_acks = deque()
    return queue


cdef HeldAck _new_held_ack(ConnectionCore conn, Message msg, int packet_id, bint deciding):
    """A HeldAck with one hold (the inbound handler's), in its place on the connection
    unless `deciding`."""
    cdef HeldAck ack = HeldAck.__new__(HeldAck)
    ack._start(conn, msg, packet_id, deciding)
    return ack


cdef class HeldAck:
    """The acknowledgement of one QoS 1/2 PUBLISH, written when every holder released it and
    every earlier one of its connection is done. `code`: the reason code it will carry (0, or
    0x10 No matching subscribers from `routed`; the refusal's code once refused). Created
    with one hold, the inbound handler's, which `routed` drops.

    `deciding` is True while Broker.message_published asks the hooks: the acknowledgement
    takes its place on the connection only when a hook holds it (most do not: nothing to
    undo), and a refusal then is answered by the handler, as an ACL refusal is (`refuse`
    only records its code)."""

    def __init__(self, ConnectionCore conn, Message msg, int packet_id, bint deciding=False):
        self._start(conn, msg, packet_id, deciding)

    cdef void _start(self, ConnectionCore conn, Message msg, int packet_id,
                     bint deciding) except *:
        self.conn = conn
        self.msg = msg
        self.packet_id = packet_id
        self.code = 0
        self.holders = 1
        self.state = H_HELD
        self.session = conn.session
        self.deciding = deciding
        if not deciding:
            _ack_queue(conn).append(self)
            conn.deferred += 1

    def __repr__(self):
        state = ("held", "ready", "refused", "done")[self.state]
        return (f"<HeldAck {self.msg.topic!r} packet_id={self.packet_id} {state} "
                f"holders={self.holders}>")

    @property
    def settled(self):
        """Whether every holder is done (released or refused)."""
        return self.state != H_HELD

    cpdef hold(self):
        """One more holder (a hook, the journal): the acknowledgement waits for its release.
        A hook holds it while on_message_published is called (later, only a holder may add
        another hold)."""
        if self.state == H_HELD:
            if self.deciding and self.holders == 1:
                _ack_queue(self.conn).append(self)
                self.conn.deferred += 1
            self.holders += 1

    cpdef routed(self, long reached):
        """The handler routed the message to `reached` subscriptions: a 5.0 acknowledgement
        says 0x10 No matching subscribers when none; the handler's hold is dropped."""
        if not reached and self.conn.protocol_version == 5:
            self.code = RC_NO_MATCHING_SUBSCRIBERS
        self.release()

    cpdef release(self):
        """A holder is done. When none is left, the acknowledgement goes out after those of
        the connection's earlier PUBLISHes."""
        if self.state != H_HELD:
            return
        self.holders -= 1
        if self.holders > 0:
            return
        self.state = H_READY
        self._settle()

    cpdef refuse(self, int reason_code, str reason=DROP_STORAGE_UNAVAILABLE):
        """Never acknowledge the message as a success: a 5.0 client gets `reason_code`
        (0x97 Quota exceeded when storage is full, 0x80 Unspecified error otherwise, or a
        hook's code); a 3.1.1 client is disconnected (it has no way to be told no; it sends
        the message again on its next connection). A QoS 2 packet id is freed, so the
        client's next PUBLISH with it is a new message. Counted as dropped, and reported to
        the hooks providing on_message_dropped with `reason`. What the message's routing
        delivered stays delivered (the journal withdraws what it had stored)."""
        cdef ConnectionCore conn
        cdef BrokerCore broker
        if self.state != H_HELD:
            return
        self.code = reason_code
        if self.deciding:
            self.state = H_REFUSED
            return
        conn = self.conn
        broker = conn.broker
        broker.stats.publish_dropped += 1
        if broker.drop_hooks:
            broker.message_dropped(self.msg, conn.client_id, reason)
        if self.msg.qos == 2 and self.session is not None:
            self.session.release_qos2(self.packet_id)
        self.state = H_REFUSED
        self._settle()

    cpdef discard(self):
        """Take back an acknowledgement no holder took, or one a hook refused while it was
        asked (Broker.message_published): it leaves no trace on the connection."""
        cdef ConnectionCore conn
        cdef HeldAck head
        if self.state == H_DONE:
            return
        held = self.holders > 1 or self.state == H_REFUSED
        self.state = H_DONE
        if self.deciding and not held:
            return  # never took its place on the connection
        conn = self.conn
        queue = _ack_queue(conn)
        if queue and queue[len(queue) - 1] is self:
            queue.pop()
        else:
            try:
                queue.remove(self)
            except ValueError:
                pass
        conn.deferred -= 1
        if not queue:
            conn.held_acks = None
        else:
            head = <HeldAck>queue[0]
            if head.state != H_HELD:
                head._settle()  # it waited behind this one

    cdef void _settle(self) except *:
        """Write, in order, the acknowledgements at the head of the connection's queue whose
        holders are all done."""
        cdef ConnectionCore conn = self.conn
        cdef HeldAck ack
        cdef int state
        cdef int version = conn.protocol_version
        cdef list out = None
        queue = _ack_queue(conn)
        if conn.closing:
            _forget_settled(conn, queue)
            return
        while queue:
            ack = <HeldAck>queue[0]
            if ack.state == H_HELD:
                break
            queue.popleft()
            conn.deferred -= 1
            state = ack.state
            ack.state = H_DONE
            if state == H_READY or version == 5:
                if out is None:
                    out = []
                out.append(encode_ack(T_PUBACK if ack.msg.qos == 1 else T_PUBREC,
                                      ack.packet_id, ack.code, version))
                continue
            # 3.1.1 has no way to say no: the connection closes, after the acknowledgements
            # of the PUBLISHes before this one.
            if out:
                _write_acks(conn, out)
                out = None
            _write_grouped_now(conn)
            ack_log.warning("publish refused: closing the 3.1.1 connection", extra={
                "client_id": conn.client_id, "topic": ack.msg.topic,
                "reason": f"{ack.code:#04x}"})
            conn.abort("publish refused: a 3.1.1 client cannot be told")
            _forget_settled(conn, queue)
            return
        if out:
            _write_acks(conn, out)
        if not queue:
            conn.held_acks = None


cdef void _forget_settled(ConnectionCore conn, object queue) except *:
    """The connection is closing: nothing is written; settled acknowledgements leave the
    queue now, held ones when their holders finish."""
    cdef HeldAck ack
    for item in list(queue):
        ack = <HeldAck>item
        if ack.state != H_HELD:
            queue.remove(ack)
            ack.state = H_DONE
            conn.deferred -= 1
    if not queue:
        conn.held_acks = None
