"""`/api/v1/broker`, `/api/v1/storage` and `/api/v1/listeners`: what a dashboard's first page
shows. The broker: version, uptime, readiness, the counts of clients, sessions,
subscriptions and retained messages, and the counters `/metrics` exports (the same values,
as JSON). Storage: the backend, whether it is healthy, its commits and queue depth. The
listeners: each MQTT listener's address, transport and connections now.
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Any

import hbroker
from hbroker.admin.api import Api, iso_time, json_response
from hbroker.admin.api_clients import connected_clients, listener_name
from hbroker.admin.metrics import drops_by_reason, storage_pending
from hbroker.admin.server import READ
from hbroker.transports import describe

if TYPE_CHECKING:
    from aiohttp import web


def setup(api: Api) -> None:
    broker = api.broker
    server = api.server
    admin = api.admin

    async def status(request: web.Request) -> web.Response:
        sessions = list(broker.sessions.values())
        online = sum(1 for s in sessions if s.connection is not None)
        groups = {f for s in sessions for f in s.subscriptions if f.startswith("$share/")}
        failed = admin.readiness.failures()
        cluster = server.config.cluster
        return json_response({
            "version": hbroker.__version__,
            "node": cluster.name if cluster is not None and cluster.name
            else socket.gethostname(),
            "clustered": cluster is not None,
            "started_at": iso_time(broker.started_wall),
            "uptime_seconds": round(max(0.0, time.monotonic() - broker.started), 3),
            "ready": not failed,
            "readiness": {name: failed.get(name, "ok") for name in admin.readiness.checks},
            "clients_connected": broker.stats.clients_connected,
            "clients_connected_max": broker.stats.clients_maximum,
            "sessions_online": online,
            "sessions_offline": len(sessions) - online,
            "subscriptions": len(broker.subscriptions),
            "shared_subscription_groups": len(groups),
            "retained_messages": len(broker.retained),
            "inflight_messages": sum(len(s.inflight) for s in sessions),
            "queued_messages": sum(len(s.queue) for s in sessions),
            "counters": broker.stats.as_dict(),
            "dropped": drops_by_reason(broker.stats),
        })

    async def storage(request: web.Request) -> web.Response:
        config = server.config.storage
        journal = broker.journal
        info: dict[str, Any] = {"backend": config.backend, "durable": journal is not None,
                                "mode": config.mode if journal is not None else None}
        if journal is not None:
            info.update({
                "location": journal.backend.describe(),
                "degraded": journal.degraded,
                "full": journal.full,
                "commits": journal.commits,
                "commit_failures": journal.failures,
                "pending_changes": storage_pending(journal),
                "commit_seconds_sum": round(journal.commit_seconds.sum, 6),
                "commit_seconds_count": journal.commit_seconds.count,
            })
        return json_response(info)

    async def listeners(request: web.Request) -> web.Response:
        counts: dict[str, int] = {}
        for conn in connected_clients(broker):
            name = listener_name(conn)
            counts[name] = counts.get(name, 0) + 1
        items = []
        for listener in server.listeners:
            fields = describe(listener)
            lc = listener.config
            items.append({
                "name": fields.pop("listener"), "type": fields.pop("type"),
                "address": fields.pop("address"),
                "tls": listener.tls is not None,
                "serving": listener.server is not None and listener.server.is_serving(),
                "protocol_versions": sorted(lc.protocol_versions),
                "max_connections": lc.max_connections or None,
                "clients": counts.get(listener.name, 0),
                **{k: v for k, v in fields.items() if isinstance(v, str)},
            })
        return json_response({"items": items})

    api.route("GET", "/broker", status, READ)
    api.route("GET", "/storage", storage, READ)
    api.route("GET", "/listeners", listeners, READ)
