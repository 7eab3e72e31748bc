"""`POST /api/v1/publish`: publish one application message, as the API's in-process client
(`hbroker-admin`, see `api.PUBLISHER`), which passes the checks a client's PUBLISH passes
(topic, ACL, quotas, hooks) and is routed, retained and stored as one.

The body: `{"topic": "a/b", "payload": "text", "encoding": "utf-8" | "base64", "qos": 0-2,
"retain": false, "message_expiry_interval": seconds, "content_type": "..."}` (only `topic`
is required). The answer: `{"reason_code": 0, "reason": "success"}` once the broker
acknowledged it (QoS 1/2; `0x10` when no subscription matched); a QoS 0 message is answered
with 0 once handed over (QoS 0 has no acknowledgement to say it was refused). A refusal
(>= 0x80, e.g. 0x87 Not authorized by the ACL) is a 409 with the reason code.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from aiohttp import web
from hbroker_ext.codec import CONTENT_TYPE, MESSAGE_EXPIRY_INTERVAL
from hbroker_ext.topics import valid_topic_name

from hbroker.admin.api import Api, bad_request, error, json_object, json_response, note
from hbroker.admin.server import ADMIN
from hbroker.inprocess import ConnectionRefused
from hbroker.reason_codes import reason_name

FIELDS = ("topic", "payload", "encoding", "qos", "retain", "message_expiry_interval",
          "content_type")
MAX_EXPIRY = 0xFFFFFFFF  # a Four Byte Integer


def parse_publish(body: dict[str, Any]) -> tuple[str, bytes, int, bool, dict[int, Any]]:
    """(topic, payload, qos, retain, properties) of a publish body; 400 naming the field."""
    for key in body:
        if key not in FIELDS:
            raise bad_request(key, f"unknown field (expected {', '.join(FIELDS)})")
    for key, value in body.items():
        if value is None:
            raise bad_request(key, "expected a value, got null (leave the field out instead)")
        if isinstance(value, str) and not _well_formed(value):
            raise bad_request(key, "expected UTF-8 text (it holds a lone surrogate)")
    topic = body.get("topic")
    if not isinstance(topic, str) or not topic:
        raise bad_request("topic", "expected a topic name (a non-empty string)")
    if not valid_topic_name(topic):
        raise bad_request("topic", f"expected a topic name without wildcards, got {topic!r}")
    encoding = body.get("encoding", "utf-8")
    if encoding not in ("utf-8", "base64"):
        raise bad_request("encoding", f"expected utf-8 or base64, got {encoding!r}")
    text = body.get("payload", "")
    if not isinstance(text, str):
        raise bad_request("payload", "expected a string (see encoding)")
    if encoding == "base64":
        try:
            payload = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise bad_request("payload", "expected base64") from None
    else:
        payload = text.encode()
    qos = body.get("qos", 0)
    if isinstance(qos, bool) or qos not in (0, 1, 2):
        raise bad_request("qos", f"expected 0, 1 or 2, got {qos!r}")
    retain = body.get("retain", False)
    if not isinstance(retain, bool):
        raise bad_request("retain", f"expected true or false, got {retain!r}")
    properties: dict[int, Any] = {}
    expiry = body.get("message_expiry_interval")
    if expiry is not None:
        if isinstance(expiry, bool) or not isinstance(expiry, int) \
                or not 0 <= expiry <= MAX_EXPIRY:
            raise bad_request("message_expiry_interval",
                              f"expected seconds, 0 to {MAX_EXPIRY}, got {expiry!r}")
        properties[MESSAGE_EXPIRY_INTERVAL] = expiry
    content_type = body.get("content_type")
    if content_type is not None:
        if not isinstance(content_type, str):
            raise bad_request("content_type", "expected a string")
        properties[CONTENT_TYPE] = content_type
    return topic, payload, qos, retain, properties


def _well_formed(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def setup(api: Api) -> None:
    async def publish(request: web.Request) -> web.Response:
        topic, payload, qos, retain, properties = parse_publish(await json_object(request))
        note(request, topic=topic, qos=qos, retain=retain, size=len(payload))
        try:
            code = await api.publish(topic, payload, qos, retain, properties or None)
        except ConnectionRefused as exc:
            raise error(web.HTTPServiceUnavailable, f"the API's client cannot connect: {exc}",
                        reason_code=exc.reason_code) from None
        if code >= 0x80:
            raise error(web.HTTPConflict, f"the broker refused the message: "
                        f"{reason_name(code)} (0x{code:02x})", reason_code=code)
        return json_response({"reason_code": code, "reason": reason_name(code)})

    api.route("POST", "/publish", publish, ADMIN)
