"""`/api/v1/stats`: the few numbers the dashboard's Overview polls every two seconds.

Totals, not rates: the page keeps the last fifteen minutes of samples and draws messages
in / out / dropped per second from the differences, so the broker keeps no history and a
missed poll loses nothing. Everything here is read from what the broker already keeps (the
hot path's counters, the lengths of its trees, the journal's flags, the process's CPU time
and resident memory): polling costs the event loop a few attribute reads, never a walk over
every session and never work on the path of a message. `/broker` has the full picture.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from hbroker.admin.api import Api, json_response
from hbroker.admin.metrics import drops_by_reason
from hbroker.admin.server import READ

if TYPE_CHECKING:
    from aiohttp import web

try:
    _PAGE = os.sysconf("SC_PAGE_SIZE")
except (ValueError, OSError, AttributeError):  # not a POSIX system
    _PAGE = 4096


def memory_rss_bytes() -> int | None:
    """The process's resident memory, from /proc (Linux); None where there is none."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def cluster_instances(server: Any) -> list[dict[str, Any]] | None:
    """The cluster's instances as this one last read them (name, alive, clients), from the
    cluster layer's leases; only this one while it has none to tell; None when not
    clustered."""
    if server.config.cluster is None:
        return None
    cluster = getattr(server, "cluster", None)
    leases = getattr(cluster, "leases", None)
    if leases is None or not hasattr(leases, "instances"):
        node = getattr(cluster, "node", None) or server.config.cluster.name or "this instance"
        return [{"name": str(node), "alive": True,
                 "clients": server.broker.stats.clients_connected}]
    items = []
    for token, record in leases.instances().items():
        clients = record.get("clients")
        items.append({"name": str(record.get("node") or token),
                      "alive": bool(record.get("alive")),
                      "clients": clients if isinstance(clients, int) else None})
    return sorted(items, key=lambda item: item["name"])


def setup(api: Api) -> None:
    broker = api.broker
    server = api.server
    admin = api.admin

    async def stats(request: web.Request) -> web.Response:
        counters = broker.stats
        journal = broker.journal
        storage: dict[str, Any] = {"backend": server.config.storage.backend,
                                   "durable": journal is not None,
                                   "healthy": journal is None or not (journal.degraded
                                                                       or journal.full)}
        return json_response({
            "time": round(time.time(), 3),
            "uptime_seconds": round(max(0.0, time.monotonic() - broker.started), 3),
            "ready": not admin.readiness.failures(),
            "messages_received": counters.publish_received,
            "messages_sent": counters.publish_sent,
            "messages_dropped": sum(drops_by_reason(counters).values()),
            "bytes_received": counters.bytes_received,
            "bytes_sent": counters.bytes_sent,
            "clients_connected": counters.clients_connected,
            "sessions": len(broker.sessions),
            "subscriptions": len(broker.subscriptions),
            "retained_messages": len(broker.retained),
            "cpu_seconds": round(time.process_time(), 3),
            "memory_rss_bytes": memory_rss_bytes(),
            "storage": storage,
            "cluster_instances": cluster_instances(server),
        })

    api.route("GET", "/stats", stats, READ)
