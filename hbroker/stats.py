"""Counters the broker keeps for $SYS and, later, metrics."""


class Stats:
    """Plain integer counters; incremented on the hot path, read by $SYS."""

    __slots__ = (
        "packets_received", "packets_sent", "bytes_received", "bytes_sent",
        "publish_received", "publish_sent", "publish_routed", "publish_dropped",
        "clients_connected", "clients_maximum", "connections_total", "takeovers",
        "wills_published", "sessions_expired", "retained_changes", "dropped_qos0_slow",
        "dropped_queue_full", "dropped_expired", "dropped_too_large", "protocol_errors",
    )

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}
