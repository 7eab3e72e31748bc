"""`$SYS/broker/...` topics, with Mosquitto's names, published as retained messages.

Values are published at start and then every `sys.interval` seconds, each only when it changed.
The publisher is an extension of the broker that owns it: it reads the broker through
`SysSource`, declared here, and does not import hbroker.broker.
"""

from __future__ import annotations

import time
from collections.abc import Sized
from typing import TYPE_CHECKING, Any, Protocol

import hbroker
from hbroker.session import Message

if TYPE_CHECKING:
    from hbroker.config import Config
    from hbroker.stats import Stats


class SysSource(Protocol):
    """What the publisher reads of the broker it reports on, and how it publishes
    (hbroker.broker.Broker provides it)."""

    @property
    def config(self) -> Config: ...
    @property
    def stats(self) -> Stats: ...
    @property
    def started(self) -> float: ...
    @property
    def sessions(self) -> Sized: ...
    @property
    def subscriptions(self) -> Sized: ...
    @property
    def retained(self) -> Sized: ...

    def publish(self, msg: Message, now: float) -> Any: ...


class SysPublisher:
    def __init__(self, broker: SysSource) -> None:
        self.broker = broker
        self.last: dict[str, str] = {}
        self.next_due = 0.0

    def values(self, now: float) -> dict[str, str]:
        b = self.broker
        s = b.stats
        total = len(b.sessions)
        return {
            "$SYS/broker/uptime": f"{int(now - b.started)} seconds",
            "$SYS/broker/clients/connected": str(s.clients_connected),
            "$SYS/broker/clients/active": str(s.clients_connected),
            "$SYS/broker/clients/disconnected": str(total - s.clients_connected),
            "$SYS/broker/clients/total": str(total),
            "$SYS/broker/clients/maximum": str(s.clients_maximum),
            "$SYS/broker/messages/received": str(s.packets_received),
            "$SYS/broker/messages/sent": str(s.packets_sent),
            "$SYS/broker/publish/messages/received": str(s.publish_received),
            "$SYS/broker/publish/messages/sent": str(s.publish_sent),
            "$SYS/broker/publish/messages/dropped": str(
                s.dropped_qos0_slow + s.dropped_queue_full + s.dropped_expired
                + s.dropped_too_large),
            "$SYS/broker/quotas/connections/refused": str(s.connections_rate_limited),
            "$SYS/broker/quotas/publish/refused": str(s.publish_rate_limited),
            "$SYS/broker/quotas/publish/throttled": str(s.publish_throttled),
            "$SYS/broker/bytes/received": str(s.bytes_received),
            "$SYS/broker/bytes/sent": str(s.bytes_sent),
            "$SYS/broker/subscriptions/count": str(len(b.subscriptions)),
            "$SYS/broker/retained messages/count": str(len(b.retained)),
        }

    def publish_static(self) -> None:
        self._publish("$SYS/broker/version", f"hbroker version {hbroker.__version__}",
                      time.monotonic())

    def publish_periodic(self, now: float) -> None:
        self.next_due = now + self.broker.config.sys.interval
        for topic, value in self.values(now).items():
            if self.last.get(topic) != value:
                self._publish(topic, value, now)

    def maybe_publish(self, now: float) -> None:
        if now >= self.next_due:
            self.publish_periodic(now)

    def _publish(self, topic: str, value: str, now: float) -> None:
        self.last[topic] = value
        self.broker.publish(Message(topic, value.encode(), 0, True, None, 0, None), now)
