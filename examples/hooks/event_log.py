"""An event log hook: every event of the extension seam as one JSON line.

    hbroker serve -c hbroker.toml --hook examples/hooks/event_log.py:EventLog

writes `events.jsonl` in the broker's working directory (or the file HBROKER_EVENT_LOG names),
one line per event, flushed at once, e.g.

    {"event": "connected", "client_id": "sensor-1", "username": "alice"}
    {"event": "published", "client_id": "sensor-1", "topic": "sensors/1/temp", "qos": 1}

Each event is written on the broker's event loop: fine for an audit trail of connections and
subscriptions; a broker carrying many messages per second would hand the lines to a thread
(as examples/hooks/ledger.py does).
"""

from __future__ import annotations

import json
import os
from typing import Any

from hbroker.hooks import ClientInfo, Hook


class EventLog(Hook):
    name = "event-log"

    def __init__(self, path: str | None = None) -> None:
        self.path = path or os.environ.get("HBROKER_EVENT_LOG", "events.jsonl")
        self.file: Any = None

    def write(self, event: str, **fields: Any) -> None:
        if self.file is None:
            self.file = open(self.path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        self.file.write(json.dumps({"event": event, **fields}) + "\n")

    def on_start(self, broker: Any) -> None:
        self.write("started")

    def on_stop(self) -> None:
        self.write("stopped")
        if self.file is not None:
            self.file.close()
            self.file = None

    def on_connected(self, client: ClientInfo) -> None:
        self.write("connected", client_id=client.client_id, username=client.username)

    def on_disconnected(self, client: ClientInfo, reason: str) -> None:
        self.write("disconnected", client_id=client.client_id, reason=reason)

    def on_session_created(self, client: ClientInfo) -> None:
        self.write("session_created", client_id=client.client_id)

    def on_session_resumed(self, client: ClientInfo) -> None:
        self.write("session_resumed", client_id=client.client_id)

    def on_session_taken_over(self, client: ClientInfo) -> None:
        self.write("session_taken_over", client_id=client.client_id)

    def on_session_ended(self, client_id: str, reason: str) -> None:
        self.write("session_ended", client_id=client_id, reason=reason)

    def on_subscribed(self, client: ClientInfo, topic_filter: str, options: Any,
                      new: bool) -> None:
        self.write("subscribed", client_id=client.client_id, filter=topic_filter,
                   qos=options.qos, new=new)

    def on_unsubscribed(self, client: ClientInfo, topic_filter: str) -> None:
        self.write("unsubscribed", client_id=client.client_id, filter=topic_filter)

    def on_message_published(self, client: ClientInfo, msg: Any, ack: Any) -> None:
        self.write("published", client_id=client.client_id if client else None,
                   topic=msg.topic, qos=msg.qos, retain=msg.retain)

    def on_message_dropped(self, client_id: str | None, msg: Any, reason: str) -> None:
        self.write("dropped", client_id=client_id, topic=msg.topic, reason=reason)

    def on_retained_set(self, msg: Any) -> None:
        self.write("retained_set", topic=msg.topic)

    def on_retained_cleared(self, topic: str, reason: str) -> None:
        self.write("retained_cleared", topic=topic, reason=reason)
