"""CONNECT and CONNACK (MQTT 5.0 sections 3.1 and 3.2), and enhanced authentication (AUTH,
sections 3.15 and 4.12).

The CONNECT is checked (protocol level, credentials against the listener, client id, will),
authenticated (the authenticate hooks, which may answer later, or an enhanced authentication
method and its AUTH exchange), then accepted: the session is opened and the CONNACK carries
what was negotiated. Each function takes the `Connection` the packet came on; it is a part of
the connection and uses its state and closing methods. The connection's handler table points
at `handle_connect` and `handle_auth`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

from hbroker_ext.codec import (
    ASSIGNED_CLIENT_IDENTIFIER,
    AUTHENTICATION_DATA,
    AUTHENTICATION_METHOD,
    MAXIMUM_PACKET_SIZE,
    MAXIMUM_QOS,
    REASON_STRING,
    RECEIVE_MAXIMUM,
    REQUEST_RESPONSE_INFORMATION,
    RESPONSE_INFORMATION,
    RETAIN_AVAILABLE,
    SERVER_KEEP_ALIVE,
    SESSION_EXPIRY_INTERVAL,
    SHARED_SUBSCRIPTION_AVAILABLE,
    SUBSCRIPTION_IDENTIFIER_AVAILABLE,
    TOPIC_ALIAS_MAXIMUM,
    USER_PROPERTY,
    WILDCARD_SUBSCRIPTION_AVAILABLE,
    WILL_DELAY_INTERVAL,
    Auth,
    Connack,
    MQTTError,
    encode,
)
from hbroker_ext.topics import valid_topic_name

from hbroker import hooks
from hbroker.auth.backoff import peer_host
from hbroker.hooks import AuthResult, ClientInfo
from hbroker.reason_codes import ReasonCode, connack_code_for, reason_name
from hbroker.session import NEVER, Message

if TYPE_CHECKING:
    from hbroker.broker import Broker
    from hbroker.connection import Connection

# The connection's logger: CONNECT is one step of the connection's life.
log = logging.getLogger("hbroker.connection")

PROTOCOL_MAX_PACKET_SIZE = 268435460
SESSION_EXPIRY_NEVER = 0xFFFFFFFF
# A client that does not ask for a Receive Maximum gets the protocol's default (MQTT 5.0
# section 3.1.2.11.3, which states it without a normative statement of its own).
DEFAULT_RECEIVE_MAXIMUM = 65535
# Refusals that count as a failed guess for the per-address backoff (hbroker.auth.backoff);
# 0x88 Server unavailable (an unreachable auth webhook) is not the client's doing.
AUTH_FAILURES = frozenset((ReasonCode.BAD_USER_NAME_OR_PASSWORD, ReasonCode.NOT_AUTHORIZED,
                           ReasonCode.BAD_AUTHENTICATION_METHOD))


def auth_reply(reason_code: int, method: str, data: bytes | None) -> Auth:
    """An AUTH packet of the exchange: the method, and the method's data when it has some
    (MQTT 5.0 section 3.15.2.2)."""
    props: dict[int, Any] = {AUTHENTICATION_METHOD: method}
    if data is not None:
        props[AUTHENTICATION_DATA] = data
    return Auth(reason_code, props)


# -- refusals ------------------------------------------------------------------------------

def refuse_connect(conn: Connection, reason_code: int, why: str) -> None:
    """CONNACK with the reason code, then a graceful close [MQTT-3.2.2-7]; a 3.1.1
    refusal that no return code fits is closed without a CONNACK [MQTT-3.2.2-6]."""
    code = connack_code_for(conn.protocol_version, reason_code)
    if code is None:
        why += " (closed without CONNACK: no 3.1.1 return code says it)"
    log.info("connection refused: %s", why, extra={
        "client_id": conn.client_id, "peer": conn.peer, "protocol": conn.protocol_version,
        "username": conn.username, "reason": reason_name(reason_code)})
    if code is None:
        conn.abort(f"CONNECT refused: {why}")
        return
    conn.send(Connack(False, code))
    conn._close(f"CONNECT refused: {why}", publish_will=True, linger=True)


def count_auth_failure(broker: Broker, reason_code: int) -> None:
    """For the admin listener's metrics (`hbroker_auth_failures_total`)."""
    broker.auth_failures[reason_code] = broker.auth_failures.get(reason_code, 0) + 1


def refuse_auth(conn: Connection, reason_code: int, why: str) -> None:
    """A CONNECT refused for its credentials: logged, audited (on_auth_failed) and, when
    its address failed before, answered only after a delay that doubles with each failure
    (a timer, not a sleep: the broker serves everyone else meanwhile)."""
    broker = conn.broker
    info = conn.client_info
    assert info is not None  # set by handle_connect before anything is refused here
    count_auth_failure(broker, reason_code)
    for hook in broker.hooks.on_auth_failed:
        hook(info, reason_code, why)
    delay = 0.0
    if reason_code in AUTH_FAILURES:
        delay = broker.auth_backoff.failed(peer_host(conn.peer), time.monotonic())
    if delay <= 0 or conn.transport is None or broker.loop is None:
        refuse_connect(conn, reason_code, why)
        return
    log.info("connection refused: %s (answered in %.2f s: earlier failures from this "
             "address)", why, delay, extra={
                 "client_id": conn.client_id, "peer": conn.peer, "username": conn.username,
                 "protocol": conn.protocol_version, "reason": reason_name(reason_code)})
    conn.closing = True  # nothing more is read or handled
    conn.close_reason = f"CONNECT refused: {why}"
    conn.transport.pause_reading()
    conn.framer.discard()  # nor kept: what the client sent after its CONNECT
    broker.loop.call_later(delay, _refuse_late, conn, reason_code)


def _refuse_late(conn: Connection, reason_code: int) -> None:
    transport = conn.transport
    if transport is None or transport.is_closing():
        return
    code = connack_code_for(conn.protocol_version, reason_code)
    if code is None:  # [MQTT-3.2.2-6]
        transport.close()
        return
    conn.write_output([encode(Connack(False, code), conn.protocol_version)])
    conn._linger()


# -- CONNECT -------------------------------------------------------------------------------

def handle_connect(conn: Connection, p: Any) -> None:
    if conn.connected or conn.pending_connect is not None or conn.client_info is not None:
        # [MQTT-3.1.0-2] a second CONNECT is a protocol error (also while the first one
        # is being authenticated).
        conn.protocol_error(ReasonCode.PROTOCOL_ERROR, "second CONNECT")
        return
    broker = conn.broker
    limits = broker.limits
    sessions_cfg = broker.config.sessions
    v5 = p.protocol_version == 5
    conn.protocol_version = p.protocol_version
    conn.framer.protocol_version = p.protocol_version
    props = p.properties or {}
    client_id = p.client_id
    conn.client_id = client_id or None
    conn.username = p.username

    listener = conn.listener
    if p.protocol_version not in listener.protocol_versions:
        # [MQTT-3.1.2-2] a protocol level the listener does not accept: 0x01 / 0x84.
        refuse_connect(conn, ReasonCode.UNSUPPORTED_PROTOCOL_VERSION,
                       f"protocol level {p.protocol_version} not accepted on "
                       f"listener {listener.name}")
        return
    identity = conn.certificate_identity
    if listener.use_identity_as_username and identity is not None:
        conn.username = identity
    # Who the client is for the hooks, built once per CONNECT: the client id the broker
    # assigns and the identity an enhanced authentication method names are set in
    # accept_connect. The connection holds it from the first hook that sees it on.
    info = ClientInfo(client_id, conn.username, conn.peer, p.protocol_version,
                      listener.name, identity, listener.config)
    if listener.use_identity_as_username and identity is None:
        conn.client_info = info
        refuse_auth(conn, ReasonCode.NOT_AUTHORIZED,
                    "no client certificate identity to use as username")
        return
    if conn.username is None and not listener.allow_anonymous:
        conn.client_info = info
        refuse_auth(conn, ReasonCode.NOT_AUTHORIZED,
                    f"anonymous clients not allowed on listener {listener.name}")
        return

    if len(client_id) > sessions_cfg.max_client_id_length:
        refuse_connect(conn, ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, "client id too long")
        return
    if not client_id:
        if not v5 and not p.clean_start:
            # [MQTT-3.1.3-8] a zero-length client id needs clean session 1 in 3.1.1.
            refuse_connect(conn, ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
                           "zero-length client id with clean session 0")
            return
        if not sessions_cfg.allow_zero_length_client_id:
            refuse_connect(conn, ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
                           "zero-length client id not allowed")
            return
    will = p.will
    if will is not None:
        if will.qos > limits.max_qos:
            refuse_connect(conn, ReasonCode.QOS_NOT_SUPPORTED, "will QoS above maximum")
            return
        if will.retain and not limits.retain_available:
            refuse_connect(conn, ReasonCode.RETAIN_NOT_SUPPORTED, "will retain not available")
            return
        if not valid_topic_name(will.topic):
            refuse_connect(conn, ReasonCode.TOPIC_NAME_INVALID, "invalid will topic")
            return
        if not broker.topic_limits.allows(will.topic):
            refuse_connect(conn, ReasonCode.TOPIC_NAME_INVALID,
                           "will topic over max_topic_levels or max_topic_length")
            return

    method = props.get(AUTHENTICATION_METHOD)
    conn.client_info = info
    if method is not None:
        hook = broker.hooks.auth_method_hooks.get(method)
        if hook is None:
            refuse_connect(conn, ReasonCode.BAD_AUTHENTICATION_METHOD,
                           f"unknown authentication method {method!r}")
            return
        conn.auth_method = method
        result = hook.enhanced_auth(info, method, props.get(AUTHENTICATION_DATA), None)
        conn.auth_state = result.state
        if result.reason_code == ReasonCode.CONTINUE_AUTHENTICATION:
            conn.pending_connect = p
            conn.send(auth_reply(ReasonCode.CONTINUE_AUTHENTICATION, method, result.data))
            conn.framer.resume()  # the client's AUTH (or DISCONNECT) comes next
            return
        if result.reason_code != ReasonCode.SUCCESS:
            refuse_auth(conn, result.reason_code, f"{method} authentication failed")
            return
        # Authenticated by the method: the authenticate hooks are not asked.
        accept_authenticated(conn, p, result)
        return
    authenticate(conn, p, 0)


def authenticate(conn: Connection, p: Any, start: int, accepted: bool = False) -> None:
    """Ask the authenticate hooks from `start` on: each accepts (0), refuses (a reason
    code) or has no say (None). The client is admitted when none refused and one accepted
    (`accepted`: one before `start` did), or when its listener admits clients no source
    vouches for (`allow_anonymous`) or its certificate names it
    (`use_identity_as_username`). A hook that answers with an awaitable (a password hash
    in a thread, a webhook) is waited for without blocking the loop: reading stops until
    it answers, then the rest follow."""
    checks = conn.broker.hooks.authenticate
    info = conn.client_info
    for i in range(start, len(checks)):
        code = checks[i](info, p.password)
        if code is None:
            continue
        if not isinstance(code, int):
            future = asyncio.ensure_future(code)
            try:
                # What the client sent after its CONNECT stays held (Framer) until this
                # hook answers: within the limit before the CONNACK.
                conn.framer.check_held()
            except MQTTError as error:
                future.cancel()
                conn.codec_error(error)
                return
            if conn.transport is not None:
                conn.transport.pause_reading()
            future.add_done_callback(
                lambda f, i=i, a=accepted: _authenticated(  # type: ignore[misc]
                    conn, p, i, f, a))
            return
        if code:
            refuse_auth(conn, code, "authentication failed")
            return
        accepted = True
    listener = conn.listener
    if not (accepted or listener.allow_anonymous or listener.use_identity_as_username):
        # Nothing vouched for the username (and password) the client gave: no source
        # applies to this listener, or none accepts such a CONNECT (e.g. a SCRAM-only
        # listener and a CONNECT without Authentication Method). Mosquitto 2 likewise.
        refuse_auth(conn, ReasonCode.NOT_AUTHORIZED,
                    f"no authentication source accepted the client on listener "
                    f"{listener.name}")
        return
    _admit(conn, p)


def _authenticated(conn: Connection, p: Any, index: int, future: asyncio.Future,
                   accepted: bool) -> None:
    if conn.closing:
        return  # the client left while it was being authenticated
    try:
        code = future.result()
    except Exception:
        log.exception("authentication hook failed", extra={
            "client_id": conn.client_id, "peer": conn.peer})
        code = ReasonCode.UNSPECIFIED_ERROR
    if code:
        refuse_auth(conn, code, "authentication failed")
        return
    if conn.transport is not None:
        conn.transport.resume_reading()
    authenticate(conn, p, index + 1, accepted or code == 0)
    if not conn.closing and not conn.framer.held:
        # Accepted: the packets the client sent ahead of the CONNACK, held meanwhile,
        # are handled now, in order [MQTT-3.1.4-5].
        conn.data_received(b"")


def _admit(conn: Connection, p: Any, auth_data: bytes | None = None) -> None:
    """The CONNECT passed authentication: let the claim_session hooks make the client id
    this broker's (they may wait: `_claimed`), then accept it (accept_connect) and let the
    framer read on at the normal packet size limit; what the client sent after the CONNECT
    is handled next (by the packet loop, or `_authenticated` / `_claimed` after a hook that
    waited)."""
    claims = conn.broker.hooks.claim_session
    if claims and p.client_id:
        waits = [w for w in (claim(conn.client_info, p.clean_start) for claim in claims)
                 if w is not None]
        if waits:
            try:
                conn.framer.check_held()
            except MQTTError as error:
                for w in waits:
                    asyncio.ensure_future(w).cancel()
                conn.codec_error(error)
                return
            if conn.transport is not None:
                conn.transport.pause_reading()
            future = asyncio.gather(*waits)
            future.add_done_callback(lambda f: _claimed(conn, p, auth_data, f))
            return
    _accept(conn, p, auth_data)


def _accept(conn: Connection, p: Any, auth_data: bytes | None) -> None:
    accept_connect(conn, p, auth_data)
    if conn.connected:
        conn.framer.accept(conn.broker.limits.max_packet_size)


def _claimed(conn: Connection, p: Any, auth_data: bytes | None,
             future: asyncio.Future) -> None:
    """The claim_session hooks answered: refuse with the first code one gave, or accept."""
    if conn.closing:
        if not future.cancelled():
            future.exception()
        return  # the client left meanwhile
    try:
        code = next((c for c in future.result() if c), None)
    except Exception:
        log.exception("claim_session hook failed", extra={
            "client_id": conn.client_id, "peer": conn.peer})
        code = ReasonCode.UNSPECIFIED_ERROR
    if code:
        refuse_connect(conn, code, "the session could not be claimed")
        return
    if conn.transport is not None:
        conn.transport.resume_reading()
    _accept(conn, p, auth_data)
    if not conn.closing and not conn.framer.held:
        conn.data_received(b"")  # what the client sent after its CONNECT [MQTT-3.1.4-5]


def accept_authenticated(conn: Connection, p: Any, result: AuthResult) -> None:
    """Enhanced authentication succeeded: the method's identity becomes the username,
    and its last data (e.g. SCRAM's server-final-message) goes in the CONNACK."""
    if result.username is not None:
        conn.username = result.username
    _admit(conn, p, result.data)


def accept_connect(conn: Connection, p: Any, auth_data: bytes | None = None) -> None:
    broker = conn.broker
    limits = broker.limits
    sessions_cfg = broker.config.sessions
    v5 = p.protocol_version == 5
    props = p.properties or {}
    now = time.monotonic()
    connack_props: dict[int, Any] = {}

    client_id = p.client_id
    if not client_id:
        client_id = broker.assign_client_id()
        if v5:
            connack_props[ASSIGNED_CLIENT_IDENTIFIER] = client_id  # [MQTT-3.2.2-16]
    conn.client_id = client_id
    listener = conn.listener
    info = conn.client_info
    assert info is not None
    if info.client_id != client_id or info.username != conn.username:
        # The assigned client id, the identity an enhanced authentication method named.
        info = dataclasses.replace(info, client_id=client_id, username=conn.username)
    if p.will is not None and broker.hooks.check_acl and not broker.hooks.allowed(
            info, p.will.topic, hooks.PUBLISH):
        # The will is published on the client's behalf: it needs the client's right to
        # publish there (as in Mosquitto, the CONNECT is refused: 0x87 / 0x05).
        refuse_connect(conn, ReasonCode.NOT_AUTHORIZED, "will topic not authorised")
        return

    keepalive = p.keepalive
    max_keepalive = limits.max_keepalive
    if v5 and (keepalive > max_keepalive or (keepalive == 0 and max_keepalive < 65535)):
        keepalive = max_keepalive
        connack_props[SERVER_KEEP_ALIVE] = keepalive  # [MQTT-3.2.2-21]
    conn.keepalive = keepalive

    if v5:
        requested = props.get(SESSION_EXPIRY_INTERVAL, 0)
        conn.session_expiry_requested = requested
        granted = min(requested, sessions_cfg.max_session_expiry_interval)
        if granted != requested:
            connack_props[SESSION_EXPIRY_INTERVAL] = granted
        expiry: float = NEVER if granted == SESSION_EXPIRY_NEVER else granted
        send_window = props.get(RECEIVE_MAXIMUM, DEFAULT_RECEIVE_MAXIMUM)
        conn.max_packet_size_out = props.get(MAXIMUM_PACKET_SIZE, PROTOCOL_MAX_PACKET_SIZE)
        alias_max = props.get(TOPIC_ALIAS_MAXIMUM, 0)
        if alias_max:
            conn.topic_alias_maximum_out = alias_max
            conn.topic_aliases_out = {}
    else:
        if p.clean_start:
            expiry = 0
        else:
            expiration = sessions_cfg.persistent_client_expiration
            expiry = expiration if expiration else NEVER
        send_window = limits.max_inflight

    if v5:
        if limits.max_inflight != DEFAULT_RECEIVE_MAXIMUM:
            connack_props[RECEIVE_MAXIMUM] = limits.max_inflight
        if limits.max_qos < 2:
            connack_props[MAXIMUM_QOS] = limits.max_qos
        if not limits.retain_available:
            connack_props[RETAIN_AVAILABLE] = 0
        if limits.max_packet_size < PROTOCOL_MAX_PACKET_SIZE:
            connack_props[MAXIMUM_PACKET_SIZE] = limits.max_packet_size
        if limits.topic_alias_maximum:
            connack_props[TOPIC_ALIAS_MAXIMUM] = limits.topic_alias_maximum
        if not limits.wildcard_subscription_available:
            connack_props[WILDCARD_SUBSCRIPTION_AVAILABLE] = 0
        if not limits.subscription_identifier_available:
            connack_props[SUBSCRIPTION_IDENTIFIER_AVAILABLE] = 0
        if not limits.shared_subscription_available:
            connack_props[SHARED_SUBSCRIPTION_AVAILABLE] = 0
        if props.get(REQUEST_RESPONSE_INFORMATION):
            connack_props[RESPONSE_INFORMATION] = f"responses/{client_id}"
        if conn.auth_method is not None:
            connack_props[AUTHENTICATION_METHOD] = conn.auth_method
            if auth_data is not None:
                connack_props[AUTHENTICATION_DATA] = auth_data
        if not _connack_fits(conn, connack_props):
            return

    previous = broker.sessions.get(client_id)
    broker.remember_identity(info, previous is not None and bool(previous.subscriptions))
    session, present = broker.open_session(conn, client_id, p.clean_start,
                                           p.protocol_version, now)
    conn.session = session
    conn.connected = True
    session.expiry_interval = expiry
    session.send_window = send_window
    session.publish_quota = broker.new_publish_quota(p.protocol_version, now)
    if p.will is not None:
        will = p.will
        will_props = dict(will.properties) if will.properties else None
        delay = 0
        if will_props:
            delay = will_props.pop(WILL_DELAY_INTERVAL, 0)
        session.will = Message(will.topic, will.payload, will.qos, will.retain,
                               will_props or None, 0, client_id)
        session.will_delay = delay
    else:
        session.will = None
    if broker.journal is not None:
        broker.journal.session_changed(session)

    # [MQTT-3.2.2-2] session present is 0 with clean start. MQTT 3.1 has no such flag:
    # the byte is reserved there (0), though the session is resumed all the same.
    conn.send(Connack(present and p.protocol_version >= 4, 0, connack_props or None))
    if present:
        session.resend_inflight(now)
        session.drain(now)
    conn.client_info = info
    for hook in broker.hooks.on_connected:
        hook(info)
    log.info("client connected", extra={
        "client_id": client_id, "peer": conn.peer, "protocol": p.protocol_version,
        "clean_start": p.clean_start, "keepalive": keepalive,
        "session_present": present, "username": conn.username,
        "listener": listener.name})


def _connack_fits(conn: Connection, connack_props: dict[int, Any]) -> bool:
    """Keep the CONNACK within the client's Maximum Packet Size [MQTT-3.1.2-24]: leave
    out what the server may leave out (a Reason String or User Property [MQTT-3.2.2-19,
    MQTT-3.2.2-20]; Response Information, which it MAY return [3.1.2.11.6]). If the rest is
    still too large (the limits the client must know, an assigned client id), the CONNECT
    is refused with a bare CONNACK 0x83 (implementation specific error: "valid but not
    accepted by this Server"), or closed without one below its 5 bytes; returns False."""
    limit = conn.max_packet_size_out
    if limit >= PROTOCOL_MAX_PACKET_SIZE:
        return True
    size = len(encode(Connack(False, 0, connack_props or None), 5))
    for optional in (REASON_STRING, USER_PROPERTY, RESPONSE_INFORMATION):
        if size <= limit:
            return True
        if optional in connack_props:
            del connack_props[optional]
            size = len(encode(Connack(False, 0, connack_props or None), 5))
    if size <= limit:
        return True
    why = (f"its CONNACK ({size} bytes) would exceed the client's Maximum Packet Size "
           f"({limit} bytes)")
    if len(encode(Connack(False, ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR), 5)) > limit:
        log.info("connection refused: %s (closed without CONNACK: none fits)", why, extra={
            "client_id": conn.client_id, "peer": conn.peer, "protocol": 5})
        conn.abort(f"CONNECT refused: {why}")
    else:
        refuse_connect(conn, ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR, why)
    return False


# -- AUTH ----------------------------------------------------------------------------------

def handle_auth(conn: Connection, p: Any) -> None:
    """An AUTH packet: the next step of the enhanced authentication before the CONNACK, or
    a re-authentication once connected (MQTT 5.0 section 4.12.1)."""
    props = p.properties or {}
    method = props.get(AUTHENTICATION_METHOD)
    if conn.auth_method is None or method != conn.auth_method:
        if conn.auth_method is None and method is not None:
            conn.protocol_error(ReasonCode.BAD_AUTHENTICATION_METHOD,
                                f"unknown authentication method {method!r}")
        else:
            conn.protocol_error(ReasonCode.PROTOCOL_ERROR, "AUTH without a matching method")
        return
    hook = conn.broker.hooks.auth_method_hooks.get(method)
    if hook is None:  # the method was switched off by a reload
        conn.protocol_error(ReasonCode.BAD_AUTHENTICATION_METHOD,
                            f"authentication method {method!r} no longer offered")
        return
    assert conn.client_info is not None
    result = hook.enhanced_auth(conn.client_info, method, props.get(AUTHENTICATION_DATA),
                                conn.auth_state)
    conn.auth_state = result.state
    if result.reason_code == ReasonCode.CONTINUE_AUTHENTICATION:
        conn.send(auth_reply(ReasonCode.CONTINUE_AUTHENTICATION, method, result.data))
        conn.framer.resume()  # before the CONNACK: the next AUTH may be read
        return
    if result.reason_code != ReasonCode.SUCCESS:
        if conn.connected:
            count_auth_failure(conn.broker, result.reason_code)
            for hook_failed in conn.broker.hooks.on_auth_failed:
                hook_failed(conn.client_info, result.reason_code,
                            f"{method} re-authentication failed")
            conn.protocol_error(result.reason_code, "re-authentication failed")
        else:
            refuse_auth(conn, result.reason_code, f"{method} authentication failed")
        return
    if conn.pending_connect is not None:
        pending, conn.pending_connect = conn.pending_connect, None
        accept_authenticated(conn, pending, result)
    else:
        conn.send(auth_reply(ReasonCode.SUCCESS, method, result.data))
