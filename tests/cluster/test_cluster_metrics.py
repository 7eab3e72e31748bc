"""`/metrics` of clustered instances (hbroker.cluster.metrics): the `hbroker_cluster_*`
metrics follow the cluster (a message between two instances, an instance killed -9).

Real processes: a 3-node nats-server cluster, three hbroker instances each with its own admin
listener, paho-mqtt, the exposition format parsed by prometheus-client's parser."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from broker_process import BrokerProcess, free_port
from clients import PahoClient
from instances import stop_instances
from nats_cluster import NatsCluster
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def start_with_admin(directory: Path, nats_urls: list[str], count: int
                     ) -> list[tuple[BrokerProcess, int]]:
    """`count` instances hb1.. as `start_instances` makes them (instance i connects to NATS
    node i only), each with an admin listener on a port of its own: (process, admin port)."""
    started: list[tuple[BrokerProcess, int]] = []
    try:
        for i, url in enumerate(nats_urls[:count]):
            workdir = directory / f"hb{i + 1}"
            workdir.mkdir(parents=True)
            port = free_port()
            started.append((BrokerProcess(workdir, {
                "storage": {"backend": "memory"},
                "cluster": {"backend": "nats", "servers": [url], "name": f"hb{i + 1}",
                            "stream_replicas": 3, "publish_timeout": 2.0,
                            # buckets and streams of their own in the shared NATS cluster:
                            # no instance records left by the other tests
                            "subject_prefix": "metrics"},
                "admin": {"enabled": True, "port": port}}), port))
    except BaseException:
        stop_instances([b for b, _ in started])
        raise
    return started


def scrape(port: int) -> Samples:
    """Every sample of the instance's /metrics: (name, labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.status == 200
        text = r.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no {name}{labels} in {sorted(k for k, _ in samples)}"
    return samples[key]


def instances(samples: Samples) -> dict[str, float]:
    return {state: value(samples, "hbroker_cluster_instances", state=state)
            for state in ("alive", "stopped", "dead")}


def until(port: int, condition: Callable[[Samples], bool], what: str,
          timeout: float = 30) -> Samples:
    """Scrape until `condition` holds of the samples; AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(port)
        if condition(samples):
            return samples
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s: " \
            f"{ {k[0]: v for k, v in samples.items() if k[0].startswith('hbroker_cluster')} }"
        time.sleep(0.2)


def test_cluster_metrics_follow_the_cluster(nats_cluster: NatsCluster, tmp_path: Path) -> None:
    started = start_with_admin(tmp_path, nats_cluster.urls, 3)
    (hb1, port1), (hb2, port2), (hb3, port3) = started
    try:
        for port in (port1, port2, port3):
            samples = until(port, lambda s: instances(s) == {"alive": 3, "stopped": 0,
                                                             "dead": 0},
                            "three instances alive")
            assert value(samples, "hbroker_cluster_state", state="joined") == 1
            for other in ("joining", "disconnected", "fenced"):
                assert value(samples, "hbroker_cluster_state", state=other) == 0
            assert value(samples, "hbroker_cluster_nats_connected") == 1
            assert value(samples, "hbroker_cluster_nats_reconnects_total") == 0
            assert value(samples, "hbroker_cluster_nats_messages_sent_total") > 0
            assert value(samples, "hbroker_cluster_instances_declared_dead_total") == 0
        assert value(scrape(port2), "hbroker_cluster_info", node="hb2") == 1

        # QoS 1 from a publisher on hb1 to a subscriber on hb2: hb1 forwards every message
        # its clients publish, hb2 publishes here each one it took from the stream.
        before1, before2 = scrape(port1), scrape(port2)
        sub = PahoClient(hb2.host, hb2.port, "metrics-sub")
        pub = PahoClient(hb1.host, hb1.port, "metrics-pub")
        sub.subscribe("metrics/test", 1)
        published = got = 0
        deadline = time.monotonic() + 15
        while True:  # until hb2's consumer takes the topic (interest crosses NATS)
            assert time.monotonic() < deadline, "no message from hb1 reached hb2"
            pub.publish("metrics/test", f"probe {published}".encode(), 1)
            published += 1
            try:
                sub.messages.get(timeout=0.3)
                got += 1
                break
            except Exception:
                continue
        pub.publish("metrics/test", b"last", 1)
        published += 1
        while True:  # every probe after the first one received, then the last message
            msg = sub.expect()
            got += 1
            if msg.payload == b"last":
                break
        assert msg.qos == 1

        def forwarded(s: Samples) -> float:
            return value(s, "hbroker_cluster_messages_forwarded_total") - \
                value(before1, "hbroker_cluster_messages_forwarded_total")

        until(port1, lambda s: forwarded(s) >= published, "hb1 forwarded its messages", 10)
        after1, after2 = scrape(port1), scrape(port2)
        assert forwarded(after1) == published
        assert value(after1, "hbroker_cluster_messages_refused_total") == 0
        received = value(after2, "hbroker_cluster_messages_received_total") - \
            value(before2, "hbroker_cluster_messages_received_total")
        assert received == got
        taken = value(after2, "hbroker_cluster_stream_messages_taken_total") - \
            value(before2, "hbroker_cluster_stream_messages_taken_total")
        assert taken >= got
        # hb1's clients received nothing from the cluster; hb2's published nothing to it
        assert value(after1, "hbroker_cluster_messages_received_total") == \
            value(before1, "hbroker_cluster_messages_received_total")
        assert value(after2, "hbroker_cluster_messages_forwarded_total") == \
            value(before2, "hbroker_cluster_messages_forwarded_total")
        sub.disconnect()
        pub.disconnect()

        # kill -9 of hb3: the survivors see it dead once its lease runs out, and exactly one
        # of them declared it dead.
        hb3.kill()
        for port in (port1, port2):
            until(port, lambda s: instances(s) == {"alive": 2, "stopped": 0, "dead": 1},
                  "hb3 dead")

        def declared() -> float:
            return sum(value(scrape(port), "hbroker_cluster_instances_declared_dead_total")
                       for port in (port1, port2))

        deadline = time.monotonic() + 10
        while (total := declared()) < 1:
            assert time.monotonic() < deadline, "nobody declared hb3 dead"
            time.sleep(0.2)
        assert total == 1
        # and it stays one: the other survivor, whose lease of hb3 ran out too within a look
        # or two (every second), lost the compare-and-swap and did not count it
        end = time.monotonic() + 3
        while time.monotonic() < end:
            assert declared() == 1
            time.sleep(0.2)
        for port in (port1, port2):
            samples = scrape(port)
            assert value(samples, "hbroker_cluster_state", state="joined") == 1
            assert value(samples, "hbroker_cluster_nats_connected") == 1
    finally:
        stop_instances([hb1, hb2])
