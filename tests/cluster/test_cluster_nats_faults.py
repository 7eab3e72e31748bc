"""NATS servers failing under a cluster: one of three killed with -9 under QoS 1 load (nothing
acknowledged is lost: the stream is replicated and its leader moves), then two of three down
(JetStream has no quorum: QoS >= 1 is refused, never acknowledged; 0x80 on MQTT 5, the
connection closed on 3.1.1; a CONNECT is refused with 0x88), and everything back on its own
once they return.

Real processes: a 3-node nats-server cluster, three hbroker instances (instance i connects to
node i and finds the others through it), paho and raw MQTT clients."""

from __future__ import annotations

import itertools
import time

from clients import PahoClient, RawClient
from instances import start_instances, stop_instances
from nats_cluster import NatsCluster

_ids = itertools.count(1)
STREAM = "HBROKER_MSGS"


def unique(name: str) -> str:
    return f"{name}-n{next(_ids)}"


def stream_leader(cluster: NatsCluster, stream: str, timeout: float = 30) -> str:
    """The name of the node that leads `stream`, from a running node's monitoring endpoint."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for node in cluster.nodes:
            if not node.running:
                continue
            _, jsz = node.monitor("/jsz?accounts=true&streams=true")
            for account in (jsz or {}).get("account_details") or []:
                for detail in account.get("stream_detail") or []:
                    leader = (detail.get("cluster") or {}).get("leader")
                    if detail.get("name") == stream and leader:
                        return leader
        time.sleep(0.1)
    raise AssertionError(f"no leader of {stream}")


def wait_through(pub: PahoClient, sub: PahoClient, topic: str, timeout: float = 30,
                 numbered: set[int] | None = None) -> None:
    """Publish QoS 1 probes until one is acknowledged and reaches `sub` (interest, and after
    a fault JetStream's leaders, settle asynchronously), then drain the probes; numbered
    messages met on the way are added to `numbered`."""
    deadline = time.monotonic() + timeout
    while True:
        assert time.monotonic() < deadline, "no probe got through"
        mid = pub.publish(topic, b"probe", 1, wait=False)
        if pub.wait_acked({mid}, 5) and pub.ack_codes[mid] < 0x80:
            try:
                while (msg := sub.expect(2)).payload != b"probe":
                    if numbered is not None and msg.payload.isdigit():
                        numbered.add(int(msg.payload))
            except AssertionError:
                continue
            break
    mid = pub.publish(topic, b"probe-last", 1)
    while (msg := sub.expect(10)).payload != b"probe-last":
        if numbered is not None and msg.payload.isdigit():
            numbered.add(int(msg.payload))


def received_payloads(sub: PahoClient, wanted: set[int], got: set[int],
                      timeout: float = 60) -> set[int]:
    """`got` and what `sub` receives until it has all of `wanted` (or nothing arrives for
    `timeout`)."""
    while not wanted <= got:
        try:
            msg = sub.expect(timeout)
        except AssertionError:
            break
        if msg.payload.isdigit():
            got.add(int(msg.payload))
    return got


def test_a_nats_node_killed_under_qos1_load_loses_no_acknowledged_message(
        nats_cluster: NatsCluster, tmp_path):
    """The NATS node that leads the message stream, and that the publisher's instance is
    connected to, is killed with -9 while QoS 1 messages stream across instances: every
    message with a successful PUBACK arrives; the instance finds another server, the stream
    another leader, and publishing goes on."""
    instances = start_instances(tmp_path, nats_cluster.urls, 3)
    pub = sub = None
    try:
        leader = stream_leader(nats_cluster, STREAM)
        i = int(leader[1:]) - 1
        pub_hb, sub_hb = instances[i], instances[(i + 1) % 3]
        topic = f"natsfault/{unique('load')}"
        sub = PahoClient(sub_hb.host, sub_hb.port, unique("sub"))
        sub.subscribe(topic, 1)
        pub = PahoClient(pub_hb.host, pub_hb.port, unique("pub"), max_inflight=50)
        wait_through(pub, sub, topic)
        mids: dict[int, int] = {}
        n = 0
        for batch in range(20):
            sent = set()
            for _ in range(50):
                mid = pub.publish(topic, str(n).encode(), 1, wait=False)
                mids[mid] = n
                sent.add(mid)
                n += 1
            if batch == 5:
                nats_cluster.kill(i)  # mid-stream: batches in flight, more behind them
            assert pub.wait_acked(sent, 60), "publishes neither acknowledged nor refused"
        pub_hb.wait_log("cluster: NATS connection back", timeout=30)
        # It goes on: what is published now is acknowledged and delivered.
        numbered: set[int] = set()
        wait_through(pub, sub, topic, timeout=60, numbered=numbered)
        with pub._cond:
            acknowledged = {mids[m] for m, code in pub.ack_codes.items()
                            if m in mids and code < 0x80}
            refused = {mids[m] for m, code in pub.ack_codes.items()
                       if m in mids and code >= 0x80}
        assert len(acknowledged) >= 250, (len(acknowledged), len(refused))
        missing = acknowledged - received_payloads(sub, acknowledged, numbered)
        assert not missing, f"{len(missing)} acknowledged messages lost: {sorted(missing)[:20]}"
    finally:
        for c in (pub, sub):
            if c is not None:
                c.disconnect()
        stop_instances(instances)


def test_two_of_three_nats_nodes_down_qos1_is_refused_then_everything_recovers(
        nats_cluster: NatsCluster, tmp_path):
    """With two of three NATS nodes down, JetStream has no quorum: a QoS 1 PUBLISH is
    refused (PUBACK 0x80 on MQTT 5; the connection closed on 3.1.1, which has no negative
    PUBACK), never acknowledged. No instance can renew its lease, so each fences itself
    within seconds: its clients get DISCONNECT 0x9C Use another server and a CONNECT is
    refused with 0x9C (before the fence: 0x88). Once the nodes return, clients connect again
    and messages cross instances without anyone restarting."""
    instances = start_instances(tmp_path, nats_cluster.urls, 3)
    hb1, hb2, _ = instances
    clients: list[PahoClient] = []
    try:
        topic = f"natsfault/{unique('quorum')}"
        far = PahoClient(hb2.host, hb2.port, unique("far"), clean=False, session_expiry=600)
        clients.append(far)
        far.subscribe(topic, 1)
        pub = PahoClient(hb1.host, hb1.port, unique("pub5"))
        clients.append(pub)
        wait_through(pub, far, topic)
        pub3 = PahoClient(hb1.host, hb1.port, unique("pub3"), version=4)
        clients.append(pub3)
        nats_cluster.kill(1)
        nats_cluster.kill(2)
        mid = pub.publish(topic, b"outage", 1, wait=False)
        mid3 = pub3.publish(topic, b"outage-311", 1, wait=False)
        deadline = time.monotonic() + 30
        while not pub.wait_acked({mid}, 0.1) and not pub.disconnected.is_set():
            assert time.monotonic() < deadline, "a QoS 1 PUBLISH neither refused nor closed"
        with pub._cond:  # refused, or its connection fenced first: never acknowledged
            assert pub.ack_codes.get(mid, 0x80) in (0x80, 0x83), hex(pub.ack_codes[mid])
        assert pub3.disconnected.wait(30), "the 3.1.1 publisher was not disconnected"
        with pub3._cond:
            assert mid3 not in pub3.acks, "a 3.1.1 PUBLISH was acknowledged without JetStream"
        for c in (pub, far):  # fenced: sent to another instance
            assert c.disconnected.wait(30), "not fenced"
            assert c.disconnect_reason == 0x9C, c.disconnect_reason
        hb1.wait_log(r"lease not renewed for .* this instance fences its clients")
        for c in clients:
            c.client.loop_stop()
        clients.clear()
        refused = RawClient(hb1.host, hb1.port)
        assert refused.connect(unique("outage")).reason_code == 0x9C
        refused.close()

        nats_cluster.start(1)
        nats_cluster.start(2)
        deadline = time.monotonic() + 60
        while True:  # a CONNECT is accepted again once the lease is renewed
            late = RawClient(hb1.host, hb1.port)
            code = late.connect(unique("back")).reason_code
            late.close()
            if code == 0:
                break
            assert code in (0x88, 0x9C), hex(code)
            assert time.monotonic() < deadline, "CONNECT still refused after NATS returned"
        hb2.wait_log(r"lease renewed again", 60)
        far = PahoClient(hb2.host, hb2.port, unique("far2"))
        clients.append(far)
        far.subscribe(topic, 1)
        pub = PahoClient(hb1.host, hb1.port, unique("pub5b"))
        clients.append(pub)
        wait_through(pub, far, topic, timeout=60)
        mid = pub.publish(topic, b"after", 1)
        assert pub.ack_codes[mid] == 0
        while far.expect(30).payload != b"after":
            pass
    finally:
        for c in clients:
            c.disconnect()
        stop_instances(instances)
