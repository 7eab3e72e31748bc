"""`/healthz` and `/readyz`, for systemd, Kubernetes probes and load balancers.

- `/healthz` (liveness): 200 while the process answers at all; the event loop that serves it is
  the one that serves MQTT, so a broker stuck in a loop fails it too.
- `/readyz` (readiness): 200 when every registered check passes, 503 with the failing ones
  otherwise. The server registers its own (the MQTT listeners are bound, storage is open and
  not degraded); a later layer (the cluster) registers one with `Readiness.add`.

Neither needs a token: probes carry no credentials, and the answers tell only up or down and
which check failed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp import web

    from hbroker.admin.server import AdminServer
    from hbroker.server import Server

# A readiness check: None when ready, else what is wrong (a short sentence).
Check = Callable[[], str | None]


class Readiness:
    """The named readiness checks, in the order they were added."""

    def __init__(self) -> None:
        self.checks: dict[str, Check] = {}

    def add(self, name: str, check: Check) -> None:
        if name in self.checks:
            raise ValueError(f"readiness check {name!r} is registered already")
        self.checks[name] = check

    def failures(self) -> dict[str, str]:
        failed = {}
        for name, check in self.checks.items():
            try:
                problem = check()
            except Exception as exc:  # a broken check means not ready, not a 500
                problem = f"check failed: {exc!r}"
            if problem is not None:
                failed[name] = problem
        return failed


def listeners_bound(server: Server) -> Check:
    """Every configured MQTT listener accepts connections, and the broker has started."""
    def check() -> str | None:
        if server.stopping is not None and server.stopping.is_set():
            return "stopping"
        if not server.started:
            return "starting"
        expected = len(server.config.listeners)
        serving = [lc for lc in server.listeners
                   if lc.server is not None and lc.server.is_serving()]
        if len(serving) < expected:
            return f"{len(serving)} of {expected} listeners accept connections"
        return None
    return check


def storage_ready(server: Server) -> Check:
    """Storage is open (restored) and commits succeed; always ready with `memory`."""
    def check() -> str | None:
        if server.config.storage.backend == "memory":
            return None
        journal = server.broker.journal
        if journal is None:
            return "storage is not open yet"
        if journal.degraded:
            return "storage commits fail (full)" if journal.full else "storage commits fail"
        return None
    return check


def setup(admin: AdminServer) -> None:
    from aiohttp import web

    from hbroker.admin.server import PUBLIC

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        failed = admin.readiness.failures()
        if "verbose" in request.query:
            body = json.dumps({"ready": not failed, "checks": {
                name: failed.get(name, "ok") for name in admin.readiness.checks}}) + "\n"
            return web.Response(text=body, status=503 if failed else 200,
                                content_type="application/json")
        if failed:
            text = "".join(f"{name}: {why}\n" for name, why in failed.items())
            return web.Response(text=text, status=503)
        return web.Response(text="ok\n")

    admin.readiness.add("listeners", listeners_bound(admin.server))
    admin.readiness.add("storage", storage_ready(admin.server))
    admin.add_route("GET", "/healthz", healthz, PUBLIC)
    admin.add_route("GET", "/readyz", readyz, PUBLIC)
