"""The web dashboard: static files from `hbroker/admin/dashboard/`, served by the admin
listener at `/` (the page) and `/ui/NAME` (its scripts, styles and MQTT.js).

The files are public: they hold no data of this broker. The page asks for a token and calls
the REST API (`/api/v1`) with it, so what the dashboard shows is exactly what the token may
read, and what it does (kick, delete a retained message) is what the token may do. The files
are in the package (and in the single binary: packaging/hbroker.spec lists them as data), so
the dashboard works on a gateway without internet: no CDN, no build step.

Only the files found at start-up are served, by name (no path from the request reaches the
file system). The Content-Security-Policy lets the page load only its own files and talk to
this listener and to WebSocket listeners (the "Try it" page's MQTT.js, which runs its
timers in a worker made from a blob).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from hbroker.admin.server import PUBLIC

if TYPE_CHECKING:
    from hbroker.admin.server import AdminServer

FILES = Path(__file__).resolve().parent / "dashboard"
PREFIX = "/ui/"
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css",
         ".svg": "image/svg+xml", ".png": "image/png", ".md": "text/plain", ".txt": "text/plain"}
HEADERS = {
    "Cache-Control": "no-cache",  # revalidated: an upgraded broker serves its own page
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "connect-src 'self' ws: wss:; worker-src 'self' blob:; "
                               "frame-ancestors 'none'",
}


def dashboard_files(root: Path = FILES) -> dict[str, Path]:
    """Every file of the dashboard by its name under /ui/ (`app.js`, `vendor/mqtt.min.js`)."""
    if not root.is_dir():
        return {}
    return {path.relative_to(root).as_posix(): path for path in sorted(root.rglob("*"))
            if path.is_file() and path.suffix in TYPES}


def setup(admin: AdminServer) -> None:
    files = dashboard_files()

    def answer(name: str) -> web.Response:
        path = files.get(name)
        if path is None:
            raise web.HTTPNotFound(text=f"no such file of the dashboard: {name}\n")
        charset = "utf-8" if path.suffix != ".png" else None
        return web.Response(body=path.read_bytes(), content_type=TYPES[path.suffix],
                            charset=charset, headers=HEADERS)

    async def index(request: web.Request) -> web.Response:
        return answer("index.html")

    async def asset(request: web.Request) -> web.Response:
        return answer(request.match_info["name"])

    admin.add_route("GET", "/", index, PUBLIC)
    admin.add_route("GET", PREFIX.rstrip("/"), index, PUBLIC)
    admin.add_route("GET", PREFIX + "{name:.+}", asset, PUBLIC)
