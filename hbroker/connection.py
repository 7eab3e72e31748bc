"""One network connection: framing, the MQTT state machine, and coalesced writes.

`data_received` feeds the Cython framer, which returns every complete packet of the buffer at
once; they are handled in one loop. Writes are appended to `out` and flushed by the broker once
per loop iteration with a single `writelines`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from hbroker_ext.codec import (
    ASSIGNED_CLIENT_IDENTIFIER,
    AUTH,
    AUTHENTICATION_DATA,
    AUTHENTICATION_METHOD,
    CONNECT,
    DISCONNECT,
    MAXIMUM_PACKET_SIZE,
    MAXIMUM_QOS,
    PINGREQ,
    PUBCOMP,
    PUBREC,
    PUBREL,
    REASON_STRING,
    RECEIVE_MAXIMUM,
    REQUEST_RESPONSE_INFORMATION,
    RESPONSE_INFORMATION,
    RETAIN_AVAILABLE,
    SERVER_KEEP_ALIVE,
    SESSION_EXPIRY_INTERVAL,
    SHARED_SUBSCRIPTION_AVAILABLE,
    SUBSCRIBE,
    SUBSCRIPTION_IDENTIFIER,
    SUBSCRIPTION_IDENTIFIER_AVAILABLE,
    TOPIC_ALIAS_MAXIMUM,
    UNSUBSCRIBE,
    USER_PROPERTY,
    WILDCARD_SUBSCRIPTION_AVAILABLE,
    WILL_DELAY_INTERVAL,
    Auth,
    Connack,
    Disconnect,
    Framer,
    MQTTError,
    Pingresp,
    Suback,
    Unsuback,
    encode,
    encode_ack,
)
from hbroker_ext.routing import ACK_ACCEPTED, ACK_WRONG_TYPE, ConnectionCore
from hbroker_ext.topics import parse_shared, valid_topic_filter, valid_topic_name

from hbroker import hooks
from hbroker.auth.backoff import peer_host
from hbroker.broker import SubscriptionOptions
from hbroker.hooks import AuthResult, ClientInfo
from hbroker.quotas import REFUSAL_LOG_INTERVAL
from hbroker.reason_codes import ReasonCode, connack_code_for, reason_name
from hbroker.session import NEVER, Message

if TYPE_CHECKING:
    from hbroker.broker import Broker
    from hbroker.session import Session
    from hbroker.transports import Listener

log = logging.getLogger("hbroker.connection")

PROTOCOL_MAX_PACKET_SIZE = 268435460
SESSION_EXPIRY_NEVER = 0xFFFFFFFF
# A client that does not ask for a Receive Maximum gets the protocol's default [MQTT-3.1.2-?].
DEFAULT_RECEIVE_MAXIMUM = 65535
# Refusals that count as a failed guess for the per-address backoff (hbroker.auth.backoff);
# 0x88 Server unavailable (an unreachable auth webhook) is not the client's doing.
AUTH_FAILURES = frozenset((ReasonCode.BAD_USER_NAME_OR_PASSWORD, ReasonCode.NOT_AUTHORIZED,
                           ReasonCode.BAD_AUTHENTICATION_METHOD))
# After a DISCONNECT or a refusing CONNACK, how long (seconds) the connection still reads and
# discards what the client sends before the broker's sweep closes it (Connection._linger).
LINGER_TIMEOUT = 1.5


class Connection(ConnectionCore, asyncio.Protocol):
    """The state the per-message path reads (broker, session, client_id, protocol_version,
    connected, closing, write_paused, last_received, out, topic aliases, max_packet_size_out,
    deferred, client_info, pending_connect) is typed in the compiled base,
    hbroker_ext.routing.ConnectionCore, with the transport, the framer, `data_received` (the
    packets of a read: PUBLISH and PUBACK compiled, the others to the handlers below) and the
    output (`write`, `flush`, `take_output`, `write_output`)."""

    __slots__ = (
        "listener", "peer", "username", "keepalive", "opened_at",
        "close_reason", "session_expiry_requested", "auth_method", "auth_state",
        "certificate_identity",
    )

    def __init__(self, broker: Broker, listener: Listener) -> None:
        self.broker = broker
        self.listener = listener  # its settings: hbroker.transports.Listener
        self.certificate_identity: str | None = None
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        # Until its CONNECT is accepted, a connection may make the broker hold at most
        # max_connect_packet_size bytes: the CONNECT and what follows it (Framer).
        limits = broker.limits
        self.framer = Framer(min(limits.max_connect_packet_size, limits.max_packet_size),
                             connecting=True)
        self.handlers = _HANDLERS
        self.protocol_version = 0
        self.session: Session | None = None
        self.client_id: str | None = None
        self.username: str | None = None
        self.keepalive = 0
        self.opened_at = self.last_received = time.monotonic()
        self.connected = False
        self.closing = False
        self.close_reason = ""
        self.out: list[bytes] = []
        self.write_paused = False
        self.topic_aliases_in: dict[int, str] = {}
        self.topic_aliases_out: dict[str, int] | None = None
        self.topic_alias_maximum_out = 0
        self.max_packet_size_out = PROTOCOL_MAX_PACKET_SIZE
        self.session_expiry_requested = 0
        self.auth_method: str | None = None
        self.auth_state: Any = None
        self.pending_connect: Any = None
        self.client_info: ClientInfo | None = None
        self.deferred = 0  # PUBLISHes waiting for a storage commit before their ack

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        listener = self.listener
        self.peer = listener.peer_name(transport)
        broker = self.broker
        broker.stats.connections_total += 1
        rate = broker.connection_rate
        if rate.enabled and listener.config.type != "unix":
            host = peer_host(self.peer)
            now = time.monotonic()
            if not rate.admit(host, now):
                # [quotas] max_connection_rate: closed before reading anything; one log line
                # per address per interval, however many sockets a flood opens.
                broker.stats.connections_rate_limited += 1
                refused = rate.refused(host, now)
                if refused:
                    log.warning("connection refused: connection rate exceeded (%d refused "
                                "from this address since the last report; reported at most "
                                "every %d s)", refused, REFUSAL_LOG_INTERVAL,
                                extra={"peer": self.peer, "listener": listener.name})
                self.closing = True
                self.close_reason = "connection rate exceeded"
                transport.close()
                return
        if len(broker.connections) >= broker.limits.max_connections:
            log.warning("connection refused: max_connections reached",
                        extra={"peer": self.peer, "listener": listener.name})
            self.closing = True
            self.close_reason = "max_connections reached"
            transport.close()
            return
        if not listener.admit(self):
            log.warning("connection refused: the listener's max_connections reached",
                        extra={"peer": self.peer, "listener": listener.name})
            self.closing = True
            self.close_reason = "listener max_connections reached"
            transport.close()
            return
        self.certificate_identity = listener.certificate_identity(transport)
        broker.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        broker = self.broker
        broker.connections.discard(self)
        broker.throttled.pop(self, None)
        broker.lingering.pop(self, None)
        if not self.closing:
            self.closing = True
            self.close_reason = f"connection lost: {exc}" if exc else "closed by client"
            broker.client_gone(self, publish_will=True, now=time.monotonic())
        self.out.clear()
        if self.client_info is not None:
            for hook in broker.hooks.on_disconnected:
                hook(self.client_info, self.close_reason)
        log.info("connection closed", extra={
            "client_id": self.client_id, "peer": self.peer,
            "protocol": self.protocol_version or None, "reason": self.close_reason})

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False

    # -- output ----------------------------------------------------------------------

    def send(self, packet: Any) -> None:
        self.write(encode(packet, self.protocol_version or 4))

    def ack(self, packet_type: int, packet_id: int, reason_code: int = 0) -> None:
        """PUBACK, PUBREC, PUBREL or PUBCOMP (the reason code goes only to 5.0 clients)."""
        self.write(encode_ack(packet_type, packet_id, reason_code, self.protocol_version))

    def write_now(self, data: bytes) -> None:
        """Write one packet at once, ahead of anything held (acknowledgements of committed
        PUBLISHes, PINGRESP)."""
        self.write_output([data])

    def transport_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport else 0

    # -- closing ---------------------------------------------------------------------

    def disconnect(self, reason_code: int, reason: str, publish_will: bool) -> None:
        """Server-initiated close: DISCONNECT with a reason code to a 5.0 client, then a
        graceful close (`_linger`); a 3.1.1 client, which has no DISCONNECT to read, is closed
        at once."""
        if self.closing:
            return
        told = self.protocol_version == 5 and self.connected
        if told:
            self.send(Disconnect(reason_code))
        self._close(reason, publish_will, linger=told)

    def abort(self, reason: str) -> None:
        """Close without a word (3.1.1 errors, sockets that never sent CONNECT)."""
        if not self.closing:
            self._close(reason, publish_will=True)

    def _close(self, reason: str, publish_will: bool, linger: bool = False) -> None:
        """Stop handling the connection: nothing more is read or handled, the session is
        detached and its will decided now. With `linger` (a DISCONNECT or a refusing CONNACK
        was just written) the socket is closed gracefully (`_linger`), else at once."""
        self.closing = True
        self.close_reason = reason
        self.flush()
        if linger:
            self._linger()
        elif self.transport is not None:
            self.transport.close()
        self.broker.client_gone(self, publish_will, time.monotonic())

    def _linger(self) -> None:
        """Close gracefully after a DISCONNECT or a refusing CONNACK, so that a client still
        writing (the PUBRELs of its window, say) reads the reason code: a socket closed with
        unread input, or receiving input once closed, answers with a reset, and a client whose
        write fails gives up on what it had not read yet. The write side is shut after the
        packet (TCP and Unix: a FIN; WebSocket: a Close frame; TLS: close_notify), and what
        the client still sends is read and discarded (`data_received` ignores a closing
        connection) until it closes, or for LINGER_TIMEOUT seconds: then the broker's sweep
        aborts the socket. The transport leaves the connection, so nothing more is written."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.transport = None
        if not transport.is_reading():
            transport.resume_reading()  # paused for a throttle or an answer delayed by backoff
        if transport.can_write_eof():
            transport.write_eof()
        else:
            # TLS: close() sends close_notify after the data, then reads (and discards) until
            # the client's close_notify or EOF.
            transport.close()
        self.broker.lingering[self] = (time.monotonic() + LINGER_TIMEOUT, transport)

    def shutdown(self) -> None:
        """The broker is stopping [SIGTERM]: DISCONNECT 0x8B to 5.0 clients."""
        if self.closing:
            return
        told = self.protocol_version == 5 and self.connected
        if told:
            self.send(Disconnect(ReasonCode.SERVER_SHUTTING_DOWN))
        self._close("server shutting down", publish_will=False, linger=told)

    def protocol_error(self, reason_code: int, message: str) -> None:
        self.broker.stats.protocol_errors += 1
        log.warning("protocol error: %s", message, extra={
            "client_id": self.client_id, "peer": self.peer,
            "protocol": self.protocol_version or None, "reason": reason_name(reason_code)})
        if self.protocol_version == 5 and self.connected:
            self.disconnect(reason_code, f"{reason_name(reason_code)}: {message}",
                            publish_will=True)
        else:
            self.abort(f"{reason_name(reason_code)}: {message}")

    def codec_error(self, error: MQTTError) -> None:
        code = error.reason_code
        if not self.connected:
            # An error in CONNECT itself: a CONNACK can tell the client what was wrong.
            version = self.framer.protocol_version
            connack: int | None = None
            if code == ReasonCode.UNSUPPORTED_PROTOCOL_VERSION:
                # [MQTT-3.1.2-2] 3.1.1 return code 0x01 / 5.0 reason code 0x84.
                self.protocol_version = 4 if version != 5 else 5
                connack = connack_code_for(self.protocol_version, code)
            elif version == 5:
                self.protocol_version = 5
                connack = code
            self.broker.stats.protocol_errors += 1
            log.warning("bad CONNECT: %s", error, extra={"peer": self.peer,
                                                        "reason": reason_name(code)})
            if connack is None:
                self.abort(f"{reason_name(code)}: {error}")
            else:
                self.send(Connack(False, connack))
                self._close(f"{reason_name(code)}: {error}", publish_will=True, linger=True)
            return
        self.protocol_error(code, str(error))

    # -- CONNECT -----------------------------------------------------------------------

    def refuse_connect(self, reason_code: int, why: str) -> None:
        """CONNACK with the reason code, then a graceful close [MQTT-3.2.2-7]; a 3.1.1
        refusal that no return code fits is closed without a CONNACK [MQTT-3.2.2-6]."""
        code = connack_code_for(self.protocol_version, reason_code)
        if code is None:
            why += " (closed without CONNACK: no 3.1.1 return code says it)"
        log.info("connection refused: %s", why, extra={
            "client_id": self.client_id, "peer": self.peer, "protocol": self.protocol_version,
            "username": self.username, "reason": reason_name(reason_code)})
        if code is None:
            self.abort(f"CONNECT refused: {why}")
            return
        self.send(Connack(False, code))
        self._close(f"CONNECT refused: {why}", publish_will=True, linger=True)

    def refuse_auth(self, reason_code: int, why: str) -> None:
        """A CONNECT refused for its credentials: logged, audited (on_auth_failed) and, when
        its address failed before, answered only after a delay that doubles with each failure
        (a timer, not a sleep: the broker serves everyone else meanwhile)."""
        broker = self.broker
        info = self.client_info
        if info is None:
            info = self.client_info = ClientInfo(
                self.client_id or "", self.username, self.peer, self.protocol_version,
                self.listener.name, self.certificate_identity, self.listener.config)
        for hook in broker.hooks.on_auth_failed:
            hook(info, reason_code, why)
        delay = 0.0
        if reason_code in AUTH_FAILURES:
            delay = broker.auth_backoff.failed(peer_host(self.peer), time.monotonic())
        if delay <= 0 or self.transport is None or broker.loop is None:
            self.refuse_connect(reason_code, why)
            return
        log.info("connection refused: %s (answered in %.2f s: earlier failures from this "
                 "address)", why, delay, extra={
                     "client_id": self.client_id, "peer": self.peer, "username": self.username,
                     "protocol": self.protocol_version, "reason": reason_name(reason_code)})
        self.closing = True  # nothing more is read or handled
        self.close_reason = f"CONNECT refused: {why}"
        self.transport.pause_reading()
        self.framer.discard()  # nor kept: what the client sent after its CONNECT
        broker.loop.call_later(delay, self._refuse_late, reason_code)

    def _refuse_late(self, reason_code: int) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        code = connack_code_for(self.protocol_version, reason_code)
        if code is None:  # [MQTT-3.2.2-6]
            transport.close()
            return
        self.write_output([encode(Connack(False, code), self.protocol_version)])
        self._linger()

    def handle_connect(self, p: Any) -> None:
        if self.connected or self.pending_connect is not None or self.client_info is not None:
            # [MQTT-3.1.0-2] a second CONNECT is a protocol error (also while the first one
            # is being authenticated).
            self.protocol_error(ReasonCode.PROTOCOL_ERROR, "second CONNECT")
            return
        broker = self.broker
        limits = broker.limits
        sessions_cfg = broker.config.sessions
        v5 = p.protocol_version == 5
        self.protocol_version = p.protocol_version
        self.framer.protocol_version = p.protocol_version
        props = p.properties or {}
        client_id = p.client_id
        self.client_id = client_id or None
        self.username = p.username

        listener = self.listener
        if p.protocol_version not in listener.protocol_versions:
            # [MQTT-3.1.2-2] a protocol level the listener does not accept: 0x01 / 0x84.
            self.refuse_connect(ReasonCode.UNSUPPORTED_PROTOCOL_VERSION,
                                f"protocol level {p.protocol_version} not accepted on "
                                f"listener {listener.name}")
            return
        if listener.use_identity_as_username:
            if self.certificate_identity is None:
                self.refuse_auth(ReasonCode.NOT_AUTHORIZED,
                                 "no client certificate identity to use as username")
                return
            self.username = self.certificate_identity
        if self.username is None and not listener.allow_anonymous:
            self.refuse_auth(ReasonCode.NOT_AUTHORIZED,
                             f"anonymous clients not allowed on listener {listener.name}")
            return

        if len(client_id) > sessions_cfg.max_client_id_length:
            self.refuse_connect(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, "client id too long")
            return
        if not client_id:
            if not v5 and not p.clean_start:
                # [MQTT-3.1.3-8] a zero-length client id needs clean session 1 in 3.1.1.
                self.refuse_connect(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
                                    "zero-length client id with clean session 0")
                return
            if not sessions_cfg.allow_zero_length_client_id:
                self.refuse_connect(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
                                    "zero-length client id not allowed")
                return
        will = p.will
        if will is not None:
            if will.qos > limits.max_qos:
                self.refuse_connect(ReasonCode.QOS_NOT_SUPPORTED, "will QoS above maximum")
                return
            if will.retain and not limits.retain_available:
                self.refuse_connect(ReasonCode.RETAIN_NOT_SUPPORTED, "will retain not available")
                return
            if not valid_topic_name(will.topic):
                self.refuse_connect(ReasonCode.TOPIC_NAME_INVALID, "invalid will topic")
                return
            if not broker.topic_limits.allows(will.topic):
                self.refuse_connect(ReasonCode.TOPIC_NAME_INVALID,
                                    "will topic over max_topic_levels or max_topic_length")
                return

        method = props.get(AUTHENTICATION_METHOD)
        client_info = ClientInfo(client_id, self.username, self.peer, p.protocol_version,
                                 listener.name, self.certificate_identity, listener.config)
        self.client_info = client_info
        if method is not None:
            hook = broker.hooks.auth_method_hooks.get(method)
            if hook is None:
                self.refuse_connect(ReasonCode.BAD_AUTHENTICATION_METHOD,
                                    f"unknown authentication method {method!r}")
                return
            self.auth_method = method
            result = hook.enhanced_auth(client_info, method, props.get(AUTHENTICATION_DATA), None)
            self.auth_state = result.state
            if result.reason_code == ReasonCode.CONTINUE_AUTHENTICATION:
                self.pending_connect = p
                auth_props: dict[int, Any] = {AUTHENTICATION_METHOD: method}
                if result.data is not None:
                    auth_props[AUTHENTICATION_DATA] = result.data
                self.send(Auth(ReasonCode.CONTINUE_AUTHENTICATION, auth_props))
                self.framer.resume()  # the client's AUTH (or DISCONNECT) comes next
                return
            if result.reason_code != ReasonCode.SUCCESS:
                self.refuse_auth(result.reason_code, f"{method} authentication failed")
                return
            # Authenticated by the method: the authenticate hooks are not asked.
            self.accept_authenticated(p, result)
            return
        self.authenticate(p, 0)

    def authenticate(self, p: Any, start: int, accepted: bool = False) -> None:
        """Ask the authenticate hooks from `start` on: each accepts (0), refuses (a reason
        code) or has no say (None). The client is admitted when none refused and one accepted
        (`accepted`: one before `start` did), or when its listener admits clients no source
        vouches for (`allow_anonymous`) or its certificate names it
        (`use_identity_as_username`). A hook that answers with an awaitable (a password hash
        in a thread, a webhook) is waited for without blocking the loop: reading stops until
        it answers, then the rest follow."""
        checks = self.broker.hooks.authenticate
        info = self.client_info
        for i in range(start, len(checks)):
            code = checks[i](info, p.password)
            if code is None:
                continue
            if not isinstance(code, int):
                future = asyncio.ensure_future(code)
                try:
                    # What the client sent after its CONNECT stays held (Framer) until this
                    # hook answers: within the limit before the CONNACK.
                    self.framer.check_held()
                except MQTTError as error:
                    future.cancel()
                    self.codec_error(error)
                    return
                if self.transport is not None:
                    self.transport.pause_reading()
                future.add_done_callback(
                    lambda f, i=i, a=accepted: self._authenticated(  # type: ignore[misc]
                        p, i, f, a))
                return
            if code:
                self.refuse_auth(code, "authentication failed")
                return
            accepted = True
        listener = self.listener
        if not (accepted or listener.allow_anonymous or listener.use_identity_as_username):
            # Nothing vouched for the username (and password) the client gave: no source
            # applies to this listener, or none accepts such a CONNECT (e.g. a SCRAM-only
            # listener and a CONNECT without Authentication Method). Mosquitto 2 likewise.
            self.refuse_auth(ReasonCode.NOT_AUTHORIZED,
                             f"no authentication source accepted the client on listener "
                             f"{listener.name}")
            return
        self._admit(p)

    def _authenticated(self, p: Any, index: int, future: asyncio.Future,
                       accepted: bool) -> None:
        if self.closing:
            return  # the client left while it was being authenticated
        try:
            code = future.result()
        except Exception:
            log.exception("authentication hook failed", extra={
                "client_id": self.client_id, "peer": self.peer})
            code = ReasonCode.UNSPECIFIED_ERROR
        if code:
            self.refuse_auth(code, "authentication failed")
            return
        if self.transport is not None:
            self.transport.resume_reading()
        self.authenticate(p, index + 1, accepted or code == 0)
        if not self.closing and not self.framer.held:
            # Accepted: the packets the client sent ahead of the CONNACK, held meanwhile,
            # are handled now, in order [MQTT-3.1.4-5].
            self.data_received(b"")

    def _admit(self, p: Any, auth_data: bytes | None = None) -> None:
        """The CONNECT passed authentication: accept it (accept_connect) and let the framer
        read on at the normal packet size limit; what the client sent after the CONNECT is
        handled next (by the packet loop, or `_authenticated` after a hook that waited)."""
        self.accept_connect(p, auth_data)
        if self.connected:
            self.framer.accept(self.broker.limits.max_packet_size)

    def accept_authenticated(self, p: Any, result: AuthResult) -> None:
        """Enhanced authentication succeeded: the method's identity becomes the username,
        and its last data (e.g. SCRAM's server-final-message) goes in the CONNACK."""
        if result.username is not None:
            self.username = result.username
        self._admit(p, result.data)

    def accept_connect(self, p: Any, auth_data: bytes | None = None) -> None:
        broker = self.broker
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
        self.client_id = client_id
        listener = self.listener
        info = ClientInfo(client_id, self.username, self.peer, p.protocol_version,
                          listener.name, self.certificate_identity, listener.config)
        if p.will is not None and broker.hooks.check_acl and not broker.hooks.allowed(
                info, p.will.topic, hooks.PUBLISH):
            # The will is published on the client's behalf: it needs the client's right to
            # publish there (as in Mosquitto, the CONNECT is refused: 0x87 / 0x05).
            self.refuse_connect(ReasonCode.NOT_AUTHORIZED, "will topic not authorised")
            return

        keepalive = p.keepalive
        max_keepalive = limits.max_keepalive
        if v5 and (keepalive > max_keepalive or (keepalive == 0 and max_keepalive < 65535)):
            keepalive = max_keepalive
            connack_props[SERVER_KEEP_ALIVE] = keepalive  # [MQTT-3.2.2-21]
        self.keepalive = keepalive

        if v5:
            requested = props.get(SESSION_EXPIRY_INTERVAL, 0)
            self.session_expiry_requested = requested
            granted = min(requested, sessions_cfg.max_session_expiry_interval)
            if granted != requested:
                connack_props[SESSION_EXPIRY_INTERVAL] = granted
            expiry: float = NEVER if granted == SESSION_EXPIRY_NEVER else granted
            send_window = props.get(RECEIVE_MAXIMUM, DEFAULT_RECEIVE_MAXIMUM)
            self.max_packet_size_out = props.get(MAXIMUM_PACKET_SIZE, PROTOCOL_MAX_PACKET_SIZE)
            alias_max = props.get(TOPIC_ALIAS_MAXIMUM, 0)
            if alias_max:
                self.topic_alias_maximum_out = alias_max
                self.topic_aliases_out = {}
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
            if self.auth_method is not None:
                connack_props[AUTHENTICATION_METHOD] = self.auth_method
                if auth_data is not None:
                    connack_props[AUTHENTICATION_DATA] = auth_data
            if not self._connack_fits(connack_props):
                return

        previous = broker.sessions.get(client_id)
        broker.remember_identity(info, previous is not None and bool(previous.subscriptions))
        session, present = broker.open_session(self, client_id, p.clean_start,
                                               p.protocol_version, now)
        self.session = session
        self.connected = True
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
        self.send(Connack(present and p.protocol_version >= 4, 0, connack_props or None))
        if present:
            session.resend_inflight(now)
            session.drain(now)
        self.client_info = info
        for hook in broker.hooks.on_connected:
            hook(info)
        log.info("client connected", extra={
            "client_id": client_id, "peer": self.peer, "protocol": p.protocol_version,
            "clean_start": p.clean_start, "keepalive": keepalive,
            "session_present": present, "username": self.username,
            "listener": listener.name})

    def _connack_fits(self, connack_props: dict[int, Any]) -> bool:
        """Keep the CONNACK within the client's Maximum Packet Size [MQTT-3.1.2-24]: leave
        out what the server may leave out (a Reason String or User Property [MQTT-3.2.2-19,
        MQTT-3.2.2-20]; Response Information, which it MAY return [3.1.2.11.6]). If the rest is
        still too large (the limits the client must know, an assigned client id), the CONNECT
        is refused with a bare CONNACK 0x83 (implementation specific error: "valid but not
        accepted by this Server"), or closed without one below its 5 bytes; returns False."""
        limit = self.max_packet_size_out
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
                "client_id": self.client_id, "peer": self.peer, "protocol": 5})
            self.abort(f"CONNECT refused: {why}")
        else:
            self.refuse_connect(ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR, why)
        return False

    # -- PUBLISH and its acknowledgements ----------------------------------------------

    # The refusals of a PUBLISH (payload format, topic limits, $SYS, ACL, a hook, the
    # publish rate, storage) and the publish-rate throttle are compiled next to the PUBLISH
    # handler: hbroker_ext/inbound.pyx. `refuse_unstored` is a method of ConnectionCore.

    def end_throttle(self, now: float) -> None:
        if self.closing or self.transport is None:
            return
        self.last_received = now  # its keep alive counts from here
        self.transport.resume_reading()

    # Which acknowledgements are protocol errors and which are tolerated:
    # hbroker_ext/session.pyx, above Session.on_puback.

    def handle_pubrec(self, p: Any) -> None:
        session = self.session
        assert session is not None
        outcome = session.on_pubrec(p.packet_id, p.reason_code)
        if outcome == ACK_WRONG_TYPE:
            self.protocol_error(ReasonCode.PROTOCOL_ERROR,
                                f"PUBREC for QoS 1 message {p.packet_id}")
        elif p.reason_code >= 0x80:
            # An error ends the exchange (MQTT 5.0 section 4.3.3): no PUBREL, known packet
            # id or not. A freed id opens the window for what waits.
            if outcome == ACK_ACCEPTED:
                session.drain(self.last_received)
        elif outcome == ACK_ACCEPTED:
            self.ack(PUBREL, p.packet_id)
        else:
            self.ack(PUBREL, p.packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND)

    def handle_pubrel(self, p: Any) -> None:
        session = self.session
        assert session is not None
        if session.release_qos2(p.packet_id):
            self.ack(PUBCOMP, p.packet_id)
        else:
            self.ack(PUBCOMP, p.packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND)

    def handle_pubcomp(self, p: Any) -> None:
        assert self.session is not None
        if self.session.on_pubcomp(p.packet_id, self.last_received) == ACK_WRONG_TYPE:
            self.protocol_error(ReasonCode.PROTOCOL_ERROR, f"PUBCOMP for message "
                                f"{p.packet_id}, which awaits PUBACK or PUBREC")

    # -- SUBSCRIBE / UNSUBSCRIBE ---------------------------------------------------------

    def handle_subscribe(self, p: Any) -> None:
        broker = self.broker
        limits = broker.limits
        session = self.session
        assert session is not None
        v5 = self.protocol_version == 5
        props = p.properties or {}
        sub_id = props.get(SUBSCRIPTION_IDENTIFIER, 0)
        if sub_id and not limits.subscription_identifier_available:
            self.protocol_error(ReasonCode.SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED,
                                "subscription identifiers not supported")
            return
        failure = ReasonCode.UNSPECIFIED_ERROR  # the only 3.1.1 failure code
        codes: list[int] = []
        granted: list[tuple[str, SubscriptionOptions, bool]] = []
        acl = broker.hooks.check_acl
        topic_limits = broker.topic_limits
        max_subscriptions = broker.config.quotas.max_subscriptions
        for s in p.subscriptions:
            topic_filter = s.topic_filter
            if not valid_topic_filter(topic_filter):
                codes.append(ReasonCode.TOPIC_FILTER_INVALID if v5 else failure)
                continue
            group, inner = parse_shared(topic_filter)
            if len(topic_filter) > topic_limits.max_length or not topic_limits.allows(inner):
                # [quotas] max_topic_length (the whole filter), max_topic_levels (without
                # the $share/GROUP/ prefix).
                codes.append(ReasonCode.TOPIC_FILTER_INVALID if v5 else failure)
                continue
            if group is not None:
                if not limits.shared_subscription_available:
                    codes.append(ReasonCode.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED if v5 else failure)
                    continue
                if s.no_local:
                    # [MQTT-3.8.3-4] No Local on a shared subscription is a protocol error.
                    self.protocol_error(ReasonCode.PROTOCOL_ERROR,
                                        "No Local on a shared subscription")
                    return
            if not limits.wildcard_subscription_available and ("+" in inner or "#" in inner):
                codes.append(ReasonCode.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED if v5 else failure)
                continue
            if acl and not broker.hooks.allowed(self.client_info, topic_filter, hooks.SUBSCRIBE):
                codes.append(ReasonCode.NOT_AUTHORIZED if v5 else failure)
                continue
            if max_subscriptions and topic_filter not in session.subscriptions \
                    and len(session.subscriptions) >= max_subscriptions:
                # [quotas] max_subscriptions; replacing a subscription always succeeds.
                codes.append(ReasonCode.QUOTA_EXCEEDED if v5 else failure)
                continue
            qos = min(s.qos, limits.max_qos)
            opts = SubscriptionOptions(qos, s.no_local, s.retain_as_published,
                                       s.retain_handling, sub_id)
            new = broker.subscribe(session, topic_filter, opts)
            granted.append((topic_filter, opts, new))
            codes.append(qos)
        self.send(Suback(p.packet_id, codes))
        log.debug("subscribed", extra={
            "client_id": self.client_id, "filters": ",".join(f for f, _, _ in granted),
            "codes": ",".join(f"{c:#04x}" for c in codes)})
        if not limits.retain_available:
            return
        now = self.last_received
        for topic_filter, opts, new in granted:
            if topic_filter.startswith("$share/"):
                continue  # retained messages are not sent to shared subscriptions [4.8.2]
            rh = opts.retain_handling
            if rh == 0 or (rh == 1 and new):
                broker.send_retained(session, topic_filter, opts, now)

    def handle_unsubscribe(self, p: Any) -> None:
        session = self.session
        assert session is not None
        v5 = self.protocol_version == 5
        codes = []
        for topic_filter in p.topic_filters:
            if not valid_topic_filter(topic_filter):
                # Filters are validated as in SUBSCRIBE [MQTT-4.7.1-2, -3, MQTT-4.7.3-1]. 5.0
                # answers 0x8F for that filter, as SUBACK does. A 3.1.1 UNSUBACK has no codes,
                # and nothing states otherwise for UNSUBSCRIBE (SUBACK has its 0x80): the
                # protocol violation closes the connection [MQTT-4.8.0-1].
                if not v5:
                    self.protocol_error(ReasonCode.TOPIC_FILTER_INVALID,
                                        f"invalid topic filter {topic_filter!r} in UNSUBSCRIBE")
                    return
                codes.append(ReasonCode.TOPIC_FILTER_INVALID)
                continue
            existed = self.broker.unsubscribe(session, topic_filter)
            codes.append(0 if existed else ReasonCode.NO_SUBSCRIPTION_EXISTED)
        self.send(Unsuback(p.packet_id, codes if v5 else None))

    # -- the rest ----------------------------------------------------------------------

    def handle_pingreq(self, p: Any) -> None:
        self.write_now(encode(Pingresp(), self.protocol_version))

    def handle_disconnect(self, p: Any) -> None:
        session = self.session
        props = p.properties or {}
        if session is not None and SESSION_EXPIRY_INTERVAL in props:
            requested = props[SESSION_EXPIRY_INTERVAL]
            if self.session_expiry_requested == 0 and requested:
                # [MQTT-3.14.2-2] cannot turn a session without expiry into one with it.
                self.protocol_error(ReasonCode.PROTOCOL_ERROR,
                                    "session expiry set in DISCONNECT after 0 in CONNECT")
                return
            granted = min(requested, self.broker.config.sessions.max_session_expiry_interval)
            session.expiry_interval = NEVER if granted == SESSION_EXPIRY_NEVER else granted
        # [MQTT-3.14.4-3] the will is discarded, except for reason 0x04.
        publish_will = p.reason_code == ReasonCode.DISCONNECT_WITH_WILL_MESSAGE
        self._close(f"client disconnected ({reason_name(p.reason_code)})", publish_will)

    def handle_auth(self, p: Any) -> None:
        props = p.properties or {}
        method = props.get(AUTHENTICATION_METHOD)
        if self.auth_method is None or method != self.auth_method:
            if self.auth_method is None and method is not None:
                self.protocol_error(ReasonCode.BAD_AUTHENTICATION_METHOD,
                                    f"unknown authentication method {method!r}")
            else:
                self.protocol_error(ReasonCode.PROTOCOL_ERROR, "AUTH without a matching method")
            return
        hook = self.broker.hooks.auth_method_hooks.get(method)
        if hook is None:  # the method was switched off by a reload
            self.protocol_error(ReasonCode.BAD_AUTHENTICATION_METHOD,
                                f"authentication method {method!r} no longer offered")
            return
        assert self.client_info is not None
        result = hook.enhanced_auth(self.client_info, method, props.get(AUTHENTICATION_DATA),
                                    self.auth_state)
        self.auth_state = result.state
        if result.reason_code == ReasonCode.CONTINUE_AUTHENTICATION:
            out: dict[int, Any] = {AUTHENTICATION_METHOD: method}
            if result.data is not None:
                out[AUTHENTICATION_DATA] = result.data
            self.send(Auth(ReasonCode.CONTINUE_AUTHENTICATION, out))
            self.framer.resume()  # before the CONNACK: the next AUTH may be read
            return
        if result.reason_code != ReasonCode.SUCCESS:
            if self.connected:
                for hook_failed in self.broker.hooks.on_auth_failed:
                    hook_failed(self.client_info, result.reason_code,
                                f"{method} re-authentication failed")
                self.protocol_error(result.reason_code, "re-authentication failed")
            else:
                self.refuse_auth(result.reason_code, f"{method} authentication failed")
            return
        if self.pending_connect is not None:
            pending, self.pending_connect = self.pending_connect, None
            self.accept_authenticated(pending, result)
        else:
            done: dict[int, Any] = {AUTHENTICATION_METHOD: method}
            if result.data is not None:
                done[AUTHENTICATION_DATA] = result.data
            self.send(Auth(ReasonCode.SUCCESS, done))


# Incoming packet type -> handler. PUBLISH and PUBACK are handled by the compiled packet loop
# (hbroker_ext.routing, handle_packets). Packets only a server sends (CONNACK, SUBACK,
# UNSUBACK, PINGRESP) are absent: receiving one is a protocol error.
_HANDLERS = {
    CONNECT: Connection.handle_connect,
    PUBREC: Connection.handle_pubrec,
    PUBREL: Connection.handle_pubrel,
    PUBCOMP: Connection.handle_pubcomp,
    SUBSCRIBE: Connection.handle_subscribe,
    UNSUBSCRIBE: Connection.handle_unsubscribe,
    PINGREQ: Connection.handle_pingreq,
    DISCONNECT: Connection.handle_disconnect,
    AUTH: Connection.handle_auth,
}
