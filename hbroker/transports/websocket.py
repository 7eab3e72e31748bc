"""MQTT over WebSocket (MQTT 5.0 section 6, 3.1.1 section 6) for `ws` and `wss` listeners.

The WebSocket protocol itself (HTTP upgrade, framing, masking, ping/pong, close handshake) is the
`websockets` package's sans-I/O `ServerProtocol`. `WebSocketProtocol` sits between the socket
and the MQTT `Connection` and hands the connection a `WebSocketTransport`, so the connection
sees the same byte stream as on TCP: the payloads of binary frames, in order, whatever the
frame boundaries (one packet may span frames, one frame may hold several packets), and what it
writes goes out as binary frames (one frame per coalesced write).

The MQTT connection exists from the first byte, so the broker's connect timeout also closes
sockets that never finish the HTTP upgrade, and listener limits apply at once.

Browsers let any page open a WebSocket to any address, and say which page did in the `Origin`
header (RFC 6455 section 10.2): an upgrade from an origin the listener does not allow
(`allowed_origins`, `OriginPolicy`) is refused with 403, so a web page open in a browser on the
gateway cannot use its loopback listener.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

log = logging.getLogger("hbroker.transports")

MQTT_SUBPROTOCOL = Subprotocol("mqtt")
# The most bytes of an HTTP upgrade request kept while it is incomplete (its lines and
# headers; websockets alone would allow 128 headers of 8 KiB). A browser's request with its
# cookies is a few KiB.
MAX_UPGRADE_REQUEST = 16384


class OriginPolicy:
    """Which web origins may open a WebSocket to a listener: its `allowed_origins`, each as
    `scheme://host[:port]`, or `*` for any; none listed: only the listener's own origin."""

    __slots__ = ("any", "allowed", "default_port")

    def __init__(self, allowed_origins: tuple[str, ...], secure: bool) -> None:
        self.any = "*" in allowed_origins
        self.allowed = {key for key in map(origin_key, allowed_origins) if key is not None}
        self.default_port = 443 if secure else 80  # of the request's Host (wss, ws)

    def allows(self, origins: list[str], host: str | None) -> bool:
        """Whether a request with these `Origin` headers and this `Host` may upgrade."""
        if not origins:
            return True  # not a browser: browsers always send Origin on a WebSocket upgrade
        if len(origins) > 1:
            return False
        if self.any:
            return True
        key = origin_key(origins[0])
        if key is None:  # "null" (a sandboxed page, a file) or not an origin
            return False
        if key in self.allowed:
            return True
        return host is not None and key[1:] == _host_port(host, self.default_port)


_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def origin_key(origin: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of a serialised origin, lowercase, the scheme's default port
    filled in; None when it is not one."""
    scheme, sep, rest = origin.strip().lower().partition("://")
    if not sep or not scheme or not rest or any(c in rest for c in "/?#@ "):
        return None
    port = _DEFAULT_PORTS.get(scheme, 0)
    hp = _host_port(rest, port)
    return None if hp is None else (scheme, *hp)


def _host_port(text: str, default_port: int) -> tuple[str, int] | None:
    """`host[:port]` (IPv6 hosts in brackets) as (lowercase host, port)."""
    text = text.strip().lower()
    if text.startswith("["):
        host, bracket, rest = text.partition("]")
        host += bracket
        if rest and not rest.startswith(":"):
            return None
        port = rest[1:]
    else:
        host, _, port = text.partition(":")
    if not host:
        return None
    if not port:
        return host, default_port
    if not port.isdigit():
        return None
    return host, int(port)


def _set_max_message_size(ws: ServerProtocol, size: int) -> None:
    """The largest WebSocket message `ws` accepts (websockets ≥ 15 names it
    `max_message_size`, earlier versions `max_size`)."""
    if hasattr(ws, "max_message_size"):
        ws.max_message_size = size
    else:
        ws.max_size = size


class WebSocketTransport(asyncio.Transport):
    """The transport an MQTT connection writes to: its bytes become binary frames."""

    __slots__ = ("_carrier",)

    def __init__(self, carrier: WebSocketProtocol) -> None:
        super().__init__()
        self._carrier = carrier

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._carrier.send_binary(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self._carrier.send_binary(b"".join(list_of_data))

    def close(self) -> None:
        self._carrier.close()

    def abort(self) -> None:
        self._carrier.abort()

    def is_closing(self) -> bool:
        return self._carrier.is_closing()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """No more writes: a WebSocket Close frame (see WebSocketProtocol.write_eof)."""
        self._carrier.write_eof()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._carrier.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:
        return self._carrier.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._carrier.raw().set_write_buffer_limits(high, low)

    def pause_reading(self) -> None:
        self._carrier.raw().pause_reading()

    def resume_reading(self) -> None:
        self._carrier.raw().resume_reading()

    def is_reading(self) -> bool:
        return self._carrier.raw().is_reading()


class WebSocketProtocol(asyncio.Protocol):
    """The socket's protocol on a `ws`/`wss` listener, carrying one MQTT connection.

    A WebSocket message is limited like an MQTT packet: to `max_size` (the broker's
    `max_packet_size`) once the MQTT connection is accepted, and before that to what its
    framer accepts before the CONNACK (`limits.max_connect_packet_size`), so a client that
    has not authenticated cannot make the broker buffer a large frame either."""

    __slots__ = ("inner", "path", "max_size", "origins", "listener", "transport", "ws",
                 "adapter", "closing", "upgraded", "received", "connecting")

    def __init__(self, inner: asyncio.Protocol, path: str, max_size: int,
                 origins: OriginPolicy | None = None, listener: str = "") -> None:
        """`origins`: who may upgrade (None: anyone); `listener`: its name, for logs."""
        self.inner = inner
        self.path = path
        self.max_size = max_size
        self.origins = origins
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.ws = ServerProtocol(subprotocols=[MQTT_SUBPROTOCOL], max_size=max_size,
                                 logger=log)
        framer = getattr(inner, "framer", None)  # hbroker.connection.Connection's
        self.connecting = framer is not None and framer.connecting
        if self.connecting:
            _set_max_message_size(self.ws, min(max_size, framer.max_packet_size))
        self.adapter = WebSocketTransport(self)
        self.closing = False
        self.upgraded = False
        self.received = 0  # bytes of the upgrade request so far

    # -- the socket's side ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.inner.connection_made(self.adapter)

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        if self.connecting:
            self._check_connected()
        if not self.upgraded:
            self.received += len(data)
            if self.received > MAX_UPGRADE_REQUEST and not self.closing:
                log.info("websocket: upgrade request over %d bytes, closing",
                         MAX_UPGRADE_REQUEST, extra={"peer": self.get_extra_info("peername")})
                self.abort()
                return
        ws.receive_data(data)
        inner = self.inner
        for event in ws.events_received():
            if self.closing:
                break
            if isinstance(event, Frame):
                opcode = event.opcode
                if opcode is Opcode.BINARY or opcode is Opcode.CONT:
                    payload = event.data
                    if payload:
                        inner.data_received(payload if type(payload) is bytes
                                            else bytes(payload))
                elif opcode is Opcode.TEXT:
                    # [MQTT-6.0.0-1] MQTT control packets travel in binary data frames only.
                    log.info("websocket: text frame, closing", extra={
                        "peer": self.get_extra_info("peername")})
                    ws.fail(CloseCode.INVALID_DATA, "MQTT needs binary frames")
                    self.closing = True
            elif isinstance(event, Request):
                self._upgrade(event)
        if self.connecting:
            self._check_connected()
        self._send_pending()

    def _check_connected(self) -> None:
        """Once the MQTT connection is accepted, messages up to the packet size limit (frames
        read before that were limited to what may come before the CONNACK)."""
        if getattr(self.inner, "connected", False):
            self.connecting = False
            _set_max_message_size(self.ws, self.max_size)

    def _upgrade(self, request: Request) -> None:
        ws = self.ws
        headers = request.headers
        origins = headers.get_all("Origin")
        hosts = headers.get_all("Host")
        if request.path.partition("?")[0] != self.path:
            response = ws.reject(404, f"No MQTT WebSocket endpoint at this path (try "
                                      f"{self.path}).\n")
        elif self.origins is not None and not self.origins.allows(
                origins, hosts[0] if len(hosts) == 1 else None):
            log.warning("websocket: origin not allowed on listener %s (allowed_origins)",
                        self.listener, extra={"peer": self.get_extra_info("peername"),
                                              "origin": ", ".join(origins),
                                              "listener": self.listener})
            response = ws.reject(403, "This origin may not connect (the listener's "
                                      "allowed_origins).\n")
        else:
            response = ws.accept(request)
        ws.send_response(response)
        if response.status_code == 101:
            self.upgraded = True
        else:
            log.info("websocket: upgrade refused", extra={
                "peer": self.get_extra_info("peername"), "path": request.path,
                "status": response.status_code})
            self.closing = True

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._send_pending()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    # -- the MQTT connection's side --------------------------------------------------------

    def raw(self) -> asyncio.Transport:
        assert self.transport is not None
        return self.transport

    def send_binary(self, data: bytes) -> None:
        if self.ws.state is State.OPEN and data:
            self.ws.send_binary(data)
            self._send_pending()

    def close(self) -> None:
        if self.closing:
            if self.transport is not None:
                self.transport.close()
            return
        self.closing = True
        if self.ws.state is State.OPEN:
            self.ws.send_close(CloseCode.NORMAL_CLOSURE)
        self._send_pending()
        if self.transport is not None:
            self.transport.close()

    def write_eof(self) -> None:
        """The MQTT connection writes no more (after a DISCONNECT or a refusing CONNACK): a
        Close frame after its data, the socket kept open. What the client still sends is read
        (its frames go to the MQTT connection, which is closing and ignores them) until its
        own Close frame, after which websockets ends the stream and `_send_pending` closes
        the socket [RFC 6455 section 7.1.1], or until the connection aborts it."""
        if self.closing or self.ws.state is not State.OPEN:
            self.close()
            return
        self.ws.send_close(CloseCode.NORMAL_CLOSURE)
        self._send_pending()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def is_closing(self) -> bool:
        return self.closing or self.transport is None or self.transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if self.transport is None:
            return default
        return self.transport.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def _send_pending(self) -> None:
        transport = self.transport
        if transport is None:
            return
        chunks = self.ws.data_to_send()
        if not chunks:
            return
        eof = False
        if chunks[-1] == b"":  # the protocol wants the connection closed after these bytes
            chunks.pop()
            eof = True
        if chunks and not transport.is_closing():
            transport.writelines(chunks)
        if eof or self.ws.state is State.CLOSED:
            self.closing = True
            transport.close()
