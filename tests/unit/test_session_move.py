"""A session exported from one broker and imported into another (`hbroker.session_state`, the
cluster's session handover) is the same session: subscriptions and their options, the
inflight messages under their packet ids and states, the queue in order, the incoming QoS 2
packet ids awaiting PUBREL, the next packet id, message expiry counting on; and a session
that queued messages meanwhile keeps them after the imported ones, less the copies both
received."""

from __future__ import annotations

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from hbroker.broker import Broker
from hbroker.config import Config
from hbroker.session import AWAITING_PUBACK_OR_PUBREC, AWAITING_PUBCOMP, NEVER, Delivery, Message
from hbroker.session_state import export_session, import_session
from hbroker.subscription import SubscriptionOptions

NOW = 1000.0
A_TOPIC = {"a": "a", "a/b": "a/b", "a/+": "a/z", "a/#": "a/z", "+/x": "q/x", "#": "z"}

filters = st.sampled_from(["a", "a/b", "a/+", "a/#", "+/x", "$share/g/a/#", "#"])
options = st.builds(SubscriptionOptions, st.integers(0, 2), st.booleans(), st.booleans(),
                    st.integers(0, 2), st.integers(0, 268435455))
properties = st.one_of(st.none(), st.fixed_dictionaries({}, optional={
    0x03: st.text(max_size=5),  # content type
    0x09: st.binary(max_size=5),  # correlation data
    0x26: st.lists(st.tuples(st.text(max_size=3), st.text(max_size=3)), max_size=2),
}).map(lambda d: d or None))
messages = st.builds(lambda topic, payload, qos, retain, props, expiry: Message(
    topic, payload, qos, retain, props, NOW + expiry if expiry else 0.0, "publisher"),
    st.sampled_from(["a", "a/b", "x/y"]), st.binary(max_size=20), st.integers(1, 2),
    st.booleans(), properties, st.sampled_from([0, 5, 3600]))


def delivery(msg: Message, sub_ids: tuple, group: str | None) -> Delivery:
    return Delivery(msg, msg.qos, msg.retain, sub_ids, group)


deliveries = st.builds(delivery, messages, st.sampled_from([(), (1,), (2, 7)]),
                       st.sampled_from([None, "$share/g/a/#"]))


@st.composite
def sessions(draw: st.DrawFn) -> tuple[Broker, object]:
    broker = Broker(Config())
    s = broker.new_session("moving", draw(st.sampled_from([4, 5])))
    s.expiry_interval = draw(st.sampled_from([60, 3600, NEVER]))
    for topic_filter, opts in draw(st.dictionaries(filters, options, max_size=4)).items():
        broker.restore_subscription(s, topic_filter, opts)
    packet_ids = draw(st.lists(st.integers(1, 65535), unique=True, max_size=5))
    for pid in packet_ids:
        d = draw(deliveries)
        d.packet_id = pid
        d.state = AWAITING_PUBCOMP if d.qos == 2 and draw(st.booleans()) \
            else AWAITING_PUBACK_OR_PUBREC
        s.restore_delivery(d)
    for d in draw(st.lists(deliveries, max_size=6)):
        s.restore_delivery(d)
    for pid in draw(st.sets(st.integers(1, 65535), max_size=3)):
        s.restore_qos2(pid)
    s.next_packet_id = draw(st.integers(1, 65535))
    broker.restore_session(s)
    return broker, s


def wire(state: dict) -> dict:
    """What crosses NATS: msgpack, as the cluster sends it."""
    return msgpack.unpackb(msgpack.packb(state, use_bin_type=True), raw=False,
                           strict_map_key=False)


def view(s: object) -> tuple:
    def d(x: Delivery) -> tuple:
        m = x.message
        return (m.topic, m.payload, m.qos, m.retain, m.properties, m.expires_at, m.sender,
                x.qos, x.retain, tuple(x.sub_ids or ()), x.group, x.packet_id, x.state)

    return ({f: (o.qos, o.no_local, o.retain_as_published, o.retain_handling, o.sub_id)
             for f, o in s.subscriptions.items()},
            [(pid, d(x)) for pid, x in s.inflight.items()], [d(x) for x in s.queue],
            sorted(s.awaiting_pubrel), s.next_packet_id, s.expiry_interval,
            s.protocol_version, s.queued_bytes)


@settings(max_examples=150, deadline=None)
@given(sessions())
def test_an_imported_session_is_the_exported_one(made: tuple) -> None:
    _, s = made
    other = Broker(Config())
    moved = import_session(other, wire(export_session(s, NOW)), NOW)
    assert view(moved) == view(s)
    assert other.sessions["moving"] is moved
    assert moved.connection is None
    assert moved.expires_at == (NEVER if s.expiry_interval == NEVER
                                else NOW + s.expiry_interval)
    for topic_filter in s.subscriptions:  # in the other broker's subscription tree too
        if topic_filter.startswith("$share/"):
            assert other.subscriptions.has_shared_group(topic_filter)
        else:
            normal, _ = other.subscriptions.match(A_TOPIC[topic_filter])
            assert "moving" in [pair[0] for pair in normal]

def test_message_expiry_keeps_counting_down() -> None:
    broker = Broker(Config())
    s = broker.new_session("moving", 5)
    s.expiry_interval = 60
    s.restore_delivery(Delivery(Message("t", b"x", 1, False, None, NOW + 30, "p"), 1, False,
                                (), None))
    state = wire(export_session(s, NOW + 10))  # 20 s left when it leaves
    moved = import_session(Broker(Config()), state, 5000.0)
    assert moved.queue[0].message.expires_at == 5020.0


def test_what_the_session_queued_meanwhile_follows_less_the_copies_both_got() -> None:
    s = Broker(Config()).new_session("moving", 5)
    s.expiry_interval = 60
    tags: dict = {}
    old = [Message("t", str(n).encode(), 1, False, None, 0, "p") for n in range(4)]
    for n, m in enumerate(old):
        tags[m] = f"run.{n}"
        s.restore_delivery(Delivery(m, 1, False, (), None))
    state = wire(export_session(s, NOW, tags.get))
    # the new instance's session, made before the state came: it got copies of 2 and 3 and
    # two later messages
    other = Broker(Config())
    here = other.new_session("moving", 5)
    here.expiry_interval = 60
    new_tags: dict = {}
    for n in (2, 3, 4, 5):
        m = Message("t", str(n).encode(), 1, False, None, 0, "p")
        new_tags[m] = f"run.{n}"
        here.restore_delivery(Delivery(m, 1, False, (), None))
    moved = import_session(other, state, NOW, here, new_tags.get)
    assert moved is here
    assert [d.message.payload for d in moved.queue] == [b"0", b"1", b"2", b"3", b"4", b"5"]
    assert moved.queued_bytes == 6
