"""One session per client id across the cluster: takeover between instances, sessions that
move with their client (inflight messages re-sent with their packet ids and DUP, the queue in
order), expiry-0 and Clean Start sessions that end rather than move, and simultaneous
CONNECTs of one client id on every instance leaving exactly one connection.

Three hbroker processes, each on its own node of a real 3-node NATS cluster; raw MQTT
clients (packet by packet: packet ids, DUP and reason codes are what is checked) and paho."""

from __future__ import annotations

import itertools
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_process import BrokerProcess
from clients import PahoClient, RawClient
from hbroker_ext.codec import (
    DISCONNECT,
    PUBLISH,
    SESSION_EXPIRY_INTERVAL,
    Pingreq,
    Will,
)
from instances import start_instances, stop_instances
from nats_cluster import NatsCluster

INSTANCES = 3
_ids = itertools.count(1)


@pytest.fixture(scope="module")
def instances(_nats_cluster: NatsCluster) -> Iterator[list[BrokerProcess]]:
    with tempfile.TemporaryDirectory(prefix="hbroker-cluster-") as tmp:
        started = start_instances(Path(tmp), _nats_cluster.urls, INSTANCES)
        yield started
        stop_instances(started)


def raw(b: BrokerProcess) -> RawClient:
    return RawClient(b.host, b.port)


def unique(name: str) -> str:
    return f"{name}-{next(_ids)}"


def persistent(expiry: int = 300) -> dict:
    return {SESSION_EXPIRY_INTERVAL: expiry}


def wait_delivered(pub: PahoClient, sub: RawClient, topic: str) -> None:
    """Publish QoS 0 probes on `topic` from `pub` until `sub` receives one (NATS interest
    reaches the other servers asynchronously), then take the probes still on the way."""
    deadline = time.monotonic() + 15
    while True:
        assert time.monotonic() < deadline, "no probe arrived"
        pub.publish(topic, b"probe")
        p = sub.recv_or_none(0.2)
        if p is not None:
            assert p.packet_type == PUBLISH and p.payload == b"probe", p
            break
    pub.publish(topic, b"probe-last")
    while sub.recv().payload != b"probe-last":
        pass


def test_takeover_closes_the_old_connection_with_0x8e(instances):
    hb1, hb2, _ = instances
    cid = unique("takeover")
    old = raw(hb1)
    assert old.connect(cid, clean_start=False, properties=persistent()).reason_code == 0
    new = raw(hb2)
    started = time.monotonic()
    connack = new.connect(cid, clean_start=False, properties=persistent())
    assert connack.reason_code == 0
    assert connack.session_present  # the session came along
    got = old.closed_by_broker()
    took = time.monotonic() - started
    assert [p.reason_code for p in got if p.packet_type == DISCONNECT] == [0x8E], got
    assert took < 1.0, \
        f"old connection closed {took:.2f} s after the new CONNECT\n{hb2.log()}\n{hb1.log()}"
    new.send(Pingreq())
    assert new.recv().packet_type == 13  # PINGRESP: the newcomer stays
    hb1.wait_log(rf'connection closed client_id={cid} .*reason="session taken over by '
                 rf'instance hb2"')
    new.close()
    old.close()


def test_a_moved_session_keeps_its_subscriptions_inflight_and_queue(instances):
    """Roaming: a subscriber disconnects from hb1 with messages in flight (not acknowledged)
    and queued, reconnects to hb2: the inflight ones again with their packet ids and DUP
    [MQTT-4.4.0-1], then the queue, in publish order, and new messages after them."""
    hb1, hb2, hb3 = instances
    cid = unique("roam")
    topic = f"roam/{cid}/t"
    sub = raw(hb1)
    sub.connect(cid, clean_start=False,
                properties={**persistent(), 0x21: 5})  # Receive Maximum 5
    assert sub.subscribe(f"roam/{cid}/#", 1) == [1]
    pub = PahoClient(hb3.host, hb3.port, unique("roam-pub"))
    wait_delivered(pub, sub, topic)
    count = 1000
    acked = {pub.publish(topic, str(n).encode(), 1) for n in range(count)}
    assert pub.wait_acked(acked)
    inflight = [sub.recv() for _ in range(5)]  # the window: 5, not acknowledged
    assert [p.payload for p in inflight] == [b"0", b"1", b"2", b"3", b"4"]
    sub.close()  # gone without DISCONNECT: the session stays, with 995 queued
    hb1.wait_log(rf"connection closed client_id={cid} ")

    back = raw(hb2)
    connack = back.connect(cid, clean_start=False, properties=persistent())
    assert connack.session_present
    resent = [back.recv() for _ in range(5)]
    assert [(p.payload, p.packet_id, p.dup) for p in resent] == \
        [(p.payload, p.packet_id, True) for p in inflight]
    for p in resent:
        back.ack(p)
    got = []
    while len(got) < count - 5:
        p = back.recv()
        assert p.packet_type == PUBLISH, p
        assert not p.dup
        got.append(int(p.payload))
        back.ack(p)
    assert got == list(range(5, count))
    # still subscribed, through hb2's own NATS interest now
    pub.publish(topic, b"after", 1)
    p = back.recv()
    assert p.payload == b"after"
    back.ack(p)
    assert back.recv_or_none() is None  # no copy came twice
    hb2.wait_log(rf"cluster: session taken over node=hb2 client_id={cid} from=hb1 ")
    pub.disconnect()
    back.close()


def test_expiry_zero_session_ends_rather_than_moves(instances):
    """A session with Session Expiry 0 ends with its connection: a CONNECT with Clean Start
    0 on another instance gets a new session (Session Present 0, no subscriptions), and the
    old connection's will is published, once."""
    hb1, hb2, hb3 = instances
    cid = unique("expiry0")
    watcher = raw(hb3)
    watcher.connect(unique("watcher"))
    assert watcher.subscribe(f"will/{cid}", 1) == [1]
    old = raw(hb1)
    old.connect(cid, clean_start=False, will=Will(f"will/{cid}", b"gone", 1, False, None))
    assert old.subscribe(f"e0/{cid}", 1) == [1]
    pub = PahoClient(hb1.host, hb1.port, unique("e0-pub"))
    wait_delivered(pub, watcher, f"will/{cid}")
    new = raw(hb2)
    connack = new.connect(cid, clean_start=False)
    assert not connack.session_present
    assert [p.reason_code for p in old.closed_by_broker() if p.packet_type == DISCONNECT] \
        == [0x8E]
    will = watcher.recv_type(PUBLISH)
    assert will.payload == b"gone"
    watcher.ack(will)
    pub.publish(f"e0/{cid}", b"nobody", 1)
    assert new.recv_or_none() is None  # the subscription did not move
    assert watcher.recv_or_none() is None  # the will came once
    pub.disconnect()
    for c in (new, old, watcher):
        c.close()


def test_clean_start_elsewhere_ends_the_session_and_publishes_the_will(instances):
    hb1, hb2, hb3 = instances
    cid = unique("clean")
    watcher = raw(hb3)
    watcher.connect(unique("watcher"))
    assert watcher.subscribe(f"will/{cid}", 1) == [1]
    old = raw(hb1)
    old.connect(cid, clean_start=False, properties=persistent(),
                will=Will(f"will/{cid}", b"gone", 1, False, None))
    pub = PahoClient(hb1.host, hb1.port, unique("clean-pub"))
    wait_delivered(pub, watcher, f"will/{cid}")
    new = raw(hb2)
    assert not new.connect(cid, clean_start=True).session_present
    assert [p.reason_code for p in old.closed_by_broker() if p.packet_type == DISCONNECT] \
        == [0x8E]
    will = watcher.recv_type(PUBLISH)
    assert will.payload == b"gone"
    watcher.ack(will)
    assert watcher.recv_or_none() is None
    pub.disconnect()
    for c in (new, old, watcher):
        c.close()


def test_simultaneous_connects_on_every_instance_leave_exactly_one(instances):
    """Ten CONNECTs with one client id, at once, spread over the three instances: each is
    accepted, and all but one are then closed with 0x8E; the one left is connected, and
    holds the session (it receives what is published to its subscription)."""
    cid = unique("storm")
    n = 10
    clients = [raw(instances[i % INSTANCES]) for i in range(n)]
    start = threading.Barrier(n)
    connacks: list = [None] * n

    def connect(i: int) -> None:
        start.wait()
        # each waits for the claims before it; an instance that just lost the id makes a
        # new CONNECT of it wait up to a second (the flapper jail): allow for the chain
        connacks[i] = clients[i].connect(cid, clean_start=False, properties=persistent(),
                                         timeout=30)

    threads = [threading.Thread(target=connect, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(c is not None and c.reason_code == 0 for c in connacks), connacks
    closed: list = [None] * n
    done = threading.Semaphore(0)

    def watch(i: int) -> None:
        try:
            closed[i] = clients[i].closed_by_broker(timeout=60)
        except AssertionError:
            closed[i] = False  # still open after a minute
        done.release()

    watchers = [threading.Thread(target=watch, args=(i,)) for i in range(n)]
    for t in watchers:
        t.start()
    for _ in range(n - 1):  # n - 1 are closed, each with 0x8E
        assert done.acquire(timeout=40), closed
    survivors = [i for i, c in enumerate(closed) if c is None]
    assert len(survivors) == 1, closed
    for i, got in enumerate(closed):
        if i not in survivors:
            assert [p.reason_code for p in got if p.packet_type == DISCONNECT] == [0x8E]
    # The one left holds the session: a CONNECT elsewhere takes it over from it.
    probe = raw(instances[(survivors[0] + 1) % INSTANCES])
    assert probe.connect(cid, clean_start=False, properties=persistent()).session_present
    assert done.acquire(timeout=40)
    got = closed[survivors[0]]
    assert got not in (None, False), "the survivor was not taken over"
    assert [p.reason_code for p in got if p.packet_type == DISCONNECT] == [0x8E]
    for t in watchers:
        t.join(5)
    probe.close()
    for c in clients:
        c.close()


def test_a_session_moves_while_messages_stream_in(instances):
    """A subscriber moves from hb1 to hb2 while a publisher on hb3 keeps publishing QoS 1:
    every acknowledged message arrives, in order, none twice except re-sends with DUP of
    those whose PUBACK the old connection may not have delivered [MQTT-4.4.0-1]."""
    hb1, hb2, hb3 = instances
    cid = unique("moving")
    topic = f"stream/{cid}"
    sub = raw(hb1)
    sub.connect(cid, clean_start=False, properties=persistent())
    assert sub.subscribe(topic, 1) == [1]
    pub = PahoClient(hb3.host, hb3.port, unique("stream-pub"))
    wait_delivered(pub, sub, topic)
    total = 1500
    numbers: dict[int, int] = {}
    published = threading.Event()

    def publish() -> None:
        for start in range(0, total, 25):
            sent = set()
            for n in range(start, start + 25):
                mid = pub.publish(topic, str(n).encode(), 1, wait=False)
                numbers[mid] = n
                sent.add(mid)
            pub.wait_acked(sent)
        published.set()

    publisher = threading.Thread(target=publish)
    publisher.start()
    got: list[tuple[int, bool]] = []
    while len(got) < 300:  # on hb1, acknowledging each
        p = sub.recv()
        got.append((int(p.payload), p.dup))
        sub.ack(p)
    sub.close()
    back = raw(hb2)
    assert back.connect(cid, clean_start=False, properties=persistent()).session_present
    publisher.join(60)
    assert published.is_set()
    with pub._cond:
        acknowledged = {numbers[m] for m, code in pub.ack_codes.items()
                        if m in numbers and code < 0x80}
    assert len(acknowledged) == total
    while not acknowledged <= {n for n, _ in got}:
        p = back.recv_or_none(5)
        assert p is not None, f"missing {sorted(acknowledged - {n for n, _ in got})[:20]}"
        got.append((int(p.payload), p.dup))
        back.ack(p)
    assert back.recv_or_none() is None
    seen: set[int] = set()
    firsts = []
    for n, dup in got:
        if n in seen:
            assert dup, f"{n} received twice, the second time without DUP"
        else:
            seen.add(n)
            firsts.append(n)
    assert firsts == sorted(firsts), "out of order"
    pub.disconnect()
    back.close()
