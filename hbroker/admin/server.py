"""The admin listener: one aiohttp application, started and stopped with the broker's Server.

Each module of this package adds its routes (the REST API's through `api.py`, the web
dashboard's through `ui.py`) with `AdminServer.add_route(method, path, handler, access)`,
where `access` is who may call it: `PUBLIC` (no token), `READ` (any token) or `ADMIN` (a
token of role `admin`). One middleware checks the `Authorization: Bearer TOKEN` header
against `[[admin.tokens]]` (401 without a valid token, 403 with a token whose role is too
low; JSON under /api/); the application refuses bodies over `admin.max_body_size` (413).

It runs on the broker's event loop but on its own socket, and reads the broker only when asked:
it is part of the process, not of the path of a message.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

from aiohttp import web

from hbroker.admin.health import Readiness
from hbroker.admin.tokens import parse_hash
from hbroker.config import AdminConfig, ListenerConfig
from hbroker.transports.tls import ListenerError, build_context

if TYPE_CHECKING:
    from hbroker.broker import Broker
    from hbroker.server import Server

log = logging.getLogger("hbroker.admin")

PUBLIC, READ, ADMIN = "public", "read", "admin"
_RANK = {PUBLIC: 0, READ: 1, ADMIN: 2}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Tokens:
    """`[[admin.tokens]]`: which role a presented token has, if any. A token is checked
    against every hash (scrypt, in a worker thread: the event loop serves MQTT meanwhile),
    and compared in constant time; one that matched is remembered by its SHA-256, so a
    scraper that sends its token every second costs one hash, not one scrypt, per request."""

    def __init__(self, config: AdminConfig) -> None:
        self.entries = [(t.name, t.role, parse_hash(t.hash)) for t in config.tokens]
        self.known: dict[bytes, tuple[str, str]] = {}

    async def identify(self, token: str) -> tuple[str, str] | None:
        """(name, role) of `token`, or None."""
        digest = hashlib.sha256(token.encode()).digest()
        found = self.known.get(digest)
        if found is not None:
            return found
        loop = asyncio.get_running_loop()
        for name, role, hashed in self.entries:
            if await loop.run_in_executor(None, hashed.matches, token):
                self.known[digest] = (name, role)
                return name, role
        return None


def _refusal(request: web.Request, cls: type[web.HTTPException], message: str,
             headers: dict[str, str] | None = None) -> web.HTTPException:
    """A 401/403: JSON (`{"error": ...}`) under /api/, as every answer of the API is; a line
    of text elsewhere (/metrics)."""
    if request.path.startswith("/api/"):
        return cls(text=json.dumps({"error": message}) + "\n",
                   content_type="application/json", headers=headers)
    return cls(text=message + "\n", headers=headers)


class AdminServer:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.broker: Broker = server.broker
        self.config: AdminConfig = server.config.admin
        self.where = f"{server.config.source or '<default>'}: admin"
        self.tokens = Tokens(self.config)
        self.readiness = Readiness()
        self.access: dict[web.AbstractRoute, str] = {}
        self.app = web.Application(client_max_size=self.config.max_body_size,
                                   middlewares=[self._authorise])
        self.runner: web.AppRunner | None = None
        self.address = ""
        # TLS files are read now, with the MQTT listeners' helper: a wrong path fails the start
        # with the key that names it.
        self.tls = self._tls_context()
        from hbroker.admin import api, health, metrics, ui

        health.setup(self)
        metrics.setup(self)
        api.setup(self)
        ui.setup(self)

    def add_route(self, method: str, path: str, handler: Handler, access: str) -> None:
        route = self.app.router.add_route(method, path, handler)
        self.access[route] = access

    def listener_names(self) -> Iterable[str]:
        return [listener.name for listener in self.server.listeners]

    def _tls_context(self) -> ssl.SSLContext | None:
        c = self.config
        if not c.certfile:
            return None
        lc = ListenerConfig(type="tls", certfile=c.certfile, keyfile=c.keyfile,
                            cafile=c.cafile, require_certificate=bool(c.cafile),
                            tls_version=c.tls_version)
        return build_context(lc, self.where)

    @web.middleware
    async def _authorise(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route
        needed = self.access.get(route, PUBLIC)  # unknown paths: aiohttp's 404 / 405
        if needed == PUBLIC:
            return await handler(request)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        who = await self.tokens.identify(token.strip()) \
            if scheme.lower() == "bearer" and token.strip() else None
        if who is None:
            log.info("admin request refused: no valid token", extra={
                "peer": request.remote, "path": request.path})
            raise _refusal(request, web.HTTPUnauthorized, "a valid token is needed: "
                           "Authorization: Bearer TOKEN", {"WWW-Authenticate": "Bearer"})
        name, role = who
        if _RANK[role] < _RANK[needed]:
            request["token_name"] = name  # for the audit line of a refused call
            raise _refusal(request, web.HTTPForbidden, f"token {name!r} has role {role!r}; "
                           f"this needs {needed!r}")
        request["token_name"] = name
        return await handler(request)

    async def start(self) -> None:
        c = self.config
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, c.host, c.port, ssl_context=self.tls,
                           reuse_address=True, shutdown_timeout=1.0)
        try:
            await site.start()
        except OSError as exc:
            await self.runner.cleanup()
            self.runner = None
            raise ListenerError(f"{self.where}: cannot listen on {c.host}:{c.port}: "
                                f"{exc.strerror or exc}") from None
        server = site._server
        sockets = getattr(server, "sockets", None) or ()
        if sockets:
            host, port = sockets[0].getsockname()[:2]
            self.address = f"{host}:{port}"
        log.info("admin listening", extra={
            "address": self.address, "scheme": "https" if self.tls else "http",
            "metrics_auth": c.metrics_auth, "tokens": len(self.tokens.entries)})

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
