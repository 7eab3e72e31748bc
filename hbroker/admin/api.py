"""What every resource of the admin REST API (`/api/v1`) shares: JSON answers, errors that
name the field, paging, and the audit line of every mutating call.

Each resource is a module of its own (`api_clients`, `api_sessions`, `api_subscriptions`,
`api_retained`, `api_publish`, `api_broker`, `api_stats`, `api_config`, `openapi`) with a
`setup(api)` that adds its routes; `setup(admin)` here wires them all. The resources read the
broker only through what it offers to extensions (its sessions, trees, connections and
counters, `end_session`, a connection's `disconnect`) and act through the in-process client
(`hbroker.inprocess`), so a message the API publishes passes the checks a client's would.

Errors are JSON objects `{"error": "what is wrong", "field": "the field"}` (`field` only when
one input is at fault): 400 for bad input, 404 for an unknown id, 409 when the broker refused
the action (a PUBLISH refused with a reason code); 401 and 403 come from the token middleware
(`server.py`), 413 from aiohttp (a body over `admin.max_body_size`).

Lists are pages: `?limit=N` (1 to 1000, default 100) and `?after=CURSOR`, the `next` of the
previous page (null on the last one). Items come in a stable order (by client id, topic...),
so a page boundary survives changes between two calls.

The audit line: every call that is not GET/HEAD goes to the `hbroker.audit` logger, once it
is answered (refused calls included), as `admin call` with `token` (the token's name, empty
when none was valid), `method`, `path`, `status` and `result` (`ok`, or the error), plus the
resource's own fields (`client_id`, `topic`...); with `[audit] file` set, the same record
goes to the audit file as event `admin_call`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from hbroker.admin.server import AdminServer, Handler
    from hbroker.broker import Broker
    from hbroker.inprocess import InProcessClient

PREFIX = "/api/v1"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PROTOCOL_NAMES = {3: "3.1", 4: "3.1.1", 5: "5.0"}
PROTOCOL_LEVELS = {name: level for level, name in PROTOCOL_NAMES.items()}
# The client id and username of the in-process client through which the API publishes (and
# clears retained messages): an ACL file grants it what it may publish to.
PUBLISHER = "hbroker-admin"

audit_log = logging.getLogger("hbroker.audit")


# -- answers and errors ------------------------------------------------------------------------

def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data) + "\n", status=status,
                        content_type="application/json")


def error(cls: type[web.HTTPException], message: str, field: str | None = None,
          **extra: Any) -> web.HTTPException:
    """An HTTP error with its JSON body, to raise."""
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    body.update(extra)
    return cls(text=json.dumps(body) + "\n", content_type="application/json")


def bad_request(field: str, message: str) -> web.HTTPException:
    return error(web.HTTPBadRequest, f"{field}: {message}", field)


def not_found(message: str) -> web.HTTPException:
    return error(web.HTTPNotFound, message)


# -- input -------------------------------------------------------------------------------------

def query_int(request: web.Request, name: str, default: int, minimum: int,
              maximum: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise bad_request(name, f"expected an integer, got {text!r}") from None
    if not minimum <= value <= maximum:
        raise bad_request(name, f"expected {minimum} to {maximum}, got {value}")
    return value


def query_bool(request: web.Request, name: str) -> bool | None:
    text = request.query.get(name)
    if text is None:
        return None
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise bad_request(name, f"expected true or false, got {text!r}")


def query_protocol(request: web.Request, name: str = "protocol") -> int | None:
    text = request.query.get(name)
    if text is None:
        return None
    level = PROTOCOL_LEVELS.get(text)
    if level is None:
        raise bad_request(name, f"expected one of {', '.join(PROTOCOL_LEVELS)}, got {text!r}")
    return level


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request's body, a JSON object (400 otherwise; 413 over admin.max_body_size)."""
    raw = await request.read()
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request("body", f"expected a JSON object: {exc}") from None
    if not isinstance(body, dict):
        raise bad_request("body", f"expected a JSON object, got {type(body).__name__}")
    return body


# -- pages -------------------------------------------------------------------------------------

def page(request: web.Request, items: Iterable[Any], key: Callable[[Any], str],
         render: Callable[[Any], dict[str, Any]]) -> web.Response:
    """One page of `items` in the order of `key` (a string), after the request's `after`.
    A key made of several strings joins them with NUL (`key_of`), which no MQTT string
    holds [MQTT-1.5.4-2], so it sorts as the tuple would."""
    limit = query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    after = request.query.get("after")
    ordered = sorted(((key(item), item) for item in items), key=lambda pair: pair[0])
    total = len(ordered)
    if after is not None:
        ordered = [pair for pair in ordered if pair[0] > after]
    chosen = ordered[:limit]
    following = chosen[-1][0] if len(ordered) > limit and chosen else None
    return json_response({"items": [render(item) for _, item in chosen], "total": total,
                          "next": following})


def key_of(*parts: str) -> str:
    return "\x00".join(parts)


# -- payloads and times ------------------------------------------------------------------------

_CONTROL = frozenset(chr(c) for c in range(32)) - {"\t", "\n", "\r"} | {"\x7f"}


def payload_fields(payload: bytes) -> dict[str, Any]:
    """A payload as JSON: its text when it is UTF-8 without control characters (other than
    tab and line breaks), else base64 (binary data a screen cannot show)."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and not _CONTROL.intersection(text):
        return {"payload": text, "payload_encoding": "utf-8"}
    return {"payload": base64.b64encode(payload).decode(), "payload_encoding": "base64"}


def wall_clock(broker: Broker, monotonic: float) -> float:
    """A monotonic time of the broker as Unix time (seconds)."""
    return broker.started_wall + (monotonic - broker.started)


def iso_time(unix: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(unix)) + f".{int(unix % 1 * 1000):03d}Z"


def remaining(deadline: float, now: float) -> float | None:
    """Seconds until a monotonic deadline; None for one that never comes."""
    if deadline == float("inf"):
        return None
    return max(0.0, round(deadline - now, 3))


# -- the audit line ----------------------------------------------------------------------------

def _audit_file(admin: AdminServer) -> Any:
    """The `[audit] file` log, when one is configured (its hook holds it)."""
    from hbroker.auth.hooks import AuditHook

    for hook in admin.broker.hooks.hooks:
        if isinstance(hook, AuditHook):
            return hook.audit
    return None


def api_middleware(admin: AdminServer) -> Any:
    """Under /api/: every error as JSON (aiohttp's own too: 404 for an unknown path, 405,
    413), and the audit line of every mutating call (see the module docstring)."""

    @web.middleware
    async def api(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(PREFIX + "/"):
            return await handler(request)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400 or exc.content_type == "application/json":
                _audit(admin, request, exc.status, exc)
                raise
            response = _as_json(exc)
        _audit(admin, request, response.status, response)
        return response
    return api


def _audit(admin: AdminServer, request: web.Request, status: int, answer: Any) -> None:
    if request.method in READ_METHODS:
        return
    fields = {"token": request.get("token_name", ""), "method": request.method,
              "path": request.path, "status": status,
              "result": "ok" if status < 400 else _error_text(answer),
              "peer": request.remote, **request.get("audit", {})}
    audit_log.info("admin call", extra=fields)
    audit = _audit_file(admin)
    if audit is not None:
        audit.record("admin_call", **fields)


def _as_json(exc: web.HTTPException) -> web.Response:
    """An HTTP error of aiohttp's (plain text), as the JSON response to send."""
    response = json_response({"error": _error_text(exc)}, exc.status)
    for header in ("Allow", "WWW-Authenticate"):
        if header in exc.headers:
            response.headers[header] = exc.headers[header]
    return response


def _error_text(answer: Any) -> str:
    text = answer.text or answer.reason
    try:
        return str(json.loads(text)["error"])
    except (ValueError, KeyError, TypeError):
        return text.strip()


def note(request: web.Request, **fields: Any) -> None:
    """Fields for the audit line of this call (what it acted on)."""
    request.setdefault("audit", {}).update(fields)


# -- wiring ------------------------------------------------------------------------------------

class Api:
    """What a resource module's `setup` gets: the admin server, and `route` to add one."""

    def __init__(self, admin: AdminServer) -> None:
        self.admin = admin
        self.server = admin.server
        self.broker = admin.broker

        self._publisher: InProcessClient | None = None
        self._connecting = asyncio.Lock()

    def route(self, method: str, path: str, handler: Handler, access: str) -> None:
        self.admin.add_route(method, PREFIX + path, handler, access)

    async def publish(self, topic: str, payload: bytes, qos: int, retain: bool,
                      properties: dict[int, Any] | None = None) -> int:
        """Publish as the in-process client `PUBLISHER` (connected on first use, and again
        if it was closed): the PUBACK's reason code (0 for QoS 0, accepted unseen)."""
        from hbroker.inprocess import ConnectionRefused, client

        for attempt in (1, 2):
            async with self._connecting:
                publisher = self._publisher
                if publisher is None or publisher.closed:
                    publisher = client(self.broker, PUBLISHER, username=PUBLISHER)
                    await publisher.connect()
                    self._publisher = publisher
            try:
                return await publisher.publish(topic, payload, qos, retain, properties)
            except ConnectionRefused:
                if attempt == 2:  # closed under it twice (kicked, taken over)
                    raise
                self._publisher = None
        raise AssertionError("unreachable")


MODULES: Sequence[str] = ("api_broker", "api_stats", "api_config", "api_clients", "api_sessions",
                          "api_subscriptions", "api_retained", "api_publish", "openapi")


def setup(admin: AdminServer) -> None:
    import importlib

    admin.app.middlewares.insert(0, api_middleware(admin))
    api = Api(admin)
    for name in MODULES:
        importlib.import_module(f"hbroker.admin.{name}").setup(api)
