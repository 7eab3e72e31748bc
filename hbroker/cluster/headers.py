"""An MQTT message's flags and 5.0 properties as NATS headers, and back.

Every message the cluster carries has the headers of its origin and flags; its properties
travel under readable names, so that a NATS-native client can read them too:

| header | MQTT |
|---|---|
| `Hb-Origin` | the node that published it (an instance drops its own echo) |
| `Hb-Id` | the sender's run and a counter: copies are dropped; `Nats-Msg-Id` when stored |
| `Mqtt-Qos`, `Mqtt-Retain` | QoS and RETAIN of the PUBLISH, as received ("0"–"2", "1") |
| `Mqtt-Payload-Format` | Payload Format Indicator ("1": UTF-8) |
| `Mqtt-Message-Expiry` | Message Expiry Interval: the seconds left when it left the origin |
| `Mqtt-Content-Type` | Content Type (UTF-8; `%`, controls and non-ASCII percent-encoded) |
| `Mqtt-Response-Topic` | Response Topic (encoded as Content Type) |
| `Mqtt-Correlation-Data` | Correlation Data (base64) |
| `Mqtt-User-Properties` | User Properties, in order: a JSON list of [name, value] pairs |

Topic aliases and subscription identifiers belong to one network connection and are never
carried. A message without headers (a NATS-native client's) is QoS 0, not retained, without
properties.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any
from urllib.parse import quote, unquote

from hbroker_ext.codec import (
    CONTENT_TYPE,
    CORRELATION_DATA,
    MESSAGE_EXPIRY_INTERVAL,
    PAYLOAD_FORMAT_INDICATOR,
    RESPONSE_TOPIC,
    USER_PROPERTY,
)

ORIGIN = "Hb-Origin"
MESSAGE_ID = "Hb-Id"
QOS = "Mqtt-Qos"
RETAIN = "Mqtt-Retain"
PAYLOAD_FORMAT = "Mqtt-Payload-Format"
MESSAGE_EXPIRY = "Mqtt-Message-Expiry"
CONTENT_TYPE_HEADER = "Mqtt-Content-Type"
RESPONSE_TOPIC_HEADER = "Mqtt-Response-Topic"
CORRELATION_DATA_HEADER = "Mqtt-Correlation-Data"
USER_PROPERTIES = "Mqtt-User-Properties"


# Printable ASCII but `%` stays as it is in a header value; anything else is percent-encoded.
_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


class HeaderError(ValueError):
    """Headers that do not describe an MQTT message (a malformed value)."""


def message_headers(origin: str, qos: int, retain: bool, properties: dict[int, Any] | None,
                    expires_in: float | None) -> dict[str, str]:
    """The headers of a message published by `origin`; `expires_in`: the seconds its Message
    Expiry Interval has left (None when it does not expire)."""
    headers = {ORIGIN: origin, QOS: str(qos)}
    if retain:
        headers[RETAIN] = "1"
    if expires_in is not None:
        headers[MESSAGE_EXPIRY] = str(max(1, math.ceil(expires_in)))
    if properties:
        value = properties.get(PAYLOAD_FORMAT_INDICATOR)
        if value:
            headers[PAYLOAD_FORMAT] = "1"
        value = properties.get(CONTENT_TYPE)
        if value is not None:
            headers[CONTENT_TYPE_HEADER] = quote(value, safe=_SAFE)
        value = properties.get(RESPONSE_TOPIC)
        if value is not None:
            headers[RESPONSE_TOPIC_HEADER] = quote(value, safe=_SAFE)
        value = properties.get(CORRELATION_DATA)
        if value is not None:
            headers[CORRELATION_DATA_HEADER] = base64.b64encode(value).decode()
        value = properties.get(USER_PROPERTY)
        if value:
            headers[USER_PROPERTIES] = json.dumps([list(pair) for pair in value],
                                                  ensure_ascii=True, separators=(",", ":"))
    return headers


def message_flags(headers: dict[str, str] | None) -> tuple[str | None, int, bool,
                                                        dict[int, Any] | None]:
    """(origin, QoS, retain, properties) of a received message's headers; raises HeaderError
    for a value that cannot be one of them."""
    if not headers:
        return None, 0, False, None
    try:
        qos = int(headers.get(QOS, "0"))
        if qos not in (0, 1, 2):
            raise HeaderError(f"{QOS}: {qos} is not a QoS")
        retain = headers.get(RETAIN) == "1"
        props: dict[int, Any] = {}
        if headers.get(PAYLOAD_FORMAT) == "1":
            props[PAYLOAD_FORMAT_INDICATOR] = 1
        value = headers.get(MESSAGE_EXPIRY)
        if value is not None:
            props[MESSAGE_EXPIRY_INTERVAL] = int(value)
        value = headers.get(CONTENT_TYPE_HEADER)
        if value is not None:
            props[CONTENT_TYPE] = unquote(value, errors="strict")
        value = headers.get(RESPONSE_TOPIC_HEADER)
        if value is not None:
            props[RESPONSE_TOPIC] = unquote(value, errors="strict")
        value = headers.get(CORRELATION_DATA_HEADER)
        if value is not None:
            props[CORRELATION_DATA] = base64.b64decode(value, validate=True)
        value = headers.get(USER_PROPERTIES)
        if value is not None:
            pairs = json.loads(value)
            if not isinstance(pairs, list) or not all(
                    isinstance(p, list) and len(p) == 2
                    and all(isinstance(x, str) for x in p) for p in pairs):
                raise HeaderError(f"{USER_PROPERTIES}: not a list of [name, value] pairs")
            props[USER_PROPERTY] = [tuple(p) for p in pairs]
    except HeaderError:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise HeaderError(str(exc)) from exc
    return headers.get(ORIGIN), qos, retain, props or None
