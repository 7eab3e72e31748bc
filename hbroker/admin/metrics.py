"""`/metrics`: the broker's counters in Prometheus's text format, read at scrape time.

`BrokerCollector` reads what the broker already keeps (`broker.stats`, incremented by the
compiled hot path; the sessions, subscriptions and retained trees; the journal) each time
Prometheus scrapes, so exporting metrics adds nothing to the path of a message. Labels take
only bounded values (listener names from the configuration, protocol versions, drop reasons,
reason codes, ACL actions): never a client id or a topic. Process CPU and memory are
prometheus-client's standard `process_*` metrics, which every exporter and dashboard uses.
A clustered instance adds the cluster's and its NATS connection's (`hbroker_cluster_*`,
`hbroker.cluster.metrics.ClusterCollector`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest

import hbroker
from hbroker.reason_codes import ReasonCode

if TYPE_CHECKING:
    from aiohttp import web

    from hbroker.admin.server import AdminServer
    from hbroker.broker import Broker
    from hbroker.cluster.routing import ClusterRouting

PROTOCOL_NAMES = {3: "3.1", 4: "3.1.1", 5: "5.0"}
# The classic text format, which every Prometheus server reads: every name here is a legacy
# (ASCII) metric name, so the page is the same in either version of the format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Counters of `broker.stats` exported one to one: (metric name without `_total`, Stats field,
# help text).
COUNTERS = (
    ("hbroker_packets_received", "packets_received", "MQTT packets received from clients."),
    ("hbroker_packets_sent", "packets_sent", "MQTT packets sent to clients."),
    ("hbroker_bytes_received", "bytes_received", "Bytes received from clients."),
    ("hbroker_bytes_sent", "bytes_sent", "Bytes sent to clients."),
    ("hbroker_messages_routed", "publish_routed", "Messages routed to the subscriptions "
     "(clients' messages that passed every check, wills and in-process publishes)."),
    ("hbroker_connections_opened", "connections_total", "Network connections accepted."),
    ("hbroker_connections_rate_limited", "connections_rate_limited", "Connections closed "
     "at once for quotas.max_connection_rate."),
    ("hbroker_publish_throttled", "publish_throttled", "Times a publisher's reading was "
     "paused for its publish rate (quotas.publish_rate_action = throttle)."),
    ("hbroker_session_takeovers", "takeovers", "Sessions taken over by a new connection "
     "with the same client id."),
    ("hbroker_sessions_expired", "sessions_expired", "Sessions ended by their expiry "
     "interval."),
    ("hbroker_wills_published", "wills_published", "Will messages published."),
    ("hbroker_retained_changes", "retained_changes", "Retained messages set or cleared."),
    ("hbroker_protocol_errors", "protocol_errors", "Connections closed for a protocol "
     "error."),
)
# Counters of `broker.stats` kept by QoS, exported with a `qos` label ("0", "1", "2"; the sum
# over the labels is the total): (metric name without `_total`, Stats field prefix, help text).
BY_QOS = (
    ("hbroker_messages_received", "publish_received", "PUBLISH packets received from "
     "clients (application messages), by their QoS."),
    ("hbroker_messages_sent", "publish_sent", "PUBLISH packets sent to clients (re-sends "
     "included), by the QoS of the delivery."),
)
# Drops by reason, from the counters the hot path keeps. `refused` is every PUBLISH the broker
# did not route (ACL, invalid topic or payload, storage unavailable, a hook) other than for
# its publish rate, which is `quota`.
DROP_REASONS = (
    ("slow_subscriber", "QoS 0 deliveries dropped for a subscriber that reads too slowly"),
    ("queue_full", "deliveries dropped for a full session queue (limits.max_queued_*)"),
    ("expired", "deliveries whose Message Expiry Interval ran out while queued"),
    ("too_large", "deliveries over the subscriber's Maximum Packet Size"),
    ("quota", "PUBLISHes refused for the publisher's rate (quotas.max_publish_*)"),
    ("refused", "PUBLISHes refused: ACL, invalid topic or payload, storage, a hook"),
    ("no_subscribers", "messages routed that reached no subscription"),
)


def drops_by_reason(stats: Any) -> dict[str, int]:
    return {
        "slow_subscriber": stats.dropped_qos0_slow,
        "queue_full": stats.dropped_queue_full,
        "expired": stats.dropped_expired,
        "too_large": stats.dropped_too_large,
        "quota": stats.publish_rate_limited,
        "refused": stats.publish_dropped - stats.publish_rate_limited,
        "no_subscribers": stats.dropped_no_subscribers,
    }


def by_qos(stats: Any, field: str) -> dict[str, int]:
    """A counter kept by QoS (`publish_received`, `publish_sent`), by the QoS label."""
    return {str(qos): getattr(stats, f"{field}_qos{qos}") for qos in (0, 1, 2)}


def storage_pending(journal: Any) -> int:
    """Changes waiting for a storage commit, the one under way included."""
    pending = sum(len(getattr(journal.current, name)) for name in (
        "sessions", "subscriptions", "deliveries", "messages", "retained", "qos2"))
    if journal.committing is not None:
        pending += len(journal.committing.deliveries) + len(journal.committing.messages)
    return pending


def reason_label(code: int) -> str:
    try:
        return ReasonCode(code).name.lower()
    except ValueError:
        return f"0x{code:02x}"


class BrokerCollector:
    """A prometheus-client collector over one broker. `listener_names` gives the configured
    listeners (so each has its series, at 0 while it has no connection)."""

    def __init__(self, broker: Broker,
                 listener_names: Callable[[], Iterable[str]] = tuple) -> None:
        self.broker = broker
        self.listener_names = listener_names

    def describe(self) -> list[Metric]:
        return []  # metrics are made at collection: nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        b = self.broker
        s = b.stats
        info = GaugeMetricFamily("hbroker_build_info", "The broker's version (always 1).",
                                 labels=["version"])
        info.add_metric([hbroker.__version__], 1)
        yield info
        yield GaugeMetricFamily("hbroker_uptime_seconds", "Seconds since the broker started.",
                                value=max(0.0, _now() - b.started))
        for name, field, doc in COUNTERS:
            yield CounterMetricFamily(name, doc, value=getattr(s, field))
        for name, field, doc in BY_QOS:
            counter = CounterMetricFamily(name, doc, labels=["qos"])
            for qos, value in by_qos(s, field).items():
                counter.add_metric([qos], value)
            yield counter
        dropped = CounterMetricFamily("hbroker_messages_dropped", "Messages or deliveries "
                                      "dropped, by reason: " + "; ".join(
                                          f"{r}: {d}" for r, d in DROP_REASONS) + ".",
                                      labels=["reason"])
        for reason, value in drops_by_reason(s).items():
            dropped.add_metric([reason], value)
        yield dropped
        yield from self._connections()
        yield from self._sessions()
        yield from self._security()
        yield from self._storage()

    def _connections(self) -> Iterator[Metric]:
        b = self.broker
        counts: dict[tuple[str, str], int] = {}
        for name in self.listener_names():
            for version in (*PROTOCOL_NAMES.values(), "connecting"):
                counts[(name, version)] = 0
        for conn in list(b.connections):
            listener = getattr(getattr(conn, "listener", None), "name", "in-process")
            if getattr(conn, "connected", False):
                version = PROTOCOL_NAMES.get(conn.protocol_version, "unknown")
            else:
                version = "connecting"
            counts[(listener, version)] = counts.get((listener, version), 0) + 1
        conns = GaugeMetricFamily("hbroker_connections", "Network connections open, by "
                                  "listener and MQTT protocol version (`connecting`: before "
                                  "its CONNECT is accepted).", labels=["listener", "protocol"])
        for (listener, version), n in sorted(counts.items()):
            conns.add_metric([listener, version], n)
        yield conns
        yield GaugeMetricFamily("hbroker_clients_connected", "Clients connected (CONNECT "
                                "accepted).", value=b.stats.clients_connected)
        yield GaugeMetricFamily("hbroker_clients_connected_max", "Most clients connected at "
                                "once since the broker started.",
                                value=b.stats.clients_maximum)

    def _sessions(self) -> Iterator[Metric]:
        b = self.broker
        online = inflight = queued = queued_bytes = 0
        groups: set[str] = set()
        sessions = list(b.sessions.values())
        for session in sessions:
            if session.connection is not None:
                online += 1
            inflight += len(session.inflight)
            queued += len(session.queue)
            queued_bytes += session.queued_bytes
            for topic_filter in session.subscriptions:
                if topic_filter.startswith("$share/"):
                    groups.add(topic_filter)
        state = GaugeMetricFamily("hbroker_sessions", "Sessions, by state: online (its "
                                  "client is connected) or offline (kept for a client that "
                                  "will come back).", labels=["state"])
        state.add_metric(["online"], online)
        state.add_metric(["offline"], len(sessions) - online)
        yield state
        yield GaugeMetricFamily("hbroker_subscriptions", "Subscriptions held by all sessions "
                                "(shared ones included).", value=len(b.subscriptions))
        yield GaugeMetricFamily("hbroker_shared_subscription_groups", "Shared subscription "
                                "groups ($share/GROUP/FILTER) with at least one member.",
                                value=len(groups))
        yield GaugeMetricFamily("hbroker_retained_messages", "Retained messages held.",
                                value=len(b.retained))
        yield GaugeMetricFamily("hbroker_inflight_messages", "QoS 1/2 deliveries sent and "
                                "not yet acknowledged, all sessions.", value=inflight)
        yield GaugeMetricFamily("hbroker_queued_messages", "Deliveries queued for offline "
                                "clients or full windows, all sessions.", value=queued)
        yield GaugeMetricFamily("hbroker_queued_bytes", "Payload bytes of the queued "
                                "deliveries, all sessions.", value=queued_bytes)

    def _security(self) -> Iterator[Metric]:
        from hbroker.auth.hooks import AclHook

        auth = CounterMetricFamily("hbroker_auth_failures", "CONNECTs and re-authentications "
                                   "refused for their credentials, by reason code.",
                                   labels=["reason"])
        failures = dict(self.broker.auth_failures)
        failures.setdefault(ReasonCode.BAD_USER_NAME_OR_PASSWORD, 0)
        failures.setdefault(ReasonCode.NOT_AUTHORIZED, 0)
        for code, n in sorted(failures.items()):
            auth.add_metric([reason_label(code)], n)
        yield auth
        acl = CounterMetricFamily("hbroker_acl_denials", "Publishes and subscriptions denied "
                                  "by the ACL file, by action.", labels=["action"])
        denied: dict[str, int] = {"publish": 0, "subscribe": 0}
        for hook in self.broker.hooks.hooks:
            if isinstance(hook, AclHook):
                for action, n in hook.denied.items():
                    denied[action] = denied.get(action, 0) + n
        for action, n in sorted(denied.items()):
            acl.add_metric([action], n)
        yield acl

    def _storage(self) -> Iterator[Metric]:
        journal = self.broker.journal
        pending = 0
        commits = failures = 0
        degraded = full = False
        buckets: list[tuple[float, int]] = [(float("inf"), 0)]
        total = 0.0
        if journal is not None:
            pending = storage_pending(journal)
            commits, failures = journal.commits, journal.failures
            degraded, full = journal.degraded, journal.full
            buckets = journal.commit_seconds.cumulative()
            total = journal.commit_seconds.sum
        yield GaugeMetricFamily("hbroker_storage_durable", "1 when broker state is stored "
                                "(sqlite, postgres), 0 with the memory backend.",
                                value=int(journal is not None))
        yield GaugeMetricFamily("hbroker_storage_degraded", "1 while the storage backend "
                                "fails and what needs storing is refused.", value=int(degraded))
        yield GaugeMetricFamily("hbroker_storage_full", "1 when the last failure was for "
                                "lack of space (storage.max_size).", value=int(full))
        yield GaugeMetricFamily("hbroker_storage_pending_changes", "Changes waiting for a "
                                "storage commit (the storage queue depth).", value=pending)
        yield CounterMetricFamily("hbroker_storage_commits", "Storage commits done.",
                                  value=commits)
        yield CounterMetricFamily("hbroker_storage_commit_failures", "Storage commits that "
                                  "failed (each retried).", value=failures)
        yield HistogramMetricFamily(
            "hbroker_storage_commit_duration_seconds", "How long storage commits took (one "
            "observation per grouped commit).",
            buckets=[(_bound(le), n) for le, n in buckets], sum_value=total)


def _bound(le: float) -> str:
    return "+Inf" if le == float("inf") else repr(le)


def _now() -> float:
    import time

    return time.monotonic()


def registry_for(broker: Broker, listener_names: Callable[[], Iterable[str]] = tuple,
                 cluster: ClusterRouting | None = None) -> CollectorRegistry:
    """The broker's collector and the process collector, in a registry of their own; with
    `cluster` (the instance's `ClusterRouting`, when clustered), the cluster's collector too."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(broker, listener_names))
    if cluster is not None:
        from hbroker.cluster.metrics import ClusterCollector

        registry.register(ClusterCollector(cluster))
    ProcessCollector(registry=registry)
    return registry


def setup(admin: AdminServer) -> None:
    """`GET /metrics`: public unless `admin.metrics_auth`, then any token's role may read."""
    from aiohttp import web

    from hbroker.admin.server import PUBLIC, READ

    registry = registry_for(admin.broker, admin.listener_names, admin.server.cluster)

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    admin.add_route("GET", "/metrics", metrics,
                    READ if admin.config.metrics_auth else PUBLIC)
