"""Faults across a cluster: an instance killed with -9 (its clients' acknowledged messages are
not lost), an instance that holds a session killed (the client starts again elsewhere), a
CONNECT while the instance has no NATS, and a QoS 2 PUBLISH sent again before its PUBREL
(forwarded once [MQTT-4.3.3-10]).

Real processes: a 3-node nats-server cluster, hbroker instances on its nodes, paho and raw
MQTT clients."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_process import BrokerProcess
from clients import PahoClient, RawClient
from hbroker_ext.codec import PUBLISH, SESSION_EXPIRY_INTERVAL, Publish, Pubrel
from instances import start_instances, stop_instances
from nats_cluster import NatsCluster
from test_cluster_sessions import wait_delivered

_ids = itertools.count(1)


@pytest.fixture
def two(nats_cluster: NatsCluster, tmp_path: Path) -> Iterator[list[BrokerProcess]]:
    started = start_instances(tmp_path, nats_cluster.urls, 2)
    yield started
    for b in started:
        if b.proc.poll() is None:
            b.stop()


def unique(name: str) -> str:
    return f"{name}-f{next(_ids)}"


def test_publisher_instance_killed_mid_stream_loses_no_acknowledged_message(two):
    """The publisher's instance is killed with -9 while QoS 1 messages stream to a
    subscriber on another instance: every message the publisher had a PUBACK for arrives
    (the PUBACK waited for JetStream and for the NATS server to hold the live copy)."""
    hb1, hb2 = two
    topic = f"kill/{unique('pub')}"
    sub = RawClient(hb2.host, hb2.port)
    sub.connect(unique("sub"))
    assert sub.subscribe(topic, 1) == [1]
    pub = PahoClient(hb1.host, hb1.port, unique("pub"), max_inflight=50)
    wait_delivered(pub, sub, topic)
    mids = {}
    for batch in range(7):  # 300 acknowledged, then a batch in flight when it is killed
        sent = set()
        for n in range(batch * 50, batch * 50 + 50):
            mid = pub.publish(topic, str(n).encode(), 1, wait=False)
            mids[mid] = n
            sent.add(mid)
        if batch < 6:
            assert pub.wait_acked(sent)
    hb1.kill()
    pub.client.loop_stop()
    with pub._cond:
        acknowledged = {mids[m] for m, code in pub.ack_codes.items()
                        if m in mids and code < 0x80}
    assert len(acknowledged) >= 300
    received = set()
    while not acknowledged <= received:
        p = sub.recv_or_none(5)
        assert p is not None, f"not delivered: {sorted(acknowledged - received)}"
        assert p.packet_type == PUBLISH
        received.add(int(p.payload))
        sub.ack(p)
    sub.close()


def test_a_qos2_publish_sent_again_before_pubrel_is_forwarded_once(two):
    hb1, hb2 = two
    topic = f"q2/{unique('dup')}"
    sub = RawClient(hb2.host, hb2.port)
    sub.connect(unique("sub"))
    assert sub.subscribe(topic, 2) == [2]
    probe = PahoClient(hb1.host, hb1.port, unique("probe"))
    wait_delivered(probe, sub, topic)
    probe.disconnect()
    pub = RawClient(hb1.host, hb1.port)
    pub.connect(unique("pub"))
    pub.send(Publish(topic, b"once", 2, False, False, 7, None))
    assert pub.recv_type(5).reason_code == 0  # PUBREC
    pub.send(Publish(topic, b"once", 2, False, True, 7, None))  # DUP, before PUBREL
    assert pub.recv_type(5).reason_code == 0
    pub.send(Pubrel(7))
    pub.recv_type(7)
    p = sub.recv_type(PUBLISH)
    assert p.payload == b"once"
    sub.ack(p)
    assert sub.recv_or_none() is None  # [MQTT-4.3.3-10]: not delivered twice
    pub.close()
    sub.close()


def test_the_instance_holding_a_session_killed_the_client_starts_again_elsewhere(two):
    """An owner that is gone (no NATS subscription answers its takeover requests): a CONNECT
    of its client id on another instance is accepted at once with a new session."""
    hb1, hb2 = two
    cid = unique("orphan")
    old = RawClient(hb1.host, hb1.port)
    old.connect(cid, clean_start=False, properties={SESSION_EXPIRY_INTERVAL: 300})
    hb1.kill()
    old.close()
    new = RawClient(hb2.host, hb2.port)
    connack = new.connect(cid, clean_start=False, properties={SESSION_EXPIRY_INTERVAL: 300})
    assert connack.reason_code == 0
    assert not connack.session_present
    hb2.wait_log(rf"instance hb1, which held the session, is gone: a new session starts "
                 rf"here node=hb2 client_id={cid}")
    new.close()


def test_a_connect_without_nats_is_refused_with_0x88(tmp_path: Path, nats_server_with):
    """Without NATS the instance cannot make the client id its own cluster-wide: the CONNECT
    is refused (0x88 Server unavailable), never accepted beside another session of the id;
    once NATS is back, it is accepted."""
    nats = nats_server_with()  # one server: nowhere else to reconnect to
    (hb,) = start_instances(tmp_path, nats.urls, 1, stream_replicas=1)
    try:
        nats.kill(0)
        hb.wait_log("cluster: NATS connection lost")
        refused = RawClient(hb.host, hb.port)
        assert refused.connect(unique("no-nats")).reason_code == 0x88
        refused.close()
        nats.start(0)
        hb.wait_log("cluster: NATS connection back", timeout=30)
        accepted = RawClient(hb.host, hb.port)
        assert accepted.connect(unique("nats-back")).reason_code == 0
        accepted.close()
    finally:
        stop_instances([hb])
