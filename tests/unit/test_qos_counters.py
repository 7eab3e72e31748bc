"""The compiled hot path's counters by QoS and for messages nobody subscribes to
(`Stats.publish_received_qos0/1/2`, `publish_sent_qos0/1/2`, `dropped_no_subscribers`):
random PUBLISH sequences fed to a Broker through its connections' `data_received`, the
counters against what was published and what the subscriber's socket was written."""

from __future__ import annotations

from typing import Any

from fake_transport import Loop, Transport
from hbroker_ext.codec import (
    PUBLISH,
    PUBREL,
    Connect,
    Framer,
    Subscribe,
    Subscription,
    encode,
    encode_ack,
    encode_publish,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from hbroker.broker import Broker
from hbroker.config import ListenerConfig, parse_config
from hbroker.connection import Connection
from hbroker.hooks import Hooks
from hbroker.transports import Listener

INFLIGHT = 100  # limits.max_inflight: every delivery of a sequence goes out at once


class DropRecorder(Broker):
    """A broker whose hooks provide "message dropped" (`drop_hooks` set by the test)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.dropped: list[tuple[str, str]] = []

    def message_dropped(self, msg: Any, client_id: Any, reason: str) -> None:
        self.dropped.append((msg.topic, reason))


def new_broker() -> DropRecorder:
    b = DropRecorder(parse_config({"storage": {"backend": "memory"},
                                   "limits": {"max_inflight": INFLIGHT}}, "<test>"), Hooks())
    b.loop = Loop()  # type: ignore[assignment]
    return b


def connect(b: Broker, client_id: str) -> tuple[Connection, Transport]:
    conn = Connection(b, Listener(ListenerConfig()))
    transport = Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.data_received(encode(Connect(client_id=client_id, clean_start=True, keepalive=60,
                                      protocol_version=5), 5))
    b.flush()
    transport.data = b""
    return conn, transport


def by_qos(stats: Any, field: str) -> list[int]:
    return [getattr(stats, f"{field}_qos{qos}") for qos in (0, 1, 2)]


PUBLISHES = st.lists(st.tuples(st.sampled_from(("sub/a", "sub/b/c", "nobody/x")),
                               st.integers(0, 2)), max_size=60)


@settings(max_examples=60, deadline=None)
@given(publishes=PUBLISHES, sub_qos=st.integers(0, 2), drop_hooks=st.booleans(),
       packets_per_read=st.integers(1, 8))
def test_counters_by_qos_and_for_no_subscribers_follow_random_publishes(
        publishes: list[tuple[str, int]], sub_qos: int, drop_hooks: bool,
        packets_per_read: int) -> None:
    b = new_broker()
    b.drop_hooks = drop_hooks
    sub, sub_t = connect(b, "sub")
    sub.data_received(encode(Subscribe(1, [Subscription("sub/#", sub_qos)]), 5))
    b.flush()
    sub_t.data = b""
    pub, _ = connect(b, "pub")
    stats = b.stats
    start_received, start_sent = stats.publish_received, stats.publish_sent
    packets = []
    for pid, (topic, qos) in enumerate(publishes, 1):
        packets.append(encode_publish(topic, b"m", qos, False, False, pid if qos else 0,
                                      None, 5))
        if qos == 2:
            packets.append(encode_ack(PUBREL, pid, 0, 5))  # frees the id for the next ones
    for i in range(0, len(packets), packets_per_read):
        pub.data_received(b"".join(packets[i:i + packets_per_read]))
    b.flush()

    received = [sum(1 for _, qos in publishes if qos == q) for q in (0, 1, 2)]
    to_sub = [min(qos, sub_qos) for topic, qos in publishes if topic.startswith("sub/")]
    sent = [to_sub.count(q) for q in (0, 1, 2)]
    nobody = sum(1 for topic, _ in publishes if topic == "nobody/x")
    assert by_qos(stats, "publish_received") == received
    assert by_qos(stats, "publish_sent") == sent
    assert stats.dropped_no_subscribers == nobody
    # The totals are kept as before, and each is the sum of its split.
    assert stats.publish_received - start_received == len(publishes)
    assert stats.publish_sent - start_sent == len(to_sub)
    assert stats.publish_routed == len(publishes)
    # What was counted as sent is what the subscriber's socket got, QoS by QoS.
    written = [p.qos for p in Framer(protocol_version=5).feed(sub_t.data)
               if p.packet_type == PUBLISH]
    assert [written.count(q) for q in (0, 1, 2)] == sent
    # Hooks see each no-subscriber drop when they provide the event; the counter counts
    # them whether or not.
    assert b.dropped == ([("nobody/x", "no_subscribers")] * nobody if drop_hooks else [])
    d = stats.as_dict()
    assert [d[f"publish_received_qos{q}"] for q in (0, 1, 2)] == received
    assert d["dropped_no_subscribers"] == nobody


def test_a_resent_publish_is_counted_as_sent_again_at_its_qos() -> None:
    b = new_broker()
    sub = Connection(b, Listener(ListenerConfig()))
    sub_t = Transport()
    sub.connection_made(sub_t)  # type: ignore[arg-type]
    sub.data_received(encode(Connect(client_id="sub", clean_start=True, keepalive=60,
                                     protocol_version=5,
                                     properties={0x11: 300}), 5))  # Session Expiry Interval
    sub.data_received(encode(Subscribe(1, [Subscription("sub/#", 2)]), 5))
    b.flush()
    pub, _ = connect(b, "pub")
    pub.data_received(encode_publish("sub/a", b"m", 1, False, False, 1, None, 5)
                      + encode_publish("sub/b", b"m", 2, False, False, 2, None, 5))
    b.flush()
    assert by_qos(b.stats, "publish_sent") == [0, 1, 1]
    # The subscriber's socket goes; it comes back without having acknowledged either: both
    # are re-sent.
    sub.connection_lost(None)
    again = Connection(b, Listener(ListenerConfig()))
    again_t = Transport()
    again.connection_made(again_t)  # type: ignore[arg-type]
    again.data_received(encode(Connect(client_id="sub", clean_start=False, keepalive=60,
                                       protocol_version=5, properties={0x11: 300}), 5))
    b.flush()
    resent = [(p.qos, p.dup) for p in Framer(protocol_version=5).feed(again_t.data)
              if p.packet_type == PUBLISH]
    assert resent == [(1, True), (2, True)]
    assert by_qos(b.stats, "publish_sent") == [0, 2, 2]
    assert b.stats.publish_sent == 4
