"""One network connection: framing, the MQTT state machine, and coalesced writes.

`data_received` feeds the Cython framer, which returns every complete packet of the buffer at
once; they are handled in one loop. Writes are appended to `out` and flushed by the broker once
per loop iteration with a single `writelines`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from hbroker_ext.codec import (
    AUTH,
    CONNECT,
    DISCONNECT,
    PINGREQ,
    PUBCOMP,
    PUBREC,
    PUBREL,
    SESSION_EXPIRY_INTERVAL,
    SUBSCRIBE,
    SUBSCRIPTION_IDENTIFIER,
    UNSUBSCRIBE,
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
from hbroker_ext.topics import parse_shared, valid_topic_filter

from hbroker import connect, hooks
from hbroker.auth.backoff import peer_host
from hbroker.connect import PROTOCOL_MAX_PACKET_SIZE, SESSION_EXPIRY_NEVER
from hbroker.hooks import ClientInfo
from hbroker.quotas import REFUSAL_LOG_INTERVAL
from hbroker.reason_codes import ReasonCode, connack_code_for, reason_name
from hbroker.session import NEVER
from hbroker.subscription import SubscriptionOptions

if TYPE_CHECKING:
    from hbroker.broker import Broker
    from hbroker.config import ListenerConfig
    from hbroker.session import Session

log = logging.getLogger("hbroker.connection")

# After a DISCONNECT or a refusing CONNACK, how long (seconds) the connection still reads and
# discards what the client sends before the broker's sweep closes it (Connection._linger).
LINGER_TIMEOUT = 1.5


class ListenerSettings(Protocol):
    """What a connection asks of the listener it came through (hbroker.transports.Listener
    provides it; the listeners sit above the connection and are not imported here)."""

    name: str
    config: ListenerConfig
    protocol_versions: frozenset[int]
    allow_anonymous: bool
    use_identity_as_username: bool

    def peer_name(self, transport: asyncio.BaseTransport) -> str: ...
    def admit(self, conn: Connection) -> bool: ...
    def certificate_identity(self, transport: asyncio.BaseTransport) -> str | None: ...


class Connection(ConnectionCore, asyncio.Protocol):
    """The state the per-message path reads (broker, session, client_id, protocol_version,
    connected, closing, write_paused, last_received, out, topic aliases, max_packet_size_out,
    deferred, client_info, pending_connect) is typed in the compiled base,
    hbroker_ext.routing.ConnectionCore, with the transport, the framer, `data_received` (the
    packets of a read: PUBLISH and PUBACK compiled, CONNECT and AUTH to hbroker.connect, the
    others to the handlers below) and the output (`write`, `flush`, `take_output`,
    `write_output`)."""

    __slots__ = (
        "listener", "peer", "username", "keepalive", "opened_at",
        "close_reason", "session_expiry_requested", "auth_method", "auth_state",
        "certificate_identity",
    )

    def __init__(self, broker: Broker, listener: ListenerSettings) -> None:
        self.broker = broker
        self.listener = listener  # its settings: an hbroker.transports.Listener
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

    # -- PUBLISH and its acknowledgements ----------------------------------------------

    # The refusals of a PUBLISH (payload format, topic limits, $SYS, ACL, a hook, the
    # publish rate, storage) and the publish-rate throttle are compiled next to the PUBLISH
    # handler: hbroker_ext/inbound.pyx.

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


# Incoming packet type -> handler. PUBLISH and PUBACK are handled by the compiled packet loop
# (hbroker_ext.routing, handle_packets). Packets only a server sends (CONNACK, SUBACK,
# UNSUBACK, PINGRESP) are absent: receiving one is a protocol error.
_HANDLERS = {
    CONNECT: connect.handle_connect,
    PUBREC: Connection.handle_pubrec,
    PUBREL: Connection.handle_pubrel,
    PUBCOMP: Connection.handle_pubcomp,
    SUBSCRIBE: Connection.handle_subscribe,
    UNSUBSCRIBE: Connection.handle_unsubscribe,
    PINGREQ: Connection.handle_pingreq,
    DISCONNECT: Connection.handle_disconnect,
    AUTH: connect.handle_auth,
}
