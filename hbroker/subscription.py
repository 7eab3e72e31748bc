"""A session's subscription options (MQTT 5.0 section 3.8.3.1)."""

from __future__ import annotations


class SubscriptionOptions:
    """A session's subscription to one topic filter (MQTT 5.0 section 3.8.3.1)."""

    __slots__ = ("qos", "no_local", "retain_as_published", "retain_handling", "sub_id")

    def __init__(self, qos: int, no_local: bool, retain_as_published: bool,
                 retain_handling: int, sub_id: int) -> None:
        self.qos = qos
        self.no_local = no_local
        self.retain_as_published = retain_as_published
        self.retain_handling = retain_handling
        self.sub_id = sub_id

    def __repr__(self) -> str:
        return (f"SubscriptionOptions(qos={self.qos}, no_local={self.no_local}, "
                f"rap={self.retain_as_published}, rh={self.retain_handling}, id={self.sub_id})")
