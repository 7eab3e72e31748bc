"""Retained messages across a cluster: kept in JetStream, the same on every instance (also on
one that had no subscriber when the message was published), matched by wildcards, cleared by
an empty payload, and still there after every instance restarted."""

from __future__ import annotations

import itertools
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_process import BrokerProcess
from clients import QUIET, PahoClient
from instances import start_instances, stop_instances
from nats_cluster import NatsCluster

_ids = itertools.count(1)


@pytest.fixture(scope="module")
def instances(_nats_cluster: NatsCluster) -> Iterator[list[BrokerProcess]]:
    with tempfile.TemporaryDirectory(prefix="hbroker-retained-") as tmp:
        started = start_instances(Path(tmp), _nats_cluster.urls, subject_prefix="ret")
        yield started
        stop_instances(started)


def retained_on(b: BrokerProcess, topic_filter: str, expected: int,
                deadline: float = 15.0) -> dict[str, tuple[bytes, int]]:
    """The retained messages a new subscriber on `b` receives for `topic_filter`, once it
    receives `expected` of them (a record published elsewhere reaches `b` through the
    stream: asked again until it has)."""
    end = time.monotonic() + deadline
    while True:
        c = PahoClient(b.host, b.port, f"look-{next(_ids)}")
        try:
            c.subscribe(topic_filter, 1)
            got: dict[str, tuple[bytes, int]] = {}
            while True:
                try:
                    m = c.messages.get(timeout=QUIET)
                except Exception:
                    break
                assert m.retain, (m.topic, m.payload)
                got[m.topic] = (m.payload, m.qos)
        finally:
            c.disconnect()
        if len(got) >= expected or time.monotonic() > end:
            return got


def test_retained_on_every_instance_with_wildcards_and_cleared(
        instances: list[BrokerProcess]) -> None:
    hb1, hb2, hb3 = instances
    pub = PahoClient(hb1.host, hb1.port, f"rpub-{next(_ids)}")
    try:
        pub.publish("home/kitchen/temp", b"21", 1, retain=True)
        pub.publish("home/hall/temp", b"19", 0, retain=True)
        pub.publish("home/hall/hum", b"40", 2, retain=True)
        expected = {"home/kitchen/temp": (b"21", 1), "home/hall/temp": (b"19", 0),
                    "home/hall/hum": (b"40", 1)}
        for b in (hb1, hb2, hb3):  # none of them had a subscriber for these topics
            assert retained_on(b, "home/#", 3) == expected, b.log()[-2000:]
        assert retained_on(hb3, "home/+/temp", 2) == {
            k: v for k, v in expected.items() if k.endswith("/temp")}
        # A live subscriber on another instance gets the retained PUBLISH once.
        live = PahoClient(hb2.host, hb2.port, f"rlive-{next(_ids)}")
        live.subscribe("home/kitchen/#", 1)
        assert live.expect().payload == b"21"  # the retained message on subscribing
        pub.publish("home/kitchen/temp", b"22", 1, retain=True)
        m = live.expect()
        assert (m.topic, m.payload) == ("home/kitchen/temp", b"22")
        live.expect_none()
        live.disconnect()
        # Cleared on one instance: gone on every one.
        pub.publish("home/hall/hum", b"", 1, retain=True)
        for b in (hb1, hb2, hb3):
            end = time.monotonic() + 15
            while "home/hall/hum" in retained_on(b, "home/#", 3, deadline=0):
                assert time.monotonic() < end, "home/hall/hum still retained"
    finally:
        pub.disconnect()


def test_retained_survive_a_restart_of_every_instance(instances: list[BrokerProcess]) -> None:
    hb1, hb2, hb3 = instances
    pub = PahoClient(hb2.host, hb2.port, f"rpub-{next(_ids)}")
    pub.publish("plant/line1/state", b"running", 1, retain=True)
    pub.publish("plant/line2/state", b"stopped", 1, retain=True)
    pub.disconnect()
    for b in instances:  # memory storage: only the cluster keeps them
        assert b.stop() == 0, b.log()
    for b in instances:
        b.restart()  # listening means joined: the records are loaded before
    for b in instances:
        assert retained_on(b, "plant/+/state", 2, deadline=0) == {
            "plant/line1/state": (b"running", 1), "plant/line2/state": (b"stopped", 1)}
