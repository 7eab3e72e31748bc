"""Prometheus metrics of a clustered instance: its cluster state, the instances it sees, its
NATS connection and the cluster's counters, read at scrape time.

`ClusterCollector` is a prometheus-client collector over one `ClusterRouting` (duck-typed:
`state`, `connected`, `nc`, `leases`, `sessions`, `consumer`, `wills` and the routing's
counters), registered beside the broker's own by `hbroker.admin.metrics.registry_for`. It
reads counters the cluster layer keeps anyway (those of `$SYS/broker/cluster/...`,
`hbroker.cluster.sys_topics`) and the NATS client's `stats`, only when Prometheus asks:
nothing is added to the path of a message. It works before the instance joined (no NATS
connection, no lease bucket yet): the state is `joining`, the counters are 0 and the only
instance is this one.

Labels take bounded values only: the instance's own state, instances counted by state, and
the instance's node name in `hbroker_cluster_info` (one series per instance); never a client
id or a topic. This module does not import `hbroker.admin`: the cluster layer sits below it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

# The instance's own state (`ClusterRouting.state`), each with its series.
STATES = ("joining", "joined", "disconnected", "fenced")
# The instances of the cluster as this one sees them, each state with its series.
INSTANCE_STATES = ("alive", "stopped", "dead")
# Counters of the NATS client (nats-py's `Client.stats`): (metric name without `_total`,
# stats key, help text).
NATS_COUNTERS = (
    ("hbroker_cluster_nats_reconnects", "reconnects", "Times the NATS connection was lost "
     "and made again."),
    ("hbroker_cluster_nats_messages_received", "in_msgs", "NATS messages received by this "
     "instance's NATS connection (every subject: live copies, the stream, KV, requests)."),
    ("hbroker_cluster_nats_messages_sent", "out_msgs", "NATS messages sent by this "
     "instance's NATS connection (every subject)."),
    ("hbroker_cluster_nats_bytes_received", "in_bytes", "Payload bytes received over the "
     "NATS connection."),
    ("hbroker_cluster_nats_bytes_sent", "out_bytes", "Payload bytes sent over the NATS "
     "connection."),
)


def instance_state(record: dict[str, Any]) -> str:
    """`alive` (its lease seen renewed within the lease), `stopped` (it stopped cleanly) or
    `dead` (declared dead, or its lease not renewed for the lease's length: about to be
    declared dead)."""
    if record.get("alive"):
        return "alive"
    return "stopped" if record.get("state") == "stopped" else "dead"


def instances_by_state(leases: Any) -> dict[str, int]:
    """The instances of `leases.instances()` counted by `instance_state`, this one included;
    every state of `INSTANCE_STATES` present."""
    counts = dict.fromkeys(INSTANCE_STATES, 0)
    for record in leases.instances().values():
        state = instance_state(record)
        counts[state] = counts.get(state, 0) + 1
    return counts


class ClusterCollector:
    """A prometheus-client collector over one instance's `ClusterRouting` (see the module
    docstring)."""

    def __init__(self, routing: Any) -> None:
        self.routing = routing

    def describe(self) -> list[Metric]:
        return []  # metrics are made at collection: nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        r = self.routing
        info = GaugeMetricFamily("hbroker_cluster_info", "This instance's node name in the "
                                 "cluster (always 1).", labels=["node"])
        info.add_metric([str(r.node)], 1)
        yield info
        current = r.state
        state = GaugeMetricFamily("hbroker_cluster_state", "1 for this instance's cluster "
                                  "state, 0 for the others: joining (not joined yet), joined, "
                                  "disconnected (no NATS connection: QoS 1/2 refused), fenced "
                                  "(its lease not renewed: clients sent to another instance).",
                                  labels=["state"])
        for name in STATES:
            state.add_metric([name], int(current == name))
        if current not in STATES:  # a state this module does not know yet: still shown
            state.add_metric([str(current)], 1)
        yield state
        yield from self._nats()
        instances = GaugeMetricFamily("hbroker_cluster_instances", "Instances of the cluster "
                                      "as this one last read their leases, itself included, "
                                      "by state: alive, stopped (cleanly), dead (declared "
                                      "dead, or its lease not renewed).", labels=["state"])
        for name, n in instances_by_state(r.leases).items():
            instances.add_metric([name], n)
        yield instances
        yield CounterMetricFamily("hbroker_cluster_instances_declared_dead", "Instances this "
                                  "one declared dead (their lease not renewed).",
                                  value=r.leases.declared)
        yield CounterMetricFamily("hbroker_cluster_messages_forwarded", "Messages sent to "
                                  "NATS for the other instances.", value=r.forwarded)
        yield CounterMetricFamily("hbroker_cluster_messages_received", "Messages from NATS "
                                  "(other instances' clients) published here.",
                                  value=r.received)
        yield CounterMetricFamily("hbroker_cluster_messages_refused", "QoS 1/2 publishes "
                                  "refused because JetStream did not store them.",
                                  value=r.refused)
        yield CounterMetricFamily("hbroker_cluster_stream_messages_taken", "Messages taken "
                                  "from the cluster's JetStream stream by this instance's "
                                  "consumer (QoS 1/2 from other instances).",
                                  value=r.consumer.delivered)
        yield CounterMetricFamily("hbroker_cluster_stream_messages_redelivered", "Messages "
                                  "of the stream delivered to this instance again (not "
                                  "acknowledged in time).", value=r.consumer.redelivered)
        yield CounterMetricFamily("hbroker_cluster_sessions_taken_over", "Sessions this "
                                  "instance took from another one.",
                                  value=r.sessions.taken_over)
        yield CounterMetricFamily("hbroker_cluster_sessions_handed_over", "Sessions this "
                                  "instance gave to another one.",
                                  value=r.sessions.handed_over)
        yield CounterMetricFamily("hbroker_cluster_wills_published", "Wills of dead "
                                  "instances' clients published here.",
                                  value=r.wills.published_for_others)

    def _nats(self) -> Iterator[Metric]:
        r = self.routing
        yield GaugeMetricFamily("hbroker_cluster_nats_connected", "1 while the instance is "
                                "connected to a NATS server.", value=int(bool(r.connected)))
        stats = getattr(r.nc, "stats", None) or {}
        for name, key, doc in NATS_COUNTERS:
            yield CounterMetricFamily(name, doc, value=stats.get(key, 0))
