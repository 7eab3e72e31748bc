"""Wills cluster-wide: published exactly once, also when the instance holding the client died
or was cut off from the cluster (hbroker.cluster.leases, hbroker.cluster.wills).

Real processes: a 3-node nats-server cluster, three hbroker instances, raw MQTT clients; the
partition is a black-holing TCP proxy between one instance and its NATS server
(tests/cluster/partition_proxy.py)."""

from __future__ import annotations

import datetime
import itertools
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_process import BrokerProcess
from clients import RawClient
from hbroker_ext.codec import (
    DISCONNECT,
    PUBLISH,
    SESSION_EXPIRY_INTERVAL,
    WILL_DELAY_INTERVAL,
    Will,
)
from instances import start_instances, stop_instances
from nats_cluster import NatsCluster
from partition_proxy import PartitionProxy
from test_cluster_sessions import wait_delivered

_ids = itertools.count(1)
DECLARED = 40  # seconds within which a survivor declares a dead instance (lease: 10 s)


def unique(name: str) -> str:
    return f"{name}-w{next(_ids)}"


@pytest.fixture
def three(nats_cluster: NatsCluster, tmp_path: Path) -> Iterator[list[BrokerProcess]]:
    started = start_instances(tmp_path, nats_cluster.urls, 3)
    yield started
    for b in started:
        if b.proc.poll() is None:
            b.stop()


def will_client(broker: BrokerProcess, client_id: str, topic: str, delay: int = 0,
                expiry: int = 0, version: int = 5) -> RawClient:
    """A client with a QoS 1 will on `topic`, once the will is in the cluster's bucket."""
    c = RawClient(broker.host, broker.port, version)
    props = {WILL_DELAY_INTERVAL: delay} if delay and version == 5 else None
    connect_props = {SESSION_EXPIRY_INTERVAL: expiry} if expiry and version == 5 else None
    connack = c.connect(client_id, clean_start=True, properties=connect_props,
                        will=Will(topic, b"gone:" + client_id.encode(), 1, False, props))
    assert connack.reason_code == 0
    broker.wait_log(rf"will stored in the cluster.*client_id={re.escape(client_id)}\b")
    return c


def subscriber(broker: BrokerProcess, topic_filter: str, probe_from: BrokerProcess) -> RawClient:
    """A QoS 1 subscriber on `broker` that messages published at `probe_from` reach."""
    from clients import PahoClient

    sub = RawClient(broker.host, broker.port)
    sub.connect(unique("sub"))
    assert sub.subscribe(topic_filter, 1) == [1]
    pub = PahoClient(probe_from.host, probe_from.port, unique("probe"))
    wait_delivered(pub, sub, topic_filter.replace("#", "probe"))
    pub.disconnect()
    return sub


def wills_received(sub: RawClient, quiet: float) -> list[tuple[str, bytes]]:
    """The PUBLISHes `sub` receives until none comes for `quiet` seconds (acknowledged)."""
    got = []
    while (p := sub.recv_or_none(quiet)) is not None:
        assert p.packet_type == PUBLISH, p
        got.append((p.topic, p.payload))
        sub.ack(p)
    return got


def log_time(broker: BrokerProcess, pattern: str, timeout: float = DECLARED) -> datetime.datetime:
    """The timestamp of the first log line of `broker` matching `pattern`."""
    line = broker.wait_log(rf"(?m)^(\S+) .*{pattern}", timeout)
    return datetime.datetime.fromisoformat(line.group(1).replace("Z", "+00:00"))


def declarer(survivors: list[BrokerProcess], dead: str) -> BrokerProcess:
    """The survivor that declared instance `dead` dead (it says so in its log)."""
    deadline = time.monotonic() + DECLARED
    pattern = re.compile(rf"instance {dead} declared dead")
    while time.monotonic() < deadline:
        for b in survivors:
            if pattern.search(b.log()):
                return b
        time.sleep(0.1)
    raise AssertionError(f"no survivor declared {dead} dead:\n" +
                         "\n".join(b.log()[-3000:] for b in survivors))


def test_a_killed_instances_wills_are_published_once_by_a_survivor(three):
    """kill -9 of the instance holding two clients with wills: the will of one (delay 0) is
    published once, by the survivor that declared the instance dead; the other client
    reconnects to a survivor before its will delay elapsed, so its will is not published
    [MQTT-3.1.3-9]."""
    hb1, hb2, hb3 = three
    run = unique("kill")
    sub = subscriber(hb1, f"will/{run}/#", hb2)
    gone = will_client(hb2, f"{run}-gone", f"will/{run}/gone")
    back_id = f"{run}-back"
    back = will_client(hb2, back_id, f"will/{run}/back", delay=60, expiry=300)
    hb2.kill()
    gone.close()
    back.close()
    again = RawClient(hb3.host, hb3.port)
    connack = again.connect(back_id, clean_start=False,
                            properties={SESSION_EXPIRY_INTERVAL: 300})
    assert connack.reason_code == 0  # a new session: hb2 kept it in memory only
    assert not connack.session_present
    survivor = declarer([hb1, hb3], "hb2")
    survivor.wait_log(r"1 wills of instance hb2 to publish")
    survivor.wait_log(rf"will published for a client of dead instance hb2.*"
                      rf"client_id={re.escape(run)}-gone\b")
    got = wills_received(sub, 3.0)
    assert got == [(f"will/{run}/gone", f"gone:{run}-gone".encode())]
    for b in (hb1, hb3):  # the other survivor did not publish it too
        if b is not survivor:
            assert "will published for a client" not in b.log()
    again.close()
    sub.close()


def test_an_instance_killed_and_started_within_its_lease_publishes_its_wills(three):
    """Started again before anyone declared it dead, the instance publishes the wills its
    previous run left in the cluster's bucket itself, once."""
    hb1, hb2, hb3 = three
    run = unique("restart")
    sub = subscriber(hb1, f"will/{run}/#", hb2)
    will_client(hb2, f"{run}-c", f"will/{run}/c")
    hb2.kill()
    hb2.restart()
    hb2.wait_log(r"1 wills of clients of this instance's previous run to publish")
    hb2.wait_log(rf"will published for a client of this instance.*client_id={run}-c\b")
    got = wills_received(sub, 3.0)
    assert got == [(f"will/{run}/c", f"gone:{run}-c".encode())]
    for b in (hb1, hb3):
        assert "declared dead" not in b.log()
    sub.close()


def test_an_instance_cut_off_from_nats_fences_its_clients_before_their_wills_go_out(
        nats_cluster: NatsCluster, tmp_path: Path):
    """hb3 reaches NATS only through a proxy that starts black-holing (a partition, no FIN):
    hb3 stops renewing its lease, disconnects its clients (DISCONNECT 0x9C Use another server;
    a 3.1.1 client is closed) and refuses new ones with 0x9C; only after that does a
    survivor declare it dead and publish their wills, each once. When the partition heals,
    hb3 learns that it was declared dead, publishes nothing again, and serves clients as part
    of the cluster on its own."""
    hb1, hb2 = start_instances(tmp_path, nats_cluster.urls, 2)
    host, port = nats_cluster.urls[2].removeprefix("nats://").split(":")
    proxy = PartitionProxy((host, int(port)))
    workdir = tmp_path / "hb3"
    workdir.mkdir()
    hb3 = BrokerProcess(workdir, {
        "storage": {"backend": "memory"},
        "cluster": {"backend": "nats", "servers": [proxy.url], "name": "hb3",
                    "stream_replicas": 3, "publish_timeout": 2.0}})
    try:
        run = unique("cut")
        sub = subscriber(hb1, f"will/{run}/#", hb3)
        five = will_client(hb3, f"{run}-five", f"will/{run}/five")
        old = will_client(hb3, f"{run}-old", f"will/{run}/old", version=4)
        proxy.cut()
        packets = five.closed_by_broker(timeout=30)
        assert [(p.packet_type, p.reason_code) for p in packets] == [(DISCONNECT, 0x9C)]
        assert old.closed_by_broker(timeout=5) == []  # 3.1.1: no DISCONNECT to read
        refused = RawClient(hb3.host, hb3.port)
        assert refused.connect(unique("late")).reason_code == 0x9C
        refused.close()
        fenced_at = log_time(hb3, r"cluster: fenced: 2 clients sent to another instance")
        survivor = declarer([hb1, hb2], "hb3")
        survivor.wait_log(r"2 wills of instance hb3 to publish")
        got = sorted(wills_received(sub, 5.0))
        assert got == [(f"will/{run}/five", f"gone:{run}-five".encode()),
                       (f"will/{run}/old", f"gone:{run}-old".encode())]
        published_at = log_time(survivor, r"will published for a client of dead instance hb3")
        assert fenced_at < published_at, (fenced_at, published_at)

        proxy.heal()
        hb3.wait_log(r"this instance was declared dead by the others", 60)
        hb3.wait_log(r"lease renewed again: clients are accepted", 60)
        deadline = time.monotonic() + 30
        while True:  # readiness settles with the NATS connection
            back = RawClient(hb3.host, hb3.port)
            if back.connect(unique("back")).reason_code == 0:
                break
            back.close()
            assert time.monotonic() < deadline, hb3.log()[-3000:]
            time.sleep(0.2)
        ack = back.publish(f"will/{run}/after", b"after", 1)
        assert ack.reason_code == 0, (ack, hb3.log()[-4000:])
        got_after = wills_received(sub, 3.0)
        assert got_after == [(f"will/{run}/after", b"after")]
        assert "will published for a client of this instance" not in hb3.log()
        back.close()
        sub.close()
    finally:
        proxy.heal()
        stop_instances([hb1, hb2])
        if hb3.proc.poll() is None:
            hb3.stop()
        proxy.close()
