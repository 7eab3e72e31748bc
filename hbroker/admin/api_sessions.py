"""`/api/v1/sessions`: every session the broker holds (MQTT section 4.1), online or kept for
a client that will come back; one session's detail; discarding one.

Discarding (`DELETE`) ends the session as a Clean Start would: its subscriptions, queue,
inflight messages and will go (the will is not published: the operator removed the session,
the client did nothing). A connected client is first disconnected, with DISCONNECT 0x98
(Administrative action) on MQTT 5.0. Hooks see `on_session_ended` with reason `discarded`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from hbroker.admin.api import (
    PROTOCOL_NAMES,
    Api,
    json_response,
    not_found,
    note,
    page,
    query_bool,
    remaining,
)
from hbroker.admin.api_subscriptions import subscription_fields
from hbroker.admin.server import ADMIN, READ
from hbroker.hooks import SESSION_DISCARDED
from hbroker.reason_codes import ReasonCode

if TYPE_CHECKING:
    from aiohttp import web

    from hbroker.broker import Broker
    from hbroker.session import Session


def session_fields(session: Session, now: float) -> dict[str, Any]:
    """A session's summary: who, whether online, its expiry and its sizes."""
    connected = session.connection is not None
    expiry = session.expiry_interval
    return {
        "client_id": session.client_id,
        "connected": connected,
        "protocol": PROTOCOL_NAMES.get(session.protocol_version, "unknown"),
        "expiry_interval": None if expiry == float("inf") else expiry,
        "expires_in": None if connected else remaining(session.expires_at, now),
        "subscriptions": len(session.subscriptions),
        "inflight": len(session.inflight),
        "queued": len(session.queue),
        "queued_bytes": session.queued_bytes,
        "will": session.will is not None,
    }


def session_detail(session: Session, now: float) -> dict[str, Any]:
    """`session_fields` with the subscriptions and the bounds of the inflight window and
    queue."""
    return {
        **session_fields(session, now),
        "inflight_maximum": session.send_window,
        "queued_maximum": session.max_queued_messages,
        "queued_bytes_maximum": session.max_queued_bytes,
        "dropped": session.dropped,
        "awaiting_pubrel": len(session.awaiting_pubrel),
        "subscription_list": [subscription_fields(f, o) for f, o
                              in sorted(session.subscriptions.items())],
    }


def discard(broker: Broker, session: Session) -> None:
    """End `session` (see the module docstring)."""
    conn = session.connection
    if conn is not None:
        conn.disconnect(ReasonCode.ADMINISTRATIVE_ACTION, "session discarded by an admin",
                        publish_will=False)
    still = broker.sessions.get(session.client_id)
    if still is session:
        broker.end_session(session, publish_will=False, now=time.monotonic(),
                           reason=SESSION_DISCARDED)
    broker.flush()


def setup(api: Api) -> None:
    broker = api.broker

    def find(request: web.Request) -> Session:
        client_id = request.match_info["client_id"]
        session = broker.sessions.get(client_id)
        if session is None:
            raise not_found(f"no session for client id {client_id!r}")
        return session

    async def sessions(request: web.Request) -> web.Response:
        prefix = request.query.get("prefix", "")
        connected = query_bool(request, "connected")
        now = time.monotonic()
        chosen = [s for s in list(broker.sessions.values())
                  if s.client_id.startswith(prefix)
                  and (connected is None or (s.connection is not None) == connected)]
        return page(request, chosen, lambda s: s.client_id,
                    lambda s: session_fields(s, now))

    async def session(request: web.Request) -> web.Response:
        return json_response(session_detail(find(request), time.monotonic()))

    async def discard_session(request: web.Request) -> web.Response:
        found = find(request)
        note(request, client_id=found.client_id)
        discard(broker, found)
        return json_response({"discarded": found.client_id})

    api.route("GET", "/sessions", sessions, READ)
    api.route("GET", "/sessions/{client_id}", session, READ)
    api.route("DELETE", "/sessions/{client_id}", discard_session, ADMIN)
