"""`/api/v1/clients`: the clients connected now (CONNECT accepted), filtered and paged; one
client's detail (its session's subscriptions, inflight window and queue); kicking one.

A kick (`DELETE`) closes the client's connection as the broker closes any it ends: an MQTT
5.0 client first gets DISCONNECT 0x98 (Administrative action); a 3.1.1 client, which has no
DISCONNECT to read, is closed at once. Its will is published (the client did not say
goodbye [MQTT-3.1.2-8]); its session stays as its expiry interval says (discard it with
`DELETE /api/v1/sessions/ID`). A client that reconnects is not kept out: deny it in the ACL
or the password file for that.

Clients of the broker's in-process API (bridges, the cluster layer, the API's own publisher)
are listed too, under the listener `inprocess`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from hbroker.admin.api import (
    PROTOCOL_NAMES,
    Api,
    iso_time,
    json_response,
    not_found,
    note,
    page,
    query_protocol,
    wall_clock,
)
from hbroker.admin.api_sessions import session_detail, session_fields
from hbroker.admin.server import ADMIN, READ
from hbroker.reason_codes import ReasonCode

if TYPE_CHECKING:
    from aiohttp import web

    from hbroker.broker import Broker
    from hbroker.connection import Connection


def listener_name(conn: Any) -> str:
    return getattr(getattr(conn, "listener", None), "name", "inprocess")


def connected_clients(broker: Broker) -> list[Connection]:
    """Connections whose CONNECT was accepted and that are not closing."""
    return [c for c in list(broker.connections)
            if c.connected and not c.closing and c.session is not None]


def client_fields(broker: Broker, conn: Connection, now: float) -> dict[str, Any]:
    session = conn.session
    fields = {
        "client_id": conn.client_id,
        "username": conn.username,
        "listener": listener_name(conn),
        "protocol": PROTOCOL_NAMES.get(conn.protocol_version, "unknown"),
        "peer": conn.peer,
        "connected_at": iso_time(wall_clock(broker, conn.opened_at)),
        "keepalive": conn.keepalive,
    }
    if session is not None:
        summary = session_fields(session, now)
        for key in ("expiry_interval", "subscriptions", "inflight", "queued", "queued_bytes"):
            fields[key] = summary[key]
    return fields


def setup(api: Api) -> None:
    broker = api.broker

    def find(request: web.Request) -> Connection:
        client_id = request.match_info["client_id"]
        for conn in connected_clients(broker):
            if conn.client_id == client_id:
                return conn
        raise not_found(f"no client connected with client id {client_id!r}")

    async def clients(request: web.Request) -> web.Response:
        prefix = request.query.get("prefix", "")
        listener = request.query.get("listener")
        protocol = query_protocol(request)
        username = request.query.get("username")
        now = time.monotonic()
        chosen = [c for c in connected_clients(broker)
                  if c.client_id.startswith(prefix)
                  and (listener is None or listener_name(c) == listener)
                  and (protocol is None or c.protocol_version == protocol)
                  and (username is None or c.username == username)]
        return page(request, chosen, lambda c: c.client_id,
                    lambda c: client_fields(broker, c, now))

    async def client(request: web.Request) -> web.Response:
        conn = find(request)
        now = time.monotonic()
        detail = client_fields(broker, conn, now)
        detail["certificate_identity"] = conn.certificate_identity
        detail["session"] = session_detail(conn.session, now) if conn.session else None
        return json_response(detail)

    async def kick(request: web.Request) -> web.Response:
        conn = find(request)
        note(request, client_id=conn.client_id)
        conn.disconnect(ReasonCode.ADMINISTRATIVE_ACTION, "kicked by an admin",
                        publish_will=True)
        broker.flush()
        return json_response({"kicked": conn.client_id})

    api.route("GET", "/clients", clients, READ)
    api.route("GET", "/clients/{client_id}", client, READ)
    api.route("DELETE", "/clients/{client_id}", kick, ADMIN)
