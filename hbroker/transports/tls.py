"""TLS for `tls` and `wss` listeners: the server context, its reload on SIGHUP, the handshake,
and the identity of a client certificate.

The listener's socket server is plain TCP. Each accepted socket first gets a `TLSHandshake`
protocol, which runs `loop.start_tls` with the listener's *current* context and then hands the
TLS transport to the MQTT (or WebSocket) protocol. This is what makes a SIGHUP reload simple
and safe: a reload builds a new SSLContext and swaps it in (`ReloadableContext.current`); new
handshakes use it, connections already open keep the session they negotiated. It also lets the
broker log why a handshake failed (an unknown CA, a revoked certificate, no certificate, an
old TLS version), with the peer's address: a server created with `ssl=` fails handshakes
silently. After the handshake the connection runs on uvloop's TLS transport, exactly as with
`create_server(ssl=...)`; the only extra cost is one short-lived task per handshake.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hbroker.config import ListenerConfig

log = logging.getLogger("hbroker.transports")

TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class ListenerError(Exception):
    """A listener cannot start (or its certificates cannot be reloaded); the message names the
    configuration file, the key and the file it points to."""


def build_context(lc: ListenerConfig, where: str) -> ssl.SSLContext:
    """A server context from the listener's files, read now. `where` is the configuration
    file and the listener (`FILE: listeners[0]`) for error messages."""
    for key in ("certfile", "keyfile", "cafile", "crlfile"):
        path = getattr(lc, key)
        if path and not os.access(path, os.R_OK):
            why = "file not found" if not os.path.exists(path) else "not readable"
            raise ListenerError(f"{where}.{key}: cannot read {path}: {why}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_VERSIONS[lc.tls_version]
    try:
        ctx.load_cert_chain(lc.certfile, lc.keyfile)
    except (ssl.SSLError, ValueError) as exc:
        raise ListenerError(f"{where}.certfile: cannot use {lc.certfile} with key "
                            f"{lc.keyfile}: {exc}") from None
    if lc.ciphers:
        try:
            ctx.set_ciphers(lc.ciphers)
        except ssl.SSLError:
            raise ListenerError(f"{where}.ciphers: no cipher matches "
                                f'"{lc.ciphers}"') from None
    if lc.cafile:
        try:
            ctx.load_verify_locations(cafile=lc.cafile)
        except ssl.SSLError as exc:
            raise ListenerError(f"{where}.cafile: no CA certificate in {lc.cafile}: "
                                f"{exc}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED if lc.require_certificate else ssl.CERT_OPTIONAL
        if lc.crlfile:
            try:
                ctx.load_verify_locations(cafile=lc.crlfile)
            except ssl.SSLError as exc:
                raise ListenerError(f"{where}.crlfile: no CRL in {lc.crlfile}: "
                                    f"{exc}") from None
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return ctx


class ReloadableContext:
    """The listener's TLS context, replaceable while the server runs."""

    __slots__ = ("config", "where", "current")

    def __init__(self, lc: ListenerConfig, where: str) -> None:
        self.config = lc
        self.where = where
        self.current = build_context(lc, where)

    def reload(self) -> None:
        """Read the certificate, key, CA and CRL files again; new handshakes use them. On an
        error the running context stays and ListenerError says why."""
        self.current = build_context(self.config, self.where)


class TLSHandshake(asyncio.Protocol):
    """The first protocol of a socket on a tls/wss listener: the TLS handshake with the
    listener's current context, then `make_protocol()` takes over the TLS transport.

    `loop.start_tls` must replace this protocol before the first bytes are read (uvloop starts
    reading right after `connection_made`, whatever it asked), so its coroutine is started here,
    synchronously, and driven to its end by the completion of the future it waits on — what a
    Task created with `eager_start=True` (Python 3.12) does, without needing one per socket.
    """

    __slots__ = ("tls", "make_protocol", "timeout", "listener_name", "transport", "early",
                 "handshake")

    def __init__(self, tls: ReloadableContext, make_protocol: Callable[[], asyncio.Protocol],
                 timeout: float, listener_name: str) -> None:
        self.tls = tls
        self.make_protocol = make_protocol
        self.timeout = timeout
        self.listener_name = listener_name
        self.transport: asyncio.Transport | None = None
        self.early = _EarlyData()
        self.handshake: Coroutine[Any, Any, asyncio.Transport | None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        loop = asyncio.get_running_loop()
        self.handshake = loop.start_tls(  # type: ignore[assignment]
            transport, self.early, self.tls.current,  # type: ignore[arg-type]
            server_side=True, ssl_handshake_timeout=self.timeout)
        self._step()

    def data_received(self, data: bytes) -> None:  # start_tls took the socket over
        raise AssertionError("data before the TLS handshake started")

    def connection_lost(self, exc: Exception | None) -> None:
        pass

    def _step(self, _: object = None) -> None:
        """Run the handshake coroutine until it waits again, or ends."""
        handshake = self.handshake
        assert handshake is not None
        try:
            waiting = handshake.send(None)
        except StopIteration as done:
            self._handshake_done(done.value)
        except Exception as exc:  # ssl.SSLError, ConnectionError, TimeoutError…
            self._handshake_failed(exc)
        else:
            if waiting is None:  # a bare yield: run again on the next iteration
                asyncio.get_running_loop().call_soon(self._step)
                return
            waiting._asyncio_future_blocking = False
            waiting.add_done_callback(self._step)

    def _handshake_done(self, tls_transport: asyncio.Transport | None) -> None:
        self.handshake = None
        early = self.early
        raw = self.transport
        assert raw is not None
        if tls_transport is None or early.lost or raw.is_closing():
            # The socket closed during the handshake (start_tls then returns a transport
            # that is already dead, or None).
            return
        protocol = self.make_protocol()
        tls_transport.set_protocol(protocol)
        protocol.connection_made(tls_transport)
        for data in early.data:
            protocol.data_received(data)
        if early.eof and not tls_transport.is_closing():
            protocol.eof_received()  # type: ignore[attr-defined]
            tls_transport.close()
        early.data.clear()

    def _handshake_failed(self, exc: BaseException) -> None:
        self.handshake = None
        transport = self.transport
        assert transport is not None
        peer = transport.get_extra_info("peername")
        log.info("TLS handshake failed: %s", handshake_failure(exc), extra={
            "peer": f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else peer,
            "listener": self.listener_name})
        transport.abort()


class _EarlyData(asyncio.Protocol):
    """The TLS transport's protocol between the end of the handshake and the moment the MQTT
    protocol takes over (the next loop iteration): what the client sent right after its
    Finished message (often its CONNECT) is kept, in order."""

    __slots__ = ("data", "eof", "lost")

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.eof = False
        self.lost = False

    def data_received(self, data: bytes) -> None:
        self.data.append(data)

    def eof_received(self) -> bool:
        self.eof = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


def handshake_failure(exc: BaseException) -> str:
    """Why a handshake failed, in OpenSSL's words where it has some."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"client certificate refused: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.lower().replace("_", " ")
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def certificate_identity(cert: dict[str, Any] | None, kind: str) -> str | None:
    """The identity `kind` (`cn`, `san_dns`, `san_email`) of a verified peer certificate as
    `SSLObject.getpeercert()` returns it, or None."""
    if not cert:
        return None
    if kind == "cn":
        for rdn in cert.get("subject", ()):
            for name, value in rdn:
                if name == "commonName":
                    return value
        return None
    wanted = "DNS" if kind == "san_dns" else "email"
    for name, value in cert.get("subjectAltName", ()):
        if name == wanted:
            return value
    return None
