"""Shared subscriptions across the instances of a cluster (issue 17, test 6): each message of
a `$share` group reaches one member cluster-wide, every group on a filter gets every message,
a non-shared subscriber still gets all; a member's instance killed with -9 while the member
holds unacknowledged QoS 1 messages: they reach another member.

Real processes: a 3-node nats-server cluster, 3 hbroker instances, paho and raw MQTT clients.
"""

from __future__ import annotations

import itertools
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_process import BrokerProcess
from clients import PahoClient, RawClient
from hbroker_ext.codec import PUBLISH, RECEIVE_MAXIMUM, SESSION_EXPIRY_INTERVAL
from instances import start_instances, stop_instances
from nats_cluster import NatsCluster

_ids = itertools.count(1)
DEADLINE = 60.0  # seconds for what must arrive (a redelivery waits out ACK_WAIT, 6 s)


@pytest.fixture
def instances(nats_cluster: NatsCluster, tmp_path: Path) -> Iterator[list[BrokerProcess]]:
    started = start_instances(tmp_path, nats_cluster.urls, 3)
    yield started
    alive = [b for b in started if b.proc.poll() is None]
    stop_instances(alive)


def unique(name: str) -> str:
    return f"{name}-s{next(_ids)}"


def wait_group_ready(instances: list[BrokerProcess], group: str) -> None:
    for hb in instances:
        hb.wait_log(r"cluster: shared group ready .*" + re.escape(group), timeout=30)


def drain(clients: list[PahoClient], until: float) -> list[bytes]:
    """What `clients` received until the deadline, or until they are quiet."""
    got = []
    while time.monotonic() < until:
        quiet = True
        for c in clients:
            while not c.messages.empty():
                got.append(c.messages.get().payload)
                quiet = False
        if quiet:
            time.sleep(0.05)
    return got


def collect(clients: list[PahoClient], expected: set[bytes], deadline: float,
            then: float = 1.0, by: dict[int, Counter] | None = None) -> Counter:
    """Payloads `clients` received (counted) once all of `expected` arrived, and `then`
    seconds more (a duplicate would show); `by`: client index -> its own counts."""
    got: Counter = Counter()
    by = {} if by is None else by
    end = time.monotonic() + deadline
    settle = None
    while True:
        now = time.monotonic()
        if settle is None and (now >= end or expected <= set(got)):
            settle = now + then
        if settle is not None and now >= settle:
            return got
        for i, c in enumerate(clients):
            while not c.messages.empty():
                payload = c.messages.get().payload
                got[payload] += 1
                by.setdefault(i, Counter())[payload] += 1
        time.sleep(0.02)


def probe_until_received(publishers: list[PahoClient], audiences: list[list[PahoClient]],
                         topic: str) -> None:
    """QoS 0 probes from each publisher until each audience (a group's members, or one
    subscriber) received one of its probes: NATS interest reaches the other servers
    asynchronously. Then the probes still on the way are taken."""
    for i, pub in enumerate(publishers):
        probe = f"probe-{i}".encode()
        waiting = list(range(len(audiences)))
        deadline = time.monotonic() + 20
        while waiting:
            assert time.monotonic() < deadline, f"probes of publisher {i} did not arrive"
            pub.publish(topic, probe)
            time.sleep(0.05)
            for a in list(waiting):
                for c in audiences[a]:
                    while not c.messages.empty():
                        if c.messages.get().payload == probe:
                            if a in waiting:
                                waiting.remove(a)
    last = b"probe-last"
    for pub in publishers:
        pub.publish(topic, last)
    for audience in audiences:
        drain(audience, time.monotonic() + 0.5)


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_each_message_reaches_one_member_of_each_group_and_every_plain_subscriber(
        instances, qos):
    """Group A has a member on every instance, group B on two, a plain subscriber on the
    third; a publisher on each instance: every message exactly once per group (also QoS 0:
    nothing fails here) and once to the plain subscriber."""
    hb1, hb2, hb3 = instances
    topic = f"shared/{unique('t')}"
    base = topic.rsplit("/", 1)[0]
    group_a = f"$share/{unique('a')}/{base}/+"
    group_b = f"$share/{unique('b')}/{topic}"
    a = [PahoClient(hb.host, hb.port, unique("a")) for hb in instances]
    b = [PahoClient(hb.host, hb.port, unique("b")) for hb in (hb1, hb3)]
    for m in a:
        assert [c.value for c in m.subscribe(group_a, qos)] == [qos]
    for m in b:
        assert [c.value for c in m.subscribe(group_b, qos)] == [qos]
    plain = PahoClient(hb2.host, hb2.port, unique("plain"))
    plain.subscribe(f"{base}/#", qos)
    wait_group_ready(instances, group_a)
    wait_group_ready([hb1, hb3], group_b)
    # 20: the broker's Receive Maximum, which paho does not read from the CONNACK
    pubs = [PahoClient(hb.host, hb.port, unique("pub"), max_inflight=20) for hb in instances]
    probe_until_received(pubs, [a, b, [plain]], topic)

    expected = set()
    for i, pub in enumerate(pubs):
        mids = set()
        for n in range(40):
            payload = f"{i}:{n}".encode()
            expected.add(payload)
            mids.add(pub.publish(topic, payload, qos, wait=False))
        if qos:
            assert pub.wait_acked(mids, 30)
    spread: dict[int, Counter] = {}
    for name, audience in (("group A", a), ("group B", b), ("plain", [plain])):
        got = collect(audience, expected, DEADLINE, by=spread if name == "group A" else None)
        got = Counter({p: n for p, n in got.items() if not p.startswith(b"probe")})
        missing = expected - set(got)
        twice = {p: n for p, n in got.items() if n > 1}
        assert not missing and not twice, (
            f"{name}: missing {sorted(missing)[:10]} ({len(missing)}), twice {twice}\n"
            + "\n".join(hb.log()[-3000:] for hb in instances))
    # group A's messages went to members on more than one instance
    members = [i for i, counts in spread.items()
               if any(not p.startswith(b"probe") for p in counts)]
    assert len(members) >= 2, spread
    for c in [*a, *b, plain, *pubs]:
        c.disconnect()


def test_a_killed_members_instance_gives_its_unacknowledged_qos1_messages_to_another_member(
        instances):
    """A member on hb1 receives QoS 1 messages and acknowledges none; hb1 is killed with -9:
    every message reaches the member on hb2 (JetStream gives what hb1 held to hb2 once hb1
    stops saying it still holds them)."""
    hb1, hb2, hb3 = instances
    topic = f"shared/{unique('kill')}"
    group = f"$share/{unique('g')}/{topic}"
    silent = RawClient(hb1.host, hb1.port)
    assert silent.connect(unique("silent"), properties={RECEIVE_MAXIMUM: 5}).reason_code == 0
    assert silent.subscribe(group, 1) == [1]
    wait_group_ready([hb1], group)
    pub = PahoClient(hb3.host, hb3.port, unique("pub"), max_inflight=20)
    mids = {pub.publish(topic, f"m{n}".encode(), 1, wait=False) for n in range(30)}
    assert pub.wait_acked(mids, 30)
    held = []
    while len(held) < 5:  # its window: the rest wait in its session on hb1
        p = silent.recv(15)
        assert p.packet_type == PUBLISH, p
        held.append(p.payload)
    # hb1 holds every message: no other member exists yet
    other = PahoClient(hb2.host, hb2.port, unique("other"))
    assert [c.value for c in other.subscribe(group, 1)] == [1]
    wait_group_ready([hb2], group)
    other.expect_none(1.0)  # hb1 still holds them
    hb1.kill()
    expected = {f"m{n}".encode() for n in range(30)}
    got = collect([other], expected, DEADLINE)
    assert expected <= set(got), (
        f"not redelivered: {sorted(expected - set(got))}\n{hb2.log()[-4000:]}")
    assert set(held) <= set(got)
    silent.close()
    for c in (other, pub):
        c.disconnect()


def test_an_offline_members_unacknowledged_qos1_messages_go_to_a_member_elsewhere(instances):
    """A member with a session that outlives its connection holds unacknowledged QoS 1
    messages and goes away; no other member is on its instance: they reach the member on
    another instance, and the offline member does not get them again when it returns."""
    hb1, hb2, hb3 = instances
    topic = f"shared/{unique('off')}"
    group = f"$share/{unique('g')}/{topic}"
    cid = unique("away")
    away = RawClient(hb1.host, hb1.port)
    assert away.connect(cid, clean_start=False, properties={
        RECEIVE_MAXIMUM: 3, SESSION_EXPIRY_INTERVAL: 300}).reason_code == 0
    assert away.subscribe(group, 1) == [1]
    wait_group_ready([hb1], group)
    pub = PahoClient(hb3.host, hb3.port, unique("pub"), max_inflight=20)
    mids = {pub.publish(topic, f"m{n}".encode(), 1, wait=False) for n in range(10)}
    assert pub.wait_acked(mids, 30)
    for _ in range(3):
        assert away.recv(15).packet_type == PUBLISH
    other = PahoClient(hb2.host, hb2.port, unique("other"))
    assert [c.value for c in other.subscribe(group, 1)] == [1]
    wait_group_ready([hb2], group)
    away.close()  # no DISCONNECT: its session stays on hb1
    expected = {f"m{n}".encode() for n in range(10)}
    got = collect([other], expected, DEADLINE)
    assert expected <= set(got), f"missing {sorted(expected - set(got))}\n{hb1.log()[-4000:]}"
    back = RawClient(hb1.host, hb1.port)
    connack = back.connect(cid, clean_start=False, properties={SESSION_EXPIRY_INTERVAL: 300})
    assert connack.session_present
    assert back.recv_or_none(1.0) is None  # they went to the other member
    back.close()
    for c in (other, pub):
        c.disconnect()
