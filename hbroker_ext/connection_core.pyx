# A connection's per-message core (included by routing.pyx, fields declared in routing.pxd):
# `ConnectionCore.data_received` (the framer, then the packets of a read in order: PUBLISH to
# the inbound handler and PUBACK to the session in C, the others to their Python handlers),
# and the output (queued per loop iteration, written in one writelines).


cdef class ConnectionCore:
    """A connection's state on the per-message path, typed (see BrokerCore):
    `hbroker.connection.Connection` extends it with the protocol state machine and overrides
    the upcalls at the end of this class."""

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

    # -- upcalls (hbroker.connection.Connection overrides them) ------------------------------

    cpdef protocol_error(self, int reason_code, str message):
        """The client broke the protocol: counted, and the connection closed (5.0: after a
        DISCONNECT with `reason_code`)."""
        self.broker.stats.protocol_errors += 1
        self.abort(message)

    cpdef codec_error(self, object error):
        """A malformed packet (an MQTTError from the framer) after the packets before it."""
        self.protocol_error(error.reason_code, str(error))

    cpdef abort(self, str reason):
        """Close without a word."""
        if not self.closing:
            self.closing = True
            if self.transport is not None:
                self.transport.close()

    cpdef disconnect(self, int reason_code, str reason, bint publish_will):
        """Server-initiated close with a reason code (5.0 DISCONNECT)."""
        self.abort(reason)

    cpdef Py_ssize_t transport_buffer_size(self) except -1:
        """Bytes the transport holds unwritten (a slow reader's backlog)."""
        return self.transport.get_write_buffer_size() if self.transport is not None else 0


cdef void _puback_for_qos2(ConnectionCore conn, int packet_id) except *:
    """A PUBACK for a QoS 2 message in flight: a protocol error (see Session.on_puback). Out
    of line, so the packet loop stays small."""
    conn.protocol_error(RC_PROTOCOL_ERROR, f"PUBACK for QoS 2 message {packet_id}")


cdef bint _handle_packets(ConnectionCore conn, list packets, dict handlers) except -1:
    """The packets of one read, in order (`ConnectionCore.data_received`): PUBLISH straight to
    `_handle_publish` (inbound.pyx) and PUBACK to the session, the others to their handler in
    `handlers` (packet type -> function of the connection and the packet). Returns False when the
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
