"""The one place where the `[cluster]` table becomes a NATS connection (nats-py).

`connect()` returns a client connected to one of `servers` that reconnects on its own, forever,
`reconnect_wait` seconds apart per server, after a lost connection (and finds the other servers
of the NATS cluster from what the server announces). A first connection that fails is tried
again the same way, each failure reported to `on_error`, except what no retry mends: a server
refusing the credentials, or a server certificate that does not verify, raises
`NatsAuthenticationError`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client
from nats.errors import AuthorizationError

from hbroker.config import ClusterConfig

__all__ = ["NatsAuthenticationError", "connect", "connect_options", "tls_context"]

log = logging.getLogger("hbroker.cluster")

EventCallback = Callable[[], Awaitable[None]]
ErrorCallback = Callable[[Exception], Awaitable[None]]

# A dead connection is declared after this many pings go unanswered (`ping_interval` apart).
MAX_OUTSTANDING_PINGS = 2


class NatsAuthenticationError(ConnectionError):
    """A NATS server refused this instance's credentials, or its TLS certificate did not
    verify against `tls_ca`."""


def tls_context(config: ClusterConfig) -> ssl.SSLContext | None:
    """The client TLS context of `tls_ca`, `tls_cert`/`tls_key`; None when no `tls_` option
    is set and no server URL is `tls://` (nats-py then makes a default context itself if a
    server requires TLS)."""
    if not (config.tls_ca or config.tls_cert or config.tls_handshake_first
            or any(url.startswith("tls://") for url in config.servers)):
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cafile=config.tls_ca or None)
    if config.tls_cert:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


def connect_options(config: ClusterConfig, *, name: str,
                    on_disconnected: EventCallback | None = None,
                    on_reconnected: EventCallback | None = None,
                    on_error: ErrorCallback | None = None) -> dict[str, Any]:
    """The keyword arguments of nats-py's `Client.connect` for this table (callbacks as
    given: coroutine functions)."""
    options: dict[str, Any] = {
        "servers": list(config.servers),
        "name": name,
        "connect_timeout": config.connect_timeout,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,  # forever
        "reconnect_time_wait": config.reconnect_wait,
        "ping_interval": config.ping_interval,
        "max_outstanding_pings": MAX_OUTSTANDING_PINGS,
    }
    if on_disconnected is not None:
        options["disconnected_cb"] = on_disconnected
    if on_reconnected is not None:
        options["reconnected_cb"] = on_reconnected
    if on_error is not None:
        options["error_cb"] = on_error
    if config.user:
        options["user"] = config.user
        options["password"] = config.password
    elif config.token:
        options["token"] = config.token
    elif config.nkey_seed_file:
        options["nkeys_seed"] = config.nkey_seed_file
    elif config.creds_file:
        options["user_credentials"] = config.creds_file
    context = tls_context(config)
    if context is not None:
        options["tls"] = context
        options["tls_handshake_first"] = config.tls_handshake_first
    return options


def _is_authentication_failure(exc: BaseException) -> bool:
    return isinstance(exc, (AuthorizationError, ssl.SSLCertVerificationError)) \
        or "authorization violation" in str(exc).lower()


def _refusal(name: str, exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"NATS connection {name!r}: the server's certificate did not verify: {exc}"
    return f"NATS connection {name!r}: the server refused the credentials: {exc}"


async def connect(config: ClusterConfig, *, name: str,
                  on_disconnected: EventCallback | None = None,
                  on_reconnected: EventCallback | None = None,
                  on_error: ErrorCallback | None = None) -> Client:
    """A nats-py client connected to the `[cluster]` servers, named `name` on NATS (the node
    name, or the node name and a purpose). The callbacks are coroutine functions; without
    them each event is logged (`hbroker.cluster`). Raises NatsAuthenticationError when the
    first connection is refused its credentials or cannot trust the server; an exception
    `on_error` raises while the first connection is tried ends the attempt and propagates
    (how a caller gives up waiting for NATS)."""
    client = Client()
    first = True

    async def disconnected() -> None:
        if on_disconnected is not None:
            await on_disconnected()
        elif not first and not client.is_closed:  # not on close()
            log.warning("cluster: disconnected from NATS", extra={"connection": name})

    async def reconnected() -> None:
        if on_reconnected is not None:
            await on_reconnected()
        else:
            url = client.connected_url
            log.info("cluster: reconnected to NATS", extra={
                "connection": name, "server": url.netloc if url else None})

    async def error(exc: Exception) -> None:
        if first and _is_authentication_failure(exc):
            # Raised out of nats-py's first-connection loop, which would otherwise go on.
            raise NatsAuthenticationError(_refusal(name, exc))
        if on_error is not None:
            await on_error(exc)
        else:
            log.warning("cluster: NATS error: %s", exc or type(exc).__name__,
                        extra={"connection": name})

    options = connect_options(config, name=name, on_disconnected=disconnected,
                              on_reconnected=reconnected, on_error=error)
    try:
        await client.connect(**options)
    except BaseException as exc:
        try:
            # Bounded: after a failed TLS handshake nats-py's close can wait forever on the
            # transport.
            await asyncio.wait_for(client.close(), config.connect_timeout)
        except (TimeoutError, OSError):
            pass
        if _is_authentication_failure(exc) and not isinstance(exc, NatsAuthenticationError):
            raise NatsAuthenticationError(_refusal(name, exc)) from exc
        raise
    first = False
    return client
