"""Listeners: tcp, tls, ws, wss and unix, each with its own settings.

A `Listener` is a running listener: its `ListenerConfig`, the asyncio server, its TLS context
and the checks a connection asks of it (per-listener connection limit, protocol versions,
anonymous clients, certificate identity). Every `Connection` holds its listener as
`Connection.listener`; hooks see its name and settings through `ClientInfo`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hbroker.config import TLS_TYPES, WEBSOCKET_TYPES, ListenerConfig
from hbroker.transports.tls import (
    ListenerError,
    ReloadableContext,
    TLSHandshake,
    certificate_identity,
)

if TYPE_CHECKING:
    from hbroker.connection import Connection

__all__ = ["Listener", "ListenerError"]

log = logging.getLogger("hbroker.transports")

BACKLOG = 1024
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class Listener:
    """One listener of the broker, with its settings as a connection needs them."""

    __slots__ = ("config", "name", "where", "tls", "server", "connections",
                 "max_connections", "protocol_versions", "allow_anonymous",
                 "use_identity_as_username", "identity_kind")

    def __init__(self, config: ListenerConfig, where: str = "<listener>") -> None:
        """`where`: the configuration file and the listener's index, for error messages."""
        self.config = config
        self.name = config.label
        self.where = where
        self.tls = ReloadableContext(config, where) if config.type in TLS_TYPES else None
        self.server: asyncio.AbstractServer | None = None
        # Connections counted against max_connections; closed ones are pruned when the
        # count reaches the limit, so the set never holds more than max_connections.
        self.connections: set[Connection] = set()
        self.max_connections = config.max_connections
        self.protocol_versions = frozenset(config.protocol_versions)
        self.allow_anonymous = bool(config.allow_anonymous)
        self.use_identity_as_username = config.use_identity_as_username
        self.identity_kind = config.certificate_identity

    def __repr__(self) -> str:
        return f"<Listener {self.name}>"

    # -- what a connection asks ------------------------------------------------------------

    def admit(self, conn: Connection) -> bool:
        """Count a new connection; False when the listener is full."""
        limit = self.max_connections
        if not limit:
            return True
        live = self.connections
        if len(live) >= limit:
            live = self.connections = {c for c in live if not c.closing}
            if len(live) >= limit:
                return False
        live.add(conn)
        return True

    def peer_name(self, transport: asyncio.BaseTransport) -> str:
        """`host:port` of the peer; on a unix listener `unix:pid=…,uid=…` when the kernel
        tells who connected."""
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            return f"{peer[0]}:{peer[1]}"
        if self.config.type == "unix":
            sock = transport.get_extra_info("socket")
            if sock is not None and hasattr(socket, "SO_PEERCRED"):
                try:
                    pid, uid, _ = _PEERCRED.unpack(sock.getsockopt(
                        socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
                    return f"unix:pid={pid},uid={uid}"
                except OSError:
                    pass
            return "unix"
        return str(peer) if peer else "?"

    def certificate_identity(self, transport: asyncio.BaseTransport) -> str | None:
        """The identity of the client's verified certificate, if it sent one."""
        if self.tls is None:
            return None
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return None
        return certificate_identity(ssl_object.getpeercert(), self.identity_kind)

    # -- running ---------------------------------------------------------------------------

    async def start(self, loop: asyncio.AbstractEventLoop,
                    make_connection: Callable[[Listener], asyncio.Protocol],
                    max_packet_size: int, handshake_timeout: float) -> None:
        """Listen. `make_connection(listener)` makes the MQTT protocol of a new socket;
        `handshake_timeout` bounds a TLS handshake, in seconds."""
        lc = self.config
        mqtt: Callable[[], asyncio.Protocol]
        if lc.type in WEBSOCKET_TYPES:
            # Imported here: the websockets package costs ~40 ms of start-up (its version
            # lookup reads package metadata), which a broker without ws listeners skips.
            from hbroker.transports.websocket import OriginPolicy, WebSocketProtocol

            path = lc.path
            origins = OriginPolicy(lc.allowed_origins, lc.type == "wss")

            def mqtt() -> asyncio.Protocol:
                return WebSocketProtocol(make_connection(self), path, max_packet_size,
                                         origins, self.name)
        else:
            def mqtt() -> asyncio.Protocol:
                return make_connection(self)
        factory = mqtt
        tls = self.tls
        if tls is not None:
            def factory() -> asyncio.Protocol:
                return TLSHandshake(tls, mqtt, handshake_timeout, self.name)
        try:
            if lc.type == "unix":
                self.server = await self._start_unix(loop, factory)
            else:
                self.server = await loop.create_server(
                    factory, lc.host, lc.port, reuse_address=True, backlog=BACKLOG)
        except OSError as exc:
            raise ListenerError(f"{self.where}: cannot listen on {self.address()}: "
                                f"{exc.strerror or exc}") from None

    async def _start_unix(self, loop: asyncio.AbstractEventLoop,
                          factory: Callable[[], asyncio.Protocol]) -> asyncio.AbstractServer:
        path = self.config.path
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)  # left by a broker that did not stop cleanly
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        server = await loop.create_unix_server(factory, path, backlog=BACKLOG)
        os.chmod(path, int(self.config.mode, 8))
        return server

    def address(self) -> str:
        lc = self.config
        if lc.type == "unix":
            return lc.path
        if self.server is not None and self.server.sockets:
            host, port = self.server.sockets[0].getsockname()[:2]
            return f"{host}:{port}"
        return f"{lc.host}:{lc.port}"

    def reload_tls(self) -> None:
        """SIGHUP: read the certificate files again (ListenerError if they are unusable)."""
        if self.tls is not None:
            self.tls.reload()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.config.type == "unix":
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(os.stat(self.config.path).st_mode):
                    os.unlink(self.config.path)


def describe(listener: Listener) -> dict[str, Any]:
    """The fields of the `listening` log line."""
    lc = listener.config
    fields: dict[str, Any] = {"listener": listener.name, "type": lc.type,
                              "address": listener.address()}
    if lc.type in WEBSOCKET_TYPES:
        fields["path"] = lc.path
        fields["allowed_origins"] = ", ".join(lc.allowed_origins) or "same origin only"
    if listener.tls is not None:
        fields["client_certificates"] = ("required" if lc.require_certificate
                                         else "optional" if lc.cafile else "not asked")
    return fields
