"""`/api/v1/subscriptions` and `/api/v1/shared-subscriptions`: who holds which topic filter,
and the shared subscription groups (MQTT 5.0 section 4.8.2) with their members.

Read from the sessions (each holds its subscriptions with their options), so offline
sessions' subscriptions are listed too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hbroker_ext.topics import parse_shared

from hbroker.admin.api import Api, key_of, page
from hbroker.admin.server import READ

if TYPE_CHECKING:
    from aiohttp import web


def subscription_fields(topic_filter: str, opts: Any) -> dict[str, Any]:
    group, inner = parse_shared(topic_filter)
    return {"topic_filter": topic_filter, "qos": opts.qos, "no_local": bool(opts.no_local),
            "retain_as_published": bool(opts.retain_as_published),
            "retain_handling": opts.retain_handling,
            "subscription_identifier": opts.sub_id or None,
            "shared_group": group, "shared_filter": inner if group is not None else None}


def setup(api: Api) -> None:
    broker = api.broker

    async def subscriptions(request: web.Request) -> web.Response:
        client_id = request.query.get("client_id")
        exact = request.query.get("topic_filter")
        group = request.query.get("shared_group")
        rows = []
        sessions = broker.sessions
        if client_id is None:
            chosen = list(sessions.values())
        else:
            chosen = [sessions[client_id]] if client_id in sessions else []
        for session in chosen:
            for topic_filter, opts in list(session.subscriptions.items()):
                if exact is not None and topic_filter != exact:
                    continue
                if group is not None and parse_shared(topic_filter)[0] != group:
                    continue
                rows.append((session.client_id, topic_filter, opts))

        def render(row: tuple[str, str, Any]) -> dict[str, Any]:
            return {"client_id": row[0], **subscription_fields(row[1], row[2])}

        return page(request, rows, lambda row: key_of(row[0], row[1]), render)

    async def shared(request: web.Request) -> web.Response:
        groups: dict[str, list[str]] = {}
        for session in list(broker.sessions.values()):
            for topic_filter in session.subscriptions:
                if topic_filter.startswith("$share/"):
                    groups.setdefault(topic_filter, []).append(session.client_id)
        name = request.query.get("shared_group")

        def render(key: str) -> dict[str, Any]:
            group, inner = parse_shared(key)
            return {"share": key, "shared_group": group, "topic_filter": inner,
                    "members": sorted(groups[key])}

        keys = [k for k in groups if name is None or parse_shared(k)[0] == name]
        return page(request, keys, lambda key: key, render)

    api.route("GET", "/subscriptions", subscriptions, READ)
    api.route("GET", "/shared-subscriptions", shared, READ)
