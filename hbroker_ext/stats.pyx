# The broker's counters (included by routing.pyx; fields declared in routing.pxd).


cdef class Stats:
    """The broker's counters, for $SYS and metrics: incremented on the hot path (typed, so
    compiled code adds to them without a Python attribute lookup), read by Python."""

    NAMES = ("packets_received", "packets_sent", "bytes_received", "bytes_sent",
             "publish_received", "publish_sent", "publish_received_qos0",
             "publish_received_qos1", "publish_received_qos2", "publish_sent_qos0",
             "publish_sent_qos1", "publish_sent_qos2", "publish_routed", "publish_dropped",
             "clients_connected", "clients_maximum", "connections_total", "takeovers",
             "wills_published", "sessions_expired", "retained_changes", "dropped_qos0_slow",
             "dropped_queue_full", "dropped_expired", "dropped_too_large",
             "dropped_no_subscribers", "protocol_errors",
             "connections_rate_limited", "publish_rate_limited", "publish_throttled")

    def as_dict(self):
        return {name: getattr(self, name) for name in self.NAMES}
