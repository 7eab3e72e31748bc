"""In-process clients: a bridge, a rule, the control plane or the cluster layer talks to the
broker exactly as a network client does, without a socket.

    client = broker.client("rules", username="rules")
    await client.connect()
    await client.subscribe("sensors/+/temp", on_reading, qos=1)
    code = await client.publish("alerts/hot", b"41.5", qos=1)   # PUBACK's reason code
    await client.close()

An `InProcessClient` is a real `Connection` on an internal listener (`INPROCESS`, or the
ListenerConfig given) whose transport is a pair of in-memory buffers: what the client sends is
encoded by the codec and handed to `Connection.data_received`; what the broker writes is
framed by the codec's Framer and handled here (PUBLISH to the subscription's callback,
acknowledged at once; PUBACK, PUBREC, PUBCOMP, SUBACK and UNSUBACK complete the call that
waits for them). So the CONNECT goes through the usual handler (authentication hooks,
`allow_anonymous`, the session), every PUBLISH through the usual checks (ACL, topic limits,
publish quotas, hooks) and flow (Receive Maximum, QoS 2, the session's queue and inflight
window), with no code of its own on the broker's side.

Who the client is: the internal listener applies no authentication source (`auth = []`) and
admits clients without a username, so the username an in-process client gives is taken as
it is (in-process code could do anything to the broker anyway) and the ACL applies to it as
to any client. Give a ListenerConfig with `auth` sources to have it checked like a network
client's (then pass its `password`).

Cost: a message costs what it costs for a network client, less the socket: the PUBLISH is
encoded and framed once each way (a few microseconds in the compiled codec), and what the
broker writes to the client is decoded in a callback of the next loop iteration.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hbroker_ext.codec import (
    CONNACK,
    DISCONNECT,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    RECEIVE_MAXIMUM,
    SESSION_EXPIRY_INTERVAL,
    SUBACK,
    SUBSCRIPTION_IDENTIFIER,
    UNSUBACK,
    Connect,
    Disconnect,
    Framer,
    MQTTError,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Subscribe,
    Subscription,
    Unsubscribe,
    encode,
)

from hbroker.config import ListenerConfig
from hbroker.connection import Connection
from hbroker.transports import Listener

if TYPE_CHECKING:
    from hbroker.broker import Broker

log = logging.getLogger("hbroker.inprocess")

# The internal listener's settings: no authentication source applies, clients without a
# username are admitted (see the module docstring).
INPROCESS = ListenerConfig(type="tcp", name="inprocess", allow_anonymous=True, auth=())


class ConnectionRefused(Exception):
    """The broker refused the CONNECT (`reason_code`, the CONNACK's) or closed the client."""

    def __init__(self, reason_code: int, message: str = "") -> None:
        super().__init__(message or f"refused with reason code {reason_code:#04x}")
        self.reason_code = reason_code


@dataclass(frozen=True, slots=True)
class Received:
    """An application message delivered to an in-process subscription."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: dict[int, Any] | None


Callback = Callable[[Received], Awaitable[None] | None]


class _InternalListener(Listener):
    """What a Connection asks of its listener, for in-process clients."""

    __slots__ = ()

    def peer_name(self, transport: asyncio.BaseTransport) -> str:
        return f"inprocess:{transport.get_extra_info('client_id')}"

    def certificate_identity(self, transport: asyncio.BaseTransport) -> str | None:
        return None


class _Transport(asyncio.Transport):
    """The broker's side of an in-process client: writes go to the client, reading is the
    client's sending (paused while the connection is throttled)."""

    def __init__(self, client: InProcessClient) -> None:
        super().__init__()
        self.client = client
        self.closing = False
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "client_id":
            return self.client.client_id
        return default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.closing:
            self.client._received(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        if not self.closing:
            self.client._received(b"".join(list_of_data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.client._broker_closed()

    def abort(self) -> None:
        self.close()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        # The broker said goodbye (a DISCONNECT, a refusing CONNACK): the client closes.
        self.close()

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        if not self.reading:
            self.reading = True
            self.client._resume_sending()

    def is_reading(self) -> bool:
        return self.reading


class InProcessClient:
    """One MQTT client inside the broker process (see the module docstring). Use it from
    coroutines on the broker's event loop."""

    def __init__(self, broker: Broker, client_id: str, username: str | None = None,
                 password: bytes | None = None, *, clean_start: bool = True,
                 session_expiry: int = 0, protocol_version: int = 5, keepalive: int = 0,
                 listener: ListenerConfig | None = None) -> None:
        self.broker = broker
        self.client_id = client_id
        self.username = username
        self.password = password
        self.clean_start = clean_start
        self.session_expiry = session_expiry
        self.protocol_version = protocol_version
        self.keepalive = keepalive
        self.listener = _InternalListener(listener or INPROCESS)
        self.connection: Connection | None = None
        self.session_present = False
        self.closed = False
        self._transport: _Transport | None = None
        self._framer = Framer(protocol_version=protocol_version)
        self._inbox: list[bytes] = []
        self._inbox_scheduled = False
        self._outbox: list[bytes] = []  # held while the broker does not read (throttled)
        self._connack: asyncio.Future | None = None
        self._waiting: dict[tuple[int, int], asyncio.Future] = {}  # (packet type, id)
        self._next_id = 1
        self._window: asyncio.Semaphore | None = None
        self._subscriptions: dict[str, tuple[int, Callback]] = {}  # filter -> (id, callback)
        self._callbacks: dict[int, Callback] = {}  # subscription identifier -> callback
        self._next_sub_id = 1

    # -- connecting and closing ----------------------------------------------------------

    async def connect(self) -> bool:
        """CONNECT through the broker's usual handler; returns Session Present. Raises
        ConnectionRefused with the CONNACK's reason code when refused."""
        if self.connection is not None:
            raise RuntimeError("already connected")
        loop = asyncio.get_running_loop()
        self._connack = loop.create_future()
        conn = self.connection = Connection(self.broker, self.listener)
        self._transport = _Transport(self)
        conn.connection_made(self._transport)
        props: dict[int, Any] = {}
        if self.protocol_version == 5 and self.session_expiry:
            props[SESSION_EXPIRY_INTERVAL] = self.session_expiry
        self._send(Connect(self.client_id, self.protocol_version, "MQTT", self.clean_start,
                           self.keepalive, self.username, self.password, None,
                           props or None))
        connack = await self._connack
        if connack.reason_code:
            raise ConnectionRefused(connack.reason_code)
        self.session_present = connack.session_present
        receive_maximum = (connack.properties or {}).get(RECEIVE_MAXIMUM, 65535)
        self._window = asyncio.Semaphore(receive_maximum)
        return self.session_present

    async def close(self) -> None:
        """DISCONNECT (normal: no will) and close; what waits for the broker fails."""
        if self.closed or self.connection is None:
            self._closed(ConnectionRefused(0, "closed"))
            return
        self._send(Disconnect(0))
        self._closed(ConnectionRefused(0, "closed"))

    # -- publish -----------------------------------------------------------------------

    async def publish(self, topic: str, payload: bytes | str = b"", qos: int = 0,
                      retain: bool = False, properties: dict[int, Any] | None = None) -> int:
        """Publish; returns once the broker acknowledged (QoS 1: PUBACK, QoS 2: PUBCOMP, or a
        PUBREC with an error) with the acknowledgement's reason code (0 Success, 0x10 No
        matching subscribers, >= 0x80 refused, e.g. 0x87 Not authorized). QoS 0 returns 0
        once handed to the broker: a refused QoS 0 message is dropped without a word."""
        acknowledged = await self.send(topic, payload, qos, retain, properties)
        return 0 if acknowledged is None else await acknowledged

    async def send(self, topic: str, payload: bytes | str = b"", qos: int = 0,
                   retain: bool = False, properties: dict[int, Any] | None = None
                   ) -> asyncio.Future[int] | None:
        """Hand a PUBLISH to the broker as soon as the broker's Receive Maximum allows, without
        waiting for its acknowledgement: returns, once it is handed over, a future of the
        code `publish` would return (None for QoS 0). Messages sent one after another from
        one task reach the broker in that order, whatever their QoS (a relay that must keep
        the order of what it forwards, e.g. the cluster layer, sends this way)."""
        self._check_open()
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        if not qos:
            self._send(Publish(topic, data, 0, retain, False, 0, properties))
            return None
        window = self._window
        assert window is not None
        await window.acquire()  # the broker's Receive Maximum
        try:
            self._check_open()
        except BaseException:
            window.release()
            raise
        pid = self._packet_id()
        ack = self._expect(PUBACK if qos == 1 else PUBREC, pid)
        self._send(Publish(topic, data, qos, retain, False, pid, properties))
        return asyncio.ensure_future(self._acknowledged(ack, qos, pid))

    async def _acknowledged(self, ack: asyncio.Future, qos: int, pid: int) -> int:
        """The rest of a QoS 1/2 flow `send` began; the window's place is kept until then."""
        assert self._window is not None
        try:
            if qos == 1:
                return (await ack).reason_code
            rec = await ack
            if rec.reason_code >= 0x80:
                return rec.reason_code
            comp = self._expect(PUBCOMP, pid)
            self._send(Pubrel(pid))
            await comp
            return rec.reason_code
        finally:
            self._window.release()

    # -- subscribe ---------------------------------------------------------------------

    async def subscribe(self, topic_filter: str, callback: Callback, qos: int = 0, *,
                        no_local: bool = False, retain_as_published: bool = False,
                        retain_handling: int = 0) -> int:
        """Subscribe; `callback(Received)` is called for every message the subscription
        delivers (a coroutine function's result is scheduled as a task). Returns the SUBACK's
        code: the granted QoS, or >= 0x80 refused (0x87 Not authorized by the ACL)."""
        self._check_open()
        sub_id = self._next_sub_id
        self._next_sub_id += 1
        props = {SUBSCRIPTION_IDENTIFIER: sub_id} if self.protocol_version == 5 else None
        pid = self._packet_id()
        suback = self._expect(SUBACK, pid)
        self._send(Subscribe(pid, [Subscription(topic_filter, qos, no_local,
                                                retain_as_published, retain_handling)],
                             props))
        code = (await suback).reason_codes[0]
        if code < 0x80:
            old = self._subscriptions.get(topic_filter)
            if old is not None:
                self._callbacks.pop(old[0], None)
            self._subscriptions[topic_filter] = (sub_id, callback)
            self._callbacks[sub_id] = callback
        return code

    async def unsubscribe(self, topic_filter: str) -> int:
        """Unsubscribe; returns the UNSUBACK's code (0, 0x11 No subscription existed; 3.1.1
        says nothing: 0)."""
        self._check_open()
        pid = self._packet_id()
        unsuback = self._expect(UNSUBACK, pid)
        self._send(Unsubscribe(pid, [topic_filter]))
        codes = (await unsuback).reason_codes
        old = self._subscriptions.pop(topic_filter, None)
        if old is not None:
            self._callbacks.pop(old[0], None)
        return codes[0] if codes else 0

    # -- to the broker -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed or self.connection is None:
            raise ConnectionRefused(0, "the in-process client is not connected")

    def _packet_id(self) -> int:
        for _ in range(65535):
            pid = self._next_id
            self._next_id = pid % 65535 + 1
            if not any(key[1] == pid for key in self._waiting):
                return pid
        raise RuntimeError("no packet identifier free")

    def _expect(self, packet_type: int, packet_id: int) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self._waiting[(packet_type, packet_id)] = future
        return future

    def _send(self, packet: Any) -> None:
        data = encode(packet, self.protocol_version)
        transport = self._transport
        if transport is not None and not transport.reading:
            self._outbox.append(data)  # the broker stopped reading: TCP would hold it too
            return
        self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        conn = self.connection
        if conn is not None and not self.closed:
            conn.data_received(data)

    def _resume_sending(self) -> None:
        outbox, self._outbox = self._outbox, []
        for data in outbox:
            if self._transport is not None and not self._transport.reading:
                self._outbox.append(data)
            else:
                self._deliver(data)

    # -- from the broker -----------------------------------------------------------------

    def _received(self, data: bytes) -> None:
        """The broker wrote: handled in a callback of its own, never inside the broker's
        flush (a callback may publish at once)."""
        self._inbox.append(data)
        if not self._inbox_scheduled:
            self._inbox_scheduled = True
            asyncio.get_running_loop().call_soon(self._handle_inbox)

    def _handle_inbox(self) -> None:
        self._inbox_scheduled = False
        inbox, self._inbox = self._inbox, []
        try:
            packets = self._framer.feed(b"".join(inbox))
        except MQTTError as exc:
            log.error("in-process client %s: undecodable packet from the broker: %s",
                      self.client_id, exc)
            packets = exc.packets or []
        for packet in packets:
            self._handle(packet)

    def _handle(self, packet: Any) -> None:
        ptype = packet.packet_type
        if ptype == PUBLISH:
            self._handle_publish(packet)
        elif ptype == CONNACK:
            if self._connack is not None and not self._connack.done():
                self._connack.set_result(packet)
        elif ptype == PUBREL:
            self._send(Pubcomp(packet.packet_id))
        elif ptype == DISCONNECT:
            self._closed(ConnectionRefused(packet.reason_code, "disconnected by the broker"))
        else:
            future = self._waiting.pop((ptype, getattr(packet, "packet_id", 0)), None)
            if future is not None and not future.done():
                future.set_result(packet)

    def _handle_publish(self, p: Any) -> None:
        callbacks: list[Callback] = []
        sub_ids = (p.properties or {}).get(SUBSCRIPTION_IDENTIFIER)
        if sub_ids:
            for sub_id in sub_ids if isinstance(sub_ids, list) else (sub_ids,):
                callback = self._callbacks.get(sub_id)
                if callback is not None:
                    callbacks.append(callback)
        else:  # 3.1.1, or identifiers switched off: by the filters
            callbacks = [cb for f, (_, cb) in self._subscriptions.items()
                         if _matches(f, p.topic)]
        props = p.properties
        if props and SUBSCRIPTION_IDENTIFIER in props:
            props = {k: v for k, v in props.items() if k != SUBSCRIPTION_IDENTIFIER} or None
        message = Received(p.topic, p.payload, p.qos, p.retain, props)
        for callback in callbacks:
            try:
                result = callback(message)
                if asyncio.iscoroutine(result):
                    asyncio.ensure_future(result)
            except Exception:
                log.exception("in-process client %s: subscription callback failed",
                              self.client_id)
        if p.qos == 1:
            self._send(Puback(p.packet_id))
        elif p.qos == 2:
            self._send(Pubrec(p.packet_id))

    def _broker_closed(self) -> None:
        """The broker closed the connection (the transport's close): after what it wrote
        last (a DISCONNECT's or a CONNACK's reason code) is handled, scheduled before."""
        loop = asyncio.get_running_loop()
        loop.call_soon(self._closed, ConnectionRefused(0x80, "closed by the broker"))
        conn = self.connection
        if conn is not None:
            loop.call_soon(conn.connection_lost, None)

    def _closed(self, error: ConnectionRefused) -> None:
        if self.closed:
            return
        self.closed = True
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(error)
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(error)
        transport = self._transport
        if transport is not None and not transport.closing:
            # The client closed: the broker's connection is lost, as a socket's would be.
            transport.closing = True
            conn = self.connection
            if conn is not None:
                asyncio.get_running_loop().call_soon(conn.connection_lost, None)


def _matches(topic_filter: str, topic: str) -> bool:
    """Whether a topic name matches a filter (section 4.7), for 3.1.1 clients."""
    if topic_filter.startswith("$share/"):
        topic_filter = topic_filter.split("/", 2)[2] if topic_filter.count("/") >= 2 else ""
    f, t = topic_filter.split("/"), topic.split("/")
    if t[0].startswith("$") and f[0] in ("+", "#"):
        return False  # [MQTT-4.7.2-1]
    for i, part in enumerate(f):
        if part == "#":
            return True
        if i >= len(t) or (part != "+" and part != t[i]):
            return False
    return len(f) == len(t)


def client(broker: Broker, client_id: str, username: str | None = None,
           password: bytes | None = None, **options: Any) -> InProcessClient:
    """A new in-process client of `broker` (connect it with `await client.connect()`)."""
    return InProcessClient(broker, client_id, username, password, **options)
