"""The cluster's retained messages, kept in JetStream: one message per topic, the same on every
instance, surviving a restart of every instance.

The stream `HBROKER_RETAINED` (subjects `$HB.retained.<subject>`, with a subject prefix
`<prefix>.$HB.retained.<subject>`, `max_msgs_per_subject = 1`,
replicated like the message stream) holds the last retained PUBLISH of each topic, its flags
and properties as headers (`hbroker.cluster.headers`); an empty payload is the record that the
topic's retained message was cleared [MQTT-3.3.1-6]. The instance that receives the PUBLISH
writes it, holding a QoS 1/2 publisher's acknowledgement until JetStream stored it (as for the
message itself). The other instances take it from the stream, not from the live path (where
a retained PUBLISH is ignored): each instance reads the stream through one ordered consumer
(`deliver_policy = last_per_subject`, so it starts with every topic's record, then follows),
which publishes each record into the broker with RETAIN 1 through the cluster's in-process
client: subscribers on every instance receive a retained PUBLISH once, as on one instance.
An instance that starts reads every topic's record before it accepts connections.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import Any

from hbroker_ext.codec import MESSAGE_EXPIRY_INTERVAL

from hbroker.cluster import headers as hdr

log = logging.getLogger("hbroker.cluster")

SUBJECT = "$HB.retained."  # SUBJECT + the topic's subject


def stream_name(prefix: str) -> str:
    return "HBROKER_RETAINED" + ("_" + prefix.replace(".", "_").upper() if prefix else "")


def stream_config(prefix: str, replicas: int) -> Any:
    from nats.js.api import StorageType, StreamConfig

    return StreamConfig(name=stream_name(prefix),
                        subjects=[(prefix + "." if prefix else "") + SUBJECT + ">"],
                        num_replicas=replicas, storage=StorageType.FILE,
                        max_msgs_per_subject=1, allow_direct=True)


def remaining_expiry(headers: dict[str, str] | None, stored_at: datetime | None) -> float | None:
    """Seconds the Message Expiry Interval of a stored retained message has left (<= 0:
    expired), or None when it does not expire."""
    if not headers or hdr.MESSAGE_EXPIRY not in headers:
        return None
    left = float(headers[hdr.MESSAGE_EXPIRY])
    if stored_at is not None:
        left -= (datetime.now(UTC) - stored_at).total_seconds()
    return left


def expiry_left(headers: dict[str, str] | None, stored_at: datetime | None,
                props: dict | None) -> bool:
    """Count down a stored retained message's Message Expiry Interval by its time in the
    stream (in `props`); False when it has expired."""
    left = remaining_expiry(headers, stored_at)
    if left is None:
        return True
    if left <= 0:
        return False
    if props is not None:
        props[MESSAGE_EXPIRY_INTERVAL] = max(1, math.ceil(left))
    return True
