# The inbound PUBLISH (section 3.3; included by routing.pyx): the handler the packet loop
# calls for every PUBLISH from a client, and next to it every way a PUBLISH is refused
# (protocol errors aside, which close the connection): payload format, topic limits, $SYS,
# ACL, a hook, the publish rate (or its throttle), storage that cannot take it.

_ACTION_PUBLISH = "publish"  # hbroker.hooks.PUBLISH
log = logging.getLogger("hbroker.connection")


cdef _handle_publish(ConnectionCore conn, Publish p):
    """A PUBLISH from a client (section 3.3): checked, acknowledged and routed. The order for
    QoS 1/2: the checks and refusals (below in this file); the message; the hooks that
    provide "message published" (`BrokerCore.message_published`: go on, refuse, or hold the
    acknowledgement); storage (refused while it is failing; a held acknowledgement when the
    message must be stored first, or when earlier ones of the connection are held, so that
    acknowledgements keep the order of the PUBLISHes [MQTT-4.6.0-2]); routing; then the
    PUBACK/PUBREC, or `HeldAck.routed` for a held one."""
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
    cdef bint defer
    cdef HeldAck ack
    cdef str topic
    cdef bint retain
    cdef Stats stats
    cdef BrokerCore broker = conn.broker
    session = conn.session
    stats = session.stats
    stats.publish_received += 1
    if qos == 0:
        stats.publish_received_qos0 += 1
    elif qos == 1:
        stats.publish_received_qos1 += 1
    else:  # the framer refuses QoS 3 [MQTT-3.3.1-4]
        stats.publish_received_qos2 += 1
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
                _refuse_publish(conn, p, RC_PAYLOAD_FORMAT_INVALID,
                                "payload is not UTF-8 as its format indicator says",
                                DROP_PAYLOAD_FORMAT_INVALID)
                return
        if not props:
            props = None
    topic_limits = broker.topic_limits
    if not topic_limits.allows(topic):
        # Well formed but not accepted: 0x90 in the acknowledgement for 5.0 QoS 1/2, the
        # connection stays open (MQTT 5.0 section 3.4.2.1: "The Topic Name is not malformed,
        # but is not accepted by this Client or Server"). 3.1.1 cannot be told: acknowledged
        # and dropped, as the 3.1.1 spec allows for a refused PUBLISH [MQTT-3.3.5-2].
        _refuse_publish(conn, p, RC_TOPIC_NAME_INVALID,
                        f"topic over max_topic_levels ({topic_limits.max_levels}) or "
                        f"max_topic_length ({topic_limits.max_length})", DROP_TOPIC_INVALID)
        return
    if len(topic) >= 4 and topic[0] == u"$" and topic.startswith("$SYS"):
        _refuse_publish(conn, p, RC_NOT_AUTHORIZED, "clients may not publish to $SYS",
                        DROP_NOT_AUTHORIZED)
        return
    hooks = broker.hooks
    if hooks.check_acl and not hooks.allowed(conn.client_info, topic, _ACTION_PUBLISH):
        _refuse_publish(conn, p, RC_NOT_AUTHORIZED, "not authorised", DROP_NOT_AUTHORIZED)
        return
    if qos == 2:
        pid = p.packet_id
        if pid in session.awaiting_pubrel:
            # [MQTT-4.3.3-10] a re-sent QoS 2 PUBLISH is not delivered again; its PUBREC
            # says success (the message was accepted before).
            _acknowledge(conn, p, RC_SUCCESS)
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
                _throttle(conn, now + delay)
        else:
            over = quota.check(len(p.payload), now)
            if over:
                _publish_over_rate(conn, p, over == OVER_BYTE_RATE)
                return
    pid = p.packet_id if qos else 0
    msg = _new_message(topic, p.payload, qos, retain, props, expires_at, conn.client_id)
    ack = None
    if broker.publish_hooks:
        decided = broker.message_published(conn, msg, pid)
        if decided is not None:
            if isinstance(decided, int):
                _refuse_publish(conn, p, <int>decided, "refused by a hook", DROP_REFUSED)
                return
            ack = <HeldAck?>decided
    journal = broker.journal
    defer = False
    # A message that must outlive a crash is acknowledged once it is stored (sync mode),
    # and refused while storage is failing. Periodic mode needs no look at the targets.
    if qos and journal is not None and (journal.sync or journal.degraded) and (
            conn.deferred or retain or broker.has_durable_target(topic)):
        if journal.degraded:
            if ack is None:
                _refuse_unstored(conn, msg, pid, journal.full)
            else:
                ack.refuse(RC_QUOTA_EXCEEDED if journal.full else RC_UNSPECIFIED_ERROR)
            return
        # Routed now, so that its deliveries, its retained update and its packet id go into
        # the same commit; what routing wrote to subscribers is held behind that commit, and
        # the PUBACK/PUBREC waits for it (Journal.defer).
        defer = True
        if ack is None:
            ack = _new_held_ack(conn, msg, pid, False)
    elif ack is None and conn.deferred and qos:
        ack = _new_held_ack(conn, msg, pid, False)  # behind earlier held acknowledgements
    if qos == 2:
        session.receive_qos2(pid)
    if defer:
        previous = broker.retained.get(topic) if retain else None
        reached = _publish(broker, msg, now, None)
        journal.defer(ack, msg, previous)
    else:
        reached = _publish(broker, msg, now, None)
    if qos == 0:
        return
    if ack is not None:
        ack.routed(reached)
        return
    version = conn.protocol_version
    code = RC_SUCCESS if reached or version != 5 else RC_NO_MATCHING_SUBSCRIBERS
    conn._write(encode_ack(T_PUBACK if qos == 1 else T_PUBREC, pid, code, version))


# -- refusals ---------------------------------------------------------------------------------

cdef void _dropped(ConnectionCore conn, Message msg, str reason) except *:
    cdef BrokerCore broker = conn.broker
    if broker.drop_hooks:
        broker.message_dropped(msg, conn.client_id, reason)


cdef Message _refused_message(ConnectionCore conn, Publish p):
    """The message of a PUBLISH refused before it was made, for on_message_dropped."""
    return _new_message(p.topic, p.payload, p.qos, p.retain, p.properties, 0, conn.client_id)


cdef void _acknowledge(ConnectionCore conn, Publish p, int code) except *:
    """The PUBACK/PUBREC of a QoS 1/2 PUBLISH answered before it was made into a message (a
    refusal, a re-sent QoS 2 PUBLISH), with `code` (3.1.1 carries none): written now, or,
    while earlier acknowledgements of the connection are held, behind them in their queue,
    so that acknowledgements keep the order of the PUBLISHes [MQTT-4.6.0-2]."""
    cdef HeldAck ack
    if conn.deferred:
        ack = _new_held_ack(conn, _refused_message(conn, p), p.packet_id, False)
        ack.code = code
        ack.routed(1)  # 1: not "no matching subscribers", the code stays
        return
    conn._write(encode_ack(T_PUBACK if p.qos == 1 else T_PUBREC, p.packet_id, code,
                           conn.protocol_version))


cdef void _refuse_publish(ConnectionCore conn, Publish p, int reason_code, str why,
                          str drop_reason) except *:
    """A PUBLISH the broker will not route: 5.0 QoS 1/2 get the reason code in the
    acknowledgement; QoS 0 and 3.1.1 are dropped silently (3.1.1 has no way to say no)."""
    log.info("publish refused: %s", why, extra={
        "client_id": conn.client_id, "peer": getattr(conn, "peer", "?"), "topic": p.topic})
    cdef BrokerCore broker = conn.broker
    broker.stats.publish_dropped += 1
    if broker.drop_hooks:
        _dropped(conn, _refused_message(conn, p), drop_reason)
    cdef int code = reason_code if conn.protocol_version == 5 else 0
    if p.qos == 2 and not code:
        conn.session.receive_qos2(p.packet_id)  # 3.1.1: acknowledged as if accepted
    if p.qos:
        _acknowledge(conn, p, code)


cdef void _publish_over_rate(ConnectionCore conn, Publish p, bint byte_rate) except *:
    """A PUBLISH over the client's publish rate, with `refuse` (5.0) or `disconnect`.
    PUBACK and PUBREC have no 0x96 (Message rate too high) [MQTT-3.4.2-1, MQTT-3.5.2-1]:
    both rates answer 0x97 Quota exceeded; 0x96 is a DISCONNECT reason code."""
    cdef BrokerCore broker = conn.broker
    cdef PublishQuota quota = conn.session.publish_quota
    cdef int code
    broker.stats.publish_rate_limited += 1
    broker.stats.publish_dropped += 1
    if broker.drop_hooks:
        _dropped(conn, _refused_message(conn, p), DROP_QUOTA)
    what = "byte rate (max_publish_bytes_rate)" if byte_rate \
        else "message rate (max_publish_rate)"
    if quota.disconnect:
        code = RC_QUOTA_EXCEEDED if byte_rate else RC_MESSAGE_RATE_TOO_HIGH
        log.warning("publish %s exceeded: disconnecting", what, extra={
            "client_id": conn.client_id, "peer": getattr(conn, "peer", "?"),
            "reason": _reason_name(code)})
        conn.disconnect(code, f"publish {what} exceeded", True)
        return
    quota.refused += 1
    now = conn.last_received
    if now - quota.logged_at >= REFUSAL_LOG_INTERVAL:
        log.warning("publish refused: %s exceeded (%d refused since the last report)",
                    what, quota.refused, extra={"client_id": conn.client_id,
                                                "peer": getattr(conn, "peer", "?")})
        quota.logged_at = now
        quota.refused = 0
    if p.qos:
        _acknowledge(conn, p, RC_QUOTA_EXCEEDED)


cdef void _refuse_unstored(ConnectionCore conn, Message msg, int packet_id, bint full) except *:
    """A QoS 1/2 PUBLISH that storage could not take: never acknowledged as a success.
    5.0 clients are told (0x97 Quota exceeded when storage is full, else 0x80); 3.1.1 has
    no way to say no, so the connection is closed and the client will send it again."""
    conn.broker.stats.publish_dropped += 1
    if conn.broker.drop_hooks:
        _dropped(conn, msg, DROP_STORAGE_UNAVAILABLE)
    if conn.closing:
        return
    if conn.protocol_version != 5:
        log.warning("publish not stored: closing the 3.1.1 connection", extra={
            "client_id": conn.client_id, "peer": getattr(conn, "peer", "?"),
            "topic": msg.topic})
        conn.abort("storage failure: publish could not be stored")
        return
    cdef int code = RC_QUOTA_EXCEEDED if full else RC_UNSPECIFIED_ERROR
    conn._write_output([encode_ack(T_PUBACK if msg.qos == 1 else T_PUBREC, packet_id, code, 5)])


cdef void _throttle(ConnectionCore conn, double resume_at) except *:
    """Over its publish rate with `throttle` (or a 3.1.1 client with `refuse`): the
    PUBLISH was accepted; reading stops until the broker's sweep sees the bucket out of
    debt (no timer per connection). TCP carries the backpressure to the client."""
    cdef PublishQuota quota
    throttled = conn.broker.throttled
    if conn not in throttled:
        conn.broker.stats.publish_throttled += 1
        if conn.transport is not None:
            conn.transport.pause_reading()
        quota = conn.session.publish_quota if conn.session is not None else None
        if quota is not None and conn.last_received - quota.logged_at \
                >= REFUSAL_LOG_INTERVAL:
            quota.logged_at = conn.last_received
            log.info("publish rate exceeded: reading paused (throttled)", extra={
                "client_id": conn.client_id, "peer": getattr(conn, "peer", "?")})
    throttled[conn] = resume_at


# The names of the reason codes this file logs, in hbroker.reason_codes.reason_name's wording
# (checked equal by tests/unit/test_protocol_constants.py).
REASON_NAMES = {
    RC_QUOTA_EXCEEDED: "quota exceeded",
    RC_MESSAGE_RATE_TOO_HIGH: "message rate too high",
}


cdef str _reason_name(int code):
    """A reason code's name for a log line."""
    return REASON_NAMES.get(code) or f"reason 0x{code:02x}"
