"""Live routing across a cluster: three hbroker processes, each on its own node of a real
3-node NATS cluster, talked to by paho-mqtt clients and a NATS-native client (nats-py).

A message published on one instance reaches the subscribers of every instance exactly as it
reaches those of its own instance: the same messages, once each, in publish order, with the
same subscription identifiers, No Local and Retain As Published."""

from __future__ import annotations

import asyncio
import itertools
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from broker_process import BrokerProcess
from clients import PahoClient, RawClient
from hbroker_ext.codec import DISCONNECT, PUBACK, PUBREC, Publish
from instances import start_instances, stop_instances
from nats_cluster import NatsCluster
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

INSTANCES = 3
_ids = itertools.count(1)


@pytest.fixture(scope="module")
def instances(_nats_cluster: NatsCluster) -> Iterator[list[BrokerProcess]]:
    with tempfile.TemporaryDirectory(prefix="hbroker-cluster-") as tmp:
        started = start_instances(Path(tmp), _nats_cluster.urls, INSTANCES)
        yield started
        stop_instances(started)


def client(b: BrokerProcess, name: str, **kw) -> PahoClient:
    return PahoClient(b.host, b.port, f"{name}-{next(_ids)}", **kw)


def sub_props(sub_id: int) -> Properties:
    props = Properties(PacketTypes.SUBSCRIBE)
    props.SubscriptionIdentifier = sub_id
    return props


def wait_interest(pub: PahoClient, sub: PahoClient, topics: dict[str, set[int]]) -> None:
    """Publish probes from `pub` until `sub` has received one on each topic through each of
    the subscription identifiers given (interest reaches the other NATS servers
    asynchronously), then take every probe still on its way."""
    missing = {(t, i) for t, ids in topics.items() for i in ids}
    deadline = time.monotonic() + 15
    while missing:
        assert time.monotonic() < deadline, f"no probe through {sorted(missing)}"
        for topic in topics:
            pub.publish(topic, b"probe")
        end = time.monotonic() + 0.2
        while time.monotonic() < end:
            try:
                m = sub.messages.get(timeout=0.05)
            except Exception:
                continue
            assert m.payload == b"probe", m.payload
            for i in m.properties.SubscriptionIdentifier:
                missing.discard((m.topic, i))
    # the last probes: one more marked probe per topic, and everything up to it
    for topic in topics:
        pub.publish(topic, b"probe-last")
    last = set(topics)
    while last:
        try:
            m = sub.expect()
        except AssertionError:
            raise AssertionError(f"no probe-last on {sorted(last)}") from None
        assert m.payload in (b"probe", b"probe-last")
        if m.payload == b"probe-last":
            last.discard(m.topic)


def scenario(pub_b: BrokerProcess, sub_b: BrokerProcess, base: str) -> list:
    """What a subscriber on `sub_b` receives of one publisher on `pub_b` (and of its own
    publishes, under No Local), as (topic, payload, QoS, retain, subscription ids). Topics
    start with `base`."""
    sub = client(sub_b, "sub")
    pub = client(pub_b, "pub")
    try:
        assert sub.subscribe(f"{base}/x/y", 2, properties=sub_props(1))[0].value == 2
        assert sub.subscribe(f"{base}/+/y", 2, properties=sub_props(2))[0].value == 2
        assert sub.subscribe(f"{base}/#", 2, retainAsPublished=True,
                             properties=sub_props(3))[0].value == 2
        assert sub.subscribe(f"{base}/nl", 1, noLocal=True,
                             properties=sub_props(4))[0].value == 1
        wait_interest(pub, sub, {f"{base}/x/y": {1, 2, 3}, base: {3}, f"{base}/nl": {3, 4}})
        for n in range(5):
            for qos in (0, 1, 2):
                pub.publish(f"{base}/x/y", f"{qos}-{n}".encode(), qos)
        pub.publish(base, b"parent", 1)  # the parent level of `base/#` [MQTT-4.7.1-2]
        pub.publish(f"{base}/r/y", b"kept", 1, retain=True)
        sub.publish(f"{base}/nl", b"mine", 1)  # No Local: not back to `sub` through id 4
        pub.publish(f"{base}/nl", b"theirs", 1)
        got = []
        pub.publish(f"{base}/end", b"end", 1)
        while True:
            m = sub.expect()
            if m.topic == f"{base}/end":
                break
            got.append((m.topic, m.payload, m.qos, bool(m.retain),
                        tuple(sorted(m.properties.SubscriptionIdentifier))))
        sub.expect_none()
        return got
    finally:
        pub.disconnect()
        sub.disconnect()


PAIRS = [(a, b) for a in range(INSTANCES) for b in range(INSTANCES) if a != b]


def test_one_instance_is_the_reference(instances: list[BrokerProcess]) -> None:
    """What the cross-instance cases are compared with: publisher and subscriber on one."""
    got = scenario(instances[0], instances[0], "ref0")
    by_payload: dict[bytes, list] = {}
    for topic, payload, qos, retain, ids in got:
        by_payload.setdefault(payload, []).append((topic, qos, retain, ids))
    # each message on ref0/x/y once, through its three subscriptions, in publish order
    assert sorted((p, q, ids) for t, p, q, _, ids in got if t == "ref0/x/y") == sorted(
        (f"{qos}-{n}".encode(), qos, (1, 2, 3)) for n in range(5) for qos in (0, 1, 2))
    for qos in (0, 1, 2):
        assert in_order(got)[("ref0/x/y", qos)] == [f"{qos}-{n}".encode() for n in range(5)]
    assert by_payload[b"parent"] == [("ref0", 1, False, (3,))]
    assert by_payload[b"kept"] == [("ref0/r/y", 1, True, (2, 3))]  # Retain As Published (3)
    assert by_payload[b"theirs"] == [("ref0/nl", 1, False, (3, 4))]
    assert by_payload[b"mine"] == [("ref0/nl", 1, False, (3,))]  # No Local: not via 4


@pytest.mark.parametrize(("a", "b"), PAIRS, ids=[f"hb{a + 1}-to-hb{b + 1}" for a, b in PAIRS])
def test_every_pair_of_instances_routes_as_one_instance(instances: list[BrokerProcess],
                                                        a: int, b: int) -> None:
    reference = scenario(instances[b], instances[b], f"same{a}{b}")
    got = scenario(instances[a], instances[b], f"pair{a}{b}")

    def plain(rows: list, base: str) -> list:
        return [(t.replace(base, "B", 1), *rest) for t, *rest in rows]

    got, reference = plain(got, f"pair{a}{b}"), plain(reference, f"same{a}{b}")
    assert sorted(got) == sorted(reference)  # the same messages, each as often
    assert in_order(got) == in_order(reference)


def in_order(rows: list) -> dict[tuple[str, int], list[bytes]]:
    """The payloads of each topic and QoS in the order received (paho hands a QoS 2 message
    over at PUBREL, so the order between QoS levels is the client's, not the broker's)."""
    out: dict[tuple[str, int], list[bytes]] = {}
    for topic, payload, qos, *_ in rows:
        out.setdefault((topic, qos), []).append(payload)
    return out


def test_a_topic_nats_cannot_carry_is_refused_with_0x90(instances: list[BrokerProcess]
                                                         ) -> None:
    raw = RawClient(instances[0].host, instances[0].port)
    try:
        raw.connect(f"bad-{next(_ids)}")
        for pid, topic in enumerate(("bad/*", "bad/>", "bad/with space", "bad/tab\t"), 1):
            ack = raw.publish(topic, b"x", 1, packet_id=pid)
            assert (ack.packet_id, ack.reason_code) == (pid, 0x90), topic
            rec = raw.publish(topic, b"x", 2, packet_id=pid)
            assert (rec.packet_id, rec.reason_code) == (pid, 0x90), topic
        ack = raw.publish("bad/fine", b"x", 1, packet_id=9)
        assert ack.reason_code in (0x00, 0x10)  # 0x10: no subscriber anywhere
    finally:
        raw.close()


def test_a_nats_native_client_sees_mqtt_traffic_and_publishes_into_mqtt(
        instances: list[BrokerProcess], _nats_cluster: NatsCluster) -> None:
    async def run() -> None:
        nc = await nats.connect(_nats_cluster.urls[2])
        seen: asyncio.Queue = asyncio.Queue()

        async def cb(m) -> None:
            await seen.put(m)

        await nc.subscribe("native.room1.temp", cb=cb)
        await nc.flush()
        pub = client(instances[0], "native-pub")
        sub = client(instances[1], "native-sub")
        try:
            sub.subscribe("native/#", 1)
            props = Properties(PacketTypes.PUBLISH)
            props.ContentType = "text/plain"
            props.UserProperty = [("unit", "C"), ("unit", "K")]
            props.CorrelationData = b"\x00\x01"
            deadline = time.monotonic() + 15
            while True:  # until nats-server has the interest of the subscription above
                pub.publish("native/room1/temp", b"21.5", 1, properties=props)
                try:
                    m = await asyncio.wait_for(seen.get(), 0.5)
                    break
                except TimeoutError:
                    assert time.monotonic() < deadline, "nothing on native.room1.temp"
            assert m.data == b"21.5"
            assert m.headers["Mqtt-Qos"] == "1"
            assert m.headers["Hb-Origin"] == "hb1"
            assert m.headers["Mqtt-Content-Type"] == "text/plain"
            js = nc.jetstream()
            stored = await js.get_last_msg("HBROKER_MSGS", "$HB.msgs.native.room1.temp")
            assert stored.data == b"21.5"
            # The MQTT 5 properties came through to the MQTT subscriber on hb2 (which may
            # have had its interest in place after the first of those publishes).
            got = sub.expect()
            assert got.topic == "native/room1/temp"
            assert got.properties.ContentType == "text/plain"
            assert got.properties.UserProperty == [("unit", "C"), ("unit", "K")]
            assert got.properties.CorrelationData == b"\x00\x01"
            # NATS -> MQTT: a plain NATS message is QoS 0, not retained
            await nc.publish("native.room2.hum", b"40")
            await nc.flush()
            while True:
                m2 = sub.expect()
                if m2.topic != "native/room1/temp":
                    break
            assert (m2.topic, m2.payload, m2.qos, m2.retain) == ("native/room2/hum", b"40", 0,
                                                                 False)
        finally:
            pub.disconnect()
            sub.disconnect()
            await nc.close()

    asyncio.run(run())


def test_without_a_jetstream_quorum_nothing_is_falsely_acknowledged(
        instances: list[BrokerProcess], nats_cluster: NatsCluster) -> None:
    """Two of three NATS nodes killed: the replicated stream has no quorum, so a QoS 1/2
    PUBLISH is refused (5.0: 0x80 or 0x83 in its PUBACK/PUBREC; 3.1.1: the connection is
    closed), never acknowledged as a success; the instance, unable to renew its lease, then
    fences its clients (DISCONNECT 0x9C). Once the nodes are back, a client connects and its
    QoS 1 PUBLISH is acknowledged again without restarting anything."""
    hb1 = instances[0]  # on n1, which stays
    raw = RawClient(hb1.host, hb1.port)
    raw.connect(f"quorum-{next(_ids)}")
    assert raw.publish("quorum/t", b"before", 1, packet_id=1).reason_code == 0x00
    raw2 = RawClient(hb1.host, hb1.port)
    raw2.connect(f"quorum2-{next(_ids)}")
    old = RawClient(hb1.host, hb1.port, version=4)
    old.connect(f"quorum-311-{next(_ids)}")
    nats_cluster.kill(1)
    nats_cluster.kill(2)
    try:
        # at once: each is refused within publish_timeout, or its connection fenced first
        raw.send(Publish("quorum/t", b"during", 1, False, False, 2, None))
        raw2.send(Publish("quorum/t", b"during", 2, False, False, 3, None))
        old.send(Publish("quorum/t", b"during", 1, False, False, 7, None))
        for client, pid in ((raw, 2), (raw2, 3)):
            answer = client.recv(30)
            if answer.packet_type == DISCONNECT:
                assert answer.reason_code == 0x9C, answer
                continue
            assert answer.packet_type in (PUBACK, PUBREC) and answer.packet_id == pid, answer
            assert answer.reason_code in (0x80, 0x83), answer
            # then the fence: the instance cannot renew its lease either
            fenced = client.closed_by_broker(timeout=30)
            assert [(p.packet_type, p.reason_code) for p in fenced] == [(DISCONNECT, 0x9C)]
        assert not [p for p in old.closed_by_broker() if p.packet_type == PUBACK]
        # nor a client id made the instance's: a CONNECT is refused (0x9C: fenced)
        late = RawClient(hb1.host, hb1.port)
        assert late.connect(f"quorum-late-{next(_ids)}").reason_code == 0x9C
        late.close()
    finally:
        nats_cluster.heal()
    deadline = time.monotonic() + 60
    while True:  # the stream regains its quorum, the instance its lease
        raw = RawClient(hb1.host, hb1.port)
        code = raw.connect(f"quorum-back-{next(_ids)}").reason_code
        if code == 0:
            ack = raw.publish("quorum/t", b"after", 1, packet_id=11)
            if ack.reason_code < 0x80:
                break
        raw.close()
        assert time.monotonic() < deadline, f"still refused: {code:#x}"
    raw.close()
    assert "message not stored in JetStream, refused" in hb1.log()
