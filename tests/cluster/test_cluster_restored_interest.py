"""An instance restarted with durable storage takes NATS interest for the filters of the
sessions it restored (no SUBSCRIBE comes for them), so messages published on other instances
while their clients are offline are queued for them."""

from __future__ import annotations

import time
from pathlib import Path

from clients import PahoClient
from instances import start_instances, stop_instances
from nats_cluster import NatsCluster


def nats_subscriptions(cluster: NatsCluster, node: int, connection: str) -> set[str]:
    """The subjects the NATS connection named `connection` subscribes on node `node`."""
    status, body = cluster.nodes[node].monitor("/connz?subs=1")
    if status != 200:
        return set()
    return {s for c in body.get("connections", []) if c.get("name") == connection
            for s in c.get("subscriptions_list", [])}


def test_a_restored_session_keeps_its_interest(tmp_path: Path,
                                               nats_cluster: NatsCluster) -> None:
    hb1, hb2 = start_instances(tmp_path, nats_cluster.urls, 2, subject_prefix="rest",
                               sections={"storage": {"backend": "sqlite",
                                                     "path": "data/hbroker.db"}})
    try:
        sub = PahoClient(hb2.host, hb2.port, "restored", clean=False, session_expiry=3600)
        sub.subscribe("plant/+/alarm", 1)
        sub.disconnect()
        assert hb2.stop() == 0, hb2.log()
        hb2.restart()
        end = time.monotonic() + 15
        while "rest.plant.*.alarm" not in nats_subscriptions(nats_cluster, 1, "hb2"):
            assert time.monotonic() < end, "hb2 took no interest for its restored session"
            time.sleep(0.05)
        pub = PahoClient(hb1.host, hb1.port, "restored-pub")
        pub.publish("plant/line1/alarm", b"overheat", 1)
        pub.disconnect()
        sub = PahoClient(hb2.host, hb2.port, "restored", clean=False, session_expiry=3600)
        assert sub.session_present
        m = sub.expect()
        assert (m.topic, m.payload, m.qos) == ("plant/line1/alarm", b"overheat", 1)
        sub.disconnect()
    finally:
        stop_instances([hb1, hb2])
