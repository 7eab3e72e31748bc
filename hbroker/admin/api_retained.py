"""`/api/v1/retained`: the retained messages (MQTT section 3.3.1.3) whose topics match a
filter, one retained message, and clearing one.

The topic is the rest of the path, percent-encoded where needed (`/api/v1/retained/a/b` is
topic `a/b`; a topic with an empty first level, `/a`, is `/api/v1/retained/%2Fa`). Clearing
(`DELETE`) publishes an empty retained message to the topic through the API's in-process
client [MQTT-3.3.1-6], so storage, the cluster and hooks follow it as they follow a client's,
and the ACL applies; as with any empty retained PUBLISH, the topic's current subscribers
receive it (a zero-byte message).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aiohttp import web
from hbroker_ext.codec import CONTENT_TYPE
from hbroker_ext.topics import valid_topic_filter

from hbroker.admin.api import (
    Api,
    bad_request,
    error,
    json_response,
    not_found,
    note,
    page,
    payload_fields,
    remaining,
)
from hbroker.admin.server import ADMIN, READ
from hbroker.reason_codes import reason_name

if TYPE_CHECKING:
    from hbroker.session import Message

PREVIEW_BYTES = 64


def retained_fields(msg: Message, now: float, preview: bool) -> dict[str, Any]:
    payload = msg.payload[:PREVIEW_BYTES] if preview else msg.payload
    fields = {"topic": msg.topic, "qos": msg.qos, "size": len(msg.payload),
              "expires_in": remaining(msg.expires_at, now) if msg.expires_at else None,
              "content_type": (msg.properties or {}).get(CONTENT_TYPE)}
    fields.update(payload_fields(payload))
    if preview:
        fields["truncated"] = len(msg.payload) > PREVIEW_BYTES
    return fields


def setup(api: Api) -> None:
    broker = api.broker

    def find(request: web.Request) -> Message:
        topic = request.match_info["topic"]
        msg = broker.retained.get(topic)
        if msg is None or msg.expired(time.monotonic()):
            raise not_found(f"no retained message for topic {topic!r}")
        return msg

    async def retained(request: web.Request) -> web.Response:
        topic_filter = request.query.get("filter", "#")
        if not valid_topic_filter(topic_filter) or topic_filter.startswith("$share/"):
            raise bad_request("filter", f"expected an MQTT topic filter, got {topic_filter!r}")
        now = time.monotonic()
        found = [m for m in broker.retained.match(topic_filter) if not m.expired(now)]
        return page(request, found, lambda m: m.topic,
                    lambda m: retained_fields(m, now, preview=True))

    async def retained_message(request: web.Request) -> web.Response:
        return json_response(retained_fields(find(request), time.monotonic(), preview=False))

    async def clear(request: web.Request) -> web.Response:
        msg = find(request)
        note(request, topic=msg.topic)
        code = await api.publish(msg.topic, b"", 1, True)
        if code >= 0x80:
            raise error(web.HTTPConflict, f"the broker refused to clear {msg.topic!r}: "
                        f"{reason_name(code)} (0x{code:02x})", reason_code=code)
        return json_response({"cleared": msg.topic})

    api.route("GET", "/retained", retained, READ)
    api.route("GET", "/retained/{topic:[\\s\\S]+}", retained_message, READ)
    api.route("DELETE", "/retained/{topic:[\\s\\S]+}", clear, ADMIN)
