"""The extension seam: which events a hook provides, the broker's calls to them, and the
publisher's acknowledgement a hook holds (HeldAck)."""

from __future__ import annotations

import math
from typing import Any

from hbroker_ext.codec import Framer, Puback, Pubrec
from hbroker_ext.routing import BrokerCore, ConnectionCore
from hypothesis import given, settings
from hypothesis import strategies as st

from hbroker import hooks as events
from hbroker.acknowledgement import HeldAck, grouped
from hbroker.broker import Broker, SubscriptionOptions
from hbroker.config import load_config
from hbroker.hooks import ClientInfo, Hook, Hooks
from hbroker.inprocess import InProcessClient
from hbroker.session import Message, Session
from hbroker.stats import Stats

CLIENT = ClientInfo("pub", "alice", "127.0.0.1:5000", 5, "tcp")


# -- which events a hook provides -----------------------------------------------------------

class Counter(Hook):
    def on_message_published(self, client, msg, ack):
        return None

    def on_subscribed(self, client, topic_filter, options, new):
        pass


class Narrowed(Counter):
    """Overrides two events but says it provides one: `provides` is the word."""

    @classmethod
    def provides(cls) -> frozenset[str]:
        return frozenset({"on_subscribed"})


def test_a_hook_provides_the_events_it_overrides():
    assert Counter.provides() == {"on_message_published", "on_subscribed"}
    assert Hook.provides() == frozenset()
    hooks = Hooks([Counter(), Narrowed()])
    assert len(hooks.on_message_published) == 1
    assert len(hooks.on_subscribed) == 2
    assert hooks.on_session_created == () and not hooks.provides("on_message_dropped")


def test_the_broker_sets_the_hook_flags_whenever_its_hooks_are_set():
    broker = Broker(load_config(None))
    assert (broker.publish_hooks, broker.drop_hooks) == (False, False)

    class Drops(Hook):
        def on_message_dropped(self, client_id, msg, reason):
            pass

    broker.hooks = Hooks([Counter(), Drops()])  # as a SIGHUP reload does
    assert (broker.publish_hooks, broker.drop_hooks) == (True, True)
    broker.hooks = Hooks([Drops()])
    assert (broker.publish_hooks, broker.drop_hooks) == (False, True)


# -- a fake connection for HeldAck --------------------------------------------------------

class FakeBroker(BrokerCore):
    """What HeldAck needs of a broker: the counters, and on_message_dropped recorded."""

    def __init__(self) -> None:
        self.stats = Stats()
        self.drop_hooks = False
        self.dropped: list[tuple[str, str]] = []

    def message_dropped(self, msg, client_id, reason):
        self.dropped.append((msg.topic, reason))


class FakeTransport:
    """Records each writelines of a connection, decoded."""

    def __init__(self, conn: FakeConn) -> None:
        self.conn = conn

    def is_closing(self) -> bool:
        return False

    def writelines(self, out: list[bytes]) -> None:
        framer = Framer(1 << 20)
        framer.protocol_version = self.conn.protocol_version
        packets = [p for data in out for p in framer.feed(data)]
        if self.conn.on_write is not None:
            self.conn.on_write(packets)
        self.conn.writes.append(packets)


class FakeConn(ConnectionCore):
    """A connection core whose transport records what is written; `abort` recorded."""

    def __init__(self, version: int = 5, broker: Any = None) -> None:
        self.broker = broker or FakeBroker()
        self.protocol_version = version
        self.client_id = "pub"
        self.client_info = CLIENT
        self.session = None
        self.closing = False
        self.deferred = 0
        self.held_acks = None
        self.writes: list[list[Any]] = []
        self.aborted: str | None = None
        self.on_write: Any = None
        self.transport = FakeTransport(self)

    def abort(self, reason: str) -> None:
        self.closing = True
        self.aborted = reason

    def written(self) -> list[tuple[str, int, int]]:
        return [(type(p).__name__, p.packet_id, p.reason_code)
                for w in self.writes for p in w]


def message(qos: int = 1, topic: str = "t") -> Message:
    return Message(topic, b"x", qos, False, None, 0, "pub")


def test_an_ack_nobody_else_holds_goes_out_when_routed():
    conn = FakeConn()
    ack = HeldAck(conn, message(), 7)
    assert conn.deferred == 1 and list(conn.held_acks) == [ack]
    ack.routed(2)
    assert conn.written() == [("Puback", 7, 0)]
    assert conn.deferred == 0 and conn.held_acks is None


def test_no_matching_subscribers_is_said_to_5_0_only():
    v5, v4 = FakeConn(5), FakeConn(4)
    HeldAck(v5, message(2), 1).routed(0)
    HeldAck(v4, message(2), 1).routed(0)
    assert v5.written() == [("Pubrec", 1, 0x10)]
    assert v4.written() == [("Pubrec", 1, 0)]


def test_a_holder_keeps_the_ack_back_until_it_releases():
    conn = FakeConn()
    ack = HeldAck(conn, message(), 3)
    ack.hold()
    ack.routed(1)
    assert conn.writes == []
    ack.release()
    assert conn.written() == [("Puback", 3, 0)]
    ack.release()  # a release too many changes nothing
    assert conn.written() == [("Puback", 3, 0)] and conn.deferred == 0


def test_later_acks_wait_behind_earlier_held_ones():
    conn = FakeConn()
    first = HeldAck(conn, message(), 1)
    first.hold()
    first.routed(1)
    second = HeldAck(conn, message(), 2)
    second.routed(1)
    assert conn.writes == [] and conn.deferred == 2
    first.release()
    assert conn.written() == [("Puback", 1, 0), ("Puback", 2, 0)]
    assert len(conn.writes) == 1  # one write for both


def test_a_refusal_tells_a_5_0_client_in_order_and_frees_the_qos2_id():
    broker = FakeBroker()
    broker.drop_hooks = True
    conn = FakeConn(5, broker)

    conn.session = Session("pub", 5, max_queued_messages=10, max_queued_bytes=0,
                           queue_qos0=False, stats=broker.stats)
    for packet_id in (2, 3, 4):
        conn.session.receive_qos2(packet_id)
    first = HeldAck(conn, message(1), 1)
    first.hold()
    first.routed(1)
    refused = HeldAck(conn, message(2, "r"), 2)
    refused.routed(1)  # handler done; not yet written: behind `first`
    HeldAck(conn, message(2, "late"), 3).routed(1)
    assert conn.writes == []
    refused.refuse(0x97)  # too late: already released by every holder, nothing changes
    second = HeldAck(conn, message(2, "r2"), 4)
    second.hold()
    second.routed(1)
    second.refuse(0x97)
    assert broker.stats.publish_dropped == 1
    assert broker.dropped == [("r2", events.STORAGE_UNAVAILABLE)]
    assert set(conn.session.awaiting_pubrel) == {2, 3}  # 4 is free for a new message
    first.release()
    assert conn.written() == [("Puback", 1, 0), ("Pubrec", 2, 0), ("Pubrec", 3, 0),
                              ("Pubrec", 4, 0x97)]
    assert conn.deferred == 0


def test_a_refusal_closes_a_3_1_1_connection_after_the_earlier_acks():
    conn = FakeConn(4)
    first = HeldAck(conn, message(), 1)
    first.hold()
    first.routed(1)
    refused = HeldAck(conn, message(), 2)
    refused.hold()
    refused.routed(1)
    after = HeldAck(conn, message(), 3)
    after.routed(1)
    refused.refuse(0x80)
    assert conn.aborted is None
    first.release()
    assert conn.written() == [("Puback", 1, 0)]
    assert conn.aborted is not None
    assert conn.deferred == 0 and conn.held_acks is None


def test_a_closing_connection_writes_nothing_and_keeps_nothing():
    conn = FakeConn()
    acks = [HeldAck(conn, message(), i) for i in (1, 2, 3)]
    for ack in acks:
        ack.hold()
        ack.routed(1)
    conn.closing = True
    acks[1].release()
    acks[2].refuse(0x80)
    assert conn.deferred == 1 and list(conn.held_acks) == [acks[0]]
    acks[0].release()
    assert conn.writes == [] and conn.deferred == 0 and conn.held_acks is None


def test_grouped_writes_once_per_connection():
    conn = FakeConn()
    acks = [HeldAck(conn, message(), i) for i in (1, 2, 3)]
    for ack in acks:
        ack.hold()
        ack.routed(1)
    with grouped():
        for ack in acks:
            ack.release()
        assert conn.writes == []
    assert len(conn.writes) == 1
    assert conn.written() == [("Puback", i, 0) for i in (1, 2, 3)]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_acks_go_out_once_each_in_publish_order_never_before_their_holders(data):
    """Random interleavings of hold/release/refuse across N acknowledgements: each is
    written exactly once, in PUBLISH order, and never before every holder let go."""
    version = data.draw(st.sampled_from((4, 5)), label="version")
    conn = FakeConn(version)
    n = data.draw(st.integers(1, 7), label="acks")
    acks = [HeldAck(conn, message(data.draw(st.sampled_from((1, 2)))), pid)
            for pid in range(1, n + 1)]
    # Per ack: extra holders; each holder's last act is release, or refuse.
    steps: list[tuple[int, str]] = []
    for i in range(n):
        extra = data.draw(st.integers(0, 3), label=f"holders{i}")
        for _ in range(extra):
            acks[i].hold()
            steps.append((i, data.draw(st.sampled_from(("release", "release", "refuse")))))
        steps.append((i, "routed"))
    steps = data.draw(st.permutations(steps), label="order")
    outstanding = [acks[i].holders for i in range(n)]
    refused = [False] * n

    def check(packets):
        for p in packets:
            i = p.packet_id - 1
            assert isinstance(p, Puback if acks[i].msg.qos == 1 else Pubrec)
            assert outstanding[i] == 0 or refused[i], "written before its holders let go"
            if version == 5:
                assert (p.reason_code >= 0x80) == refused[i]
            else:
                assert not refused[i]

    conn.on_write = check
    for i, step in steps:
        outstanding[i] -= 1
        if step == "routed":
            acks[i].routed(1)
        elif step == "release":
            acks[i].release()
        else:
            if not acks[i].settled:
                refused[i] = True
            acks[i].refuse(0x80)
    written = [pid for _, pid, _ in conn.written()]
    if version == 4 and any(refused):
        first_refused = refused.index(True)
        assert written == list(range(1, first_refused + 1))
        assert conn.aborted is not None
    else:
        assert written == list(range(1, n + 1))
    assert conn.deferred == 0 and conn.held_acks is None


# -- the broker's upcalls ---------------------------------------------------------------------

class Recorder(Hook):
    def __init__(self, hold: bool = False, refuse: int | None = None,
                 refuse_ack: int | None = None) -> None:
        self.hold = hold
        self.refuse = refuse
        self.refuse_ack = refuse_ack
        self.seen: list[tuple] = []
        self.acks: list[HeldAck] = []

    def on_message_published(self, client, msg, ack):
        self.seen.append(("published", client.client_id, msg.topic, ack is not None))
        if ack is not None:
            if self.hold:
                ack.hold()
                self.acks.append(ack)
            if self.refuse_ack is not None:
                ack.refuse(self.refuse_ack, events.REFUSED)
        return self.refuse

    def on_message_dropped(self, client_id, msg, reason):
        self.seen.append(("dropped", client_id, msg.topic, reason))

    def on_subscribed(self, client, topic_filter, options, new):
        self.seen.append(("subscribed", client.client_id, topic_filter, new))

    def on_unsubscribed(self, client, topic_filter):
        self.seen.append(("unsubscribed", client.client_id, topic_filter))

    def on_session_ended(self, client_id, reason):
        self.seen.append(("ended", client_id, reason))

    def on_retained_set(self, msg):
        self.seen.append(("retained", msg.topic, msg.payload))

    def on_retained_cleared(self, topic, reason):
        self.seen.append(("cleared", topic, reason))


def broker_with(*hooks: Hook) -> Broker:
    return Broker(load_config(None), Hooks(list(hooks)))


def conn_of(broker: Broker, version: int = 5) -> FakeConn:
    conn = FakeConn(version, broker)
    return conn


def test_message_published_without_a_hold_leaves_no_trace():
    recorder = Recorder()
    broker = broker_with(recorder)
    conn = conn_of(broker)
    assert broker.message_published(conn, message(1), 5) is None
    assert broker.message_published(conn, message(0), 0) is None
    assert recorder.seen == [("published", "pub", "t", True), ("published", "pub", "t", False)]
    assert conn.deferred == 0 and conn.held_acks is None and conn.writes == []


def test_message_published_returns_the_ack_a_hook_holds():
    holder = Recorder(hold=True)
    broker = broker_with(Recorder(), holder)
    conn = conn_of(broker)
    ack = broker.message_published(conn, message(1), 5)
    assert isinstance(ack, HeldAck) and ack is holder.acks[0]
    assert conn.deferred == 1
    ack.routed(1)  # what the handler does after routing
    assert conn.writes == []
    holder.acks[0].release()
    assert conn.written() == [("Puback", 5, 0)] and conn.deferred == 0


def test_a_hook_refuses_with_a_reason_code_and_the_rest_are_not_asked():
    later = Recorder()
    broker = broker_with(Recorder(refuse=0x87), later)
    conn = conn_of(broker)
    assert broker.message_published(conn, message(1), 5) == 0x87
    assert broker.message_published(conn, message(0), 0) == 0x87
    assert later.seen == []
    assert conn.deferred == 0 and conn.writes == []
    # A code below 0x80 is no refusal.
    assert broker_with(Recorder(refuse=0x10)).message_published(conn, message(1), 6) is None


def test_a_hook_refusing_its_ack_at_once_is_a_refusal_the_handler_answers():
    holder = Recorder(hold=True)
    broker = broker_with(holder, Recorder(refuse_ack=0x83))
    conn = conn_of(broker)
    assert broker.message_published(conn, message(2), 9) == 0x83
    assert conn.deferred == 0 and conn.writes == [] and broker.stats.publish_dropped == 0
    holder.acks[0].release()  # the holder lets go of an acknowledgement taken back
    assert conn.writes == [] and conn.deferred == 0


def test_a_failing_hook_does_not_stop_the_message():
    class Broken(Hook):
        def on_message_published(self, client, msg, ack):
            raise RuntimeError("bug")

    broker = broker_with(Broken())
    assert broker.message_published(conn_of(broker), message(1), 1) is None


def test_hold_ack_and_message_dropped():
    recorder = Recorder()
    broker = broker_with(recorder)
    conn = conn_of(broker)
    ack = broker.hold_ack(conn, message(1), 4)
    assert conn.deferred == 1
    ack.routed(1)
    assert conn.written() == [("Puback", 4, 0)]
    broker.message_dropped(message(0, "q"), "sub", events.QUEUE_FULL)
    assert recorder.seen[-1] == ("dropped", "sub", "q", "queue_full")


def test_subscription_session_and_retained_events():
    recorder = Recorder()
    broker = broker_with(recorder)
    session = broker.new_session("sub", 5)
    broker.sessions["sub"] = session
    opts = SubscriptionOptions(1, False, False, 0, 0)
    assert broker.subscribe(session, "a/#", opts)
    broker.subscribe(session, "a/#", opts)
    assert broker.unsubscribe(session, "a/#")
    assert not broker.unsubscribe(session, "a/#")  # nothing existed: no event
    broker.subscribe(session, "b", opts)
    broker.end_session(session, publish_will=False, now=0, reason=events.SESSION_EXPIRED)
    broker._retain(Message("r", b"v", 1, True, None, 0, "pub"))
    broker._retain(Message("$SYS/broker/uptime", b"1", 0, True, None, 0, None))
    broker._retain(Message("r", b"", 1, True, None, 0, "pub"))
    broker._retain(Message("never-set", b"", 1, True, None, 0, "pub"))
    broker._retain(Message("old", b"v", 1, True, None, 5.0, "pub"))
    other = broker.new_session("late", 5)
    broker.send_retained(other, "old", opts, now=10.0)
    assert recorder.seen == [
        ("subscribed", "sub", "a/#", True),
        ("subscribed", "sub", "a/#", False),
        ("unsubscribed", "sub", "a/#"),
        ("subscribed", "sub", "b", True),
        ("ended", "sub", "expired"),
        ("retained", "r", b"v"),
        ("cleared", "r", "empty_payload"),
        ("retained", "old", b"v"),
        ("cleared", "old", "expired"),
    ]


def test_a_will_is_shown_to_the_hooks_and_a_refused_one_is_not_published():
    recorder = Recorder(refuse=0x87)
    broker = broker_with(recorder)
    session = broker.new_session("dying", 5)
    broker.sessions["dying"] = session
    session.will = Message("wills/dying", b"bye", 0, False, None, 0, "dying")
    broker._publish_will(session, now=1.0)
    assert recorder.seen == [("published", "dying", "wills/dying", False),
                             ("dropped", "dying", "wills/dying", "refused")]
    assert broker.stats.wills_published == 0 and broker.stats.publish_dropped == 1
    assert math.isinf(session.expires_at)


# -- the in-process client, and the session events through it ---------------------------------

class DenySecrets(Hook):
    def check_acl(self, client, topic, action):
        return not topic.startswith("secret/")


class Sessions(Hook):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def on_session_created(self, client):
        self.seen.append(("created", client.client_id))

    def on_session_resumed(self, client):
        self.seen.append(("resumed", client.client_id))

    def on_session_taken_over(self, client):
        self.seen.append(("taken_over", client.client_id))

    def on_session_ended(self, client_id, reason):
        self.seen.append(("ended", f"{client_id} {reason}"))

    def on_connected(self, client):
        self.seen.append(("connected", client.client_id))

    def on_disconnected(self, client, reason):
        self.seen.append(("disconnected", client.client_id))


def run_with_broker(body, *hooks: Hook) -> Any:
    import asyncio

    async def main():
        broker = broker_with(*hooks)
        broker.start(asyncio.get_running_loop())
        try:
            return await body(broker)
        finally:
            broker.stop()

    return asyncio.run(main())


def test_the_in_process_client_publishes_and_receives_under_the_acl():
    from hbroker.inprocess import Received

    async def body(broker):
        import asyncio

        rule = InProcessClient(broker, "rule", username="rules")
        assert await rule.connect() is False
        got: list[Received] = []
        assert await rule.subscribe("sensors/#", got.append, qos=1) == 1
        assert await rule.subscribe("secret/#", got.append, qos=1) == 0x87
        sensor = InProcessClient(broker, "sensor", protocol_version=4)
        await sensor.connect()
        assert await sensor.publish("sensors/1", b"a", qos=1) == 0
        assert await sensor.publish("sensors/2", "b", qos=2) == 0
        assert await rule.publish("nobody/listens", b"", qos=1) == 0x10
        assert await rule.publish("secret/x", b"", qos=1) == 0x87  # the ACL refused it
        assert await rule.publish("secret/x", b"", qos=2) == 0x87
        await sensor.publish("sensors/3", b"c")
        while len(got) < 3:
            await asyncio.sleep(0)
        assert [(m.topic, m.payload, m.qos) for m in got] == [
            ("sensors/1", b"a", 1), ("sensors/2", b"b", 1), ("sensors/3", b"c", 0)]
        assert await rule.unsubscribe("sensors/#") == 0
        assert await rule.unsubscribe("sensors/#") == 0x11
        await rule.close()
        await sensor.close()
        while broker.connections:
            await asyncio.sleep(0)
        return broker

    broker = run_with_broker(body, DenySecrets())
    assert broker.sessions == {} and broker.stats.clients_connected == 0


def test_session_events_through_in_process_clients():
    sessions = Sessions()

    async def body(broker):
        import asyncio

        first = InProcessClient(broker, "dev", clean_start=False, session_expiry=60)
        await first.connect()
        second = InProcessClient(broker, "dev", clean_start=False, session_expiry=60)
        assert await second.connect() is True
        while not first.closed:
            await asyncio.sleep(0)
        await second.close()
        third = InProcessClient(broker, "dev", clean_start=True)
        assert await third.connect() is False
        await third.close()
        while broker.connections:
            await asyncio.sleep(0)

    run_with_broker(body, sessions)
    assert sessions.seen[:6] == [
        ("created", "dev"), ("connected", "dev"),
        ("taken_over", "dev"), ("resumed", "dev"), ("connected", "dev"),
        ("disconnected", "dev")]
    assert ("ended", "dev clean_start") in sessions.seen
    assert sessions.seen[-2:] == [("ended", "dev disconnected"), ("disconnected", "dev")]


def test_a_refused_connect_raises():
    from hbroker.config import ListenerConfig
    from hbroker.inprocess import ConnectionRefused

    async def body(broker):
        strict = ListenerConfig(type="tcp", name="inprocess", allow_anonymous=False, auth=())
        try:
            await InProcessClient(broker, "anon", listener=strict).connect()
        except ConnectionRefused as exc:
            return exc.reason_code
        return None

    assert run_with_broker(body) == 0x87


def test_held_acks_on_a_real_connection_go_out_in_order():
    async def body(broker):
        import asyncio

        client = InProcessClient(broker, "held")
        await client.connect()
        conn = client.connection
        first = broker.hold_ack(conn, message(1), 1)
        first.hold()
        first.routed(1)
        broker.hold_ack(conn, message(1), 2).routed(1)
        acks = []
        client._waiting[(4, 1)] = f1 = asyncio.get_running_loop().create_future()
        client._waiting[(4, 2)] = f2 = asyncio.get_running_loop().create_future()
        f1.add_done_callback(lambda f: acks.append(1))
        f2.add_done_callback(lambda f: acks.append(2))
        for _ in range(3):
            await asyncio.sleep(0)
        assert acks == [] and conn.deferred == 2
        first.release()
        await f2
        assert acks == [1, 2] and conn.deferred == 0
        await client.close()

    run_with_broker(body)


def test_the_example_ledger_acknowledges_once_the_line_is_written(tmp_path):
    import asyncio
    import importlib.util
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("ledger_example",
                                                  root / "examples/hooks/ledger.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ledger = module.Ledger(str(tmp_path / "ledger.jsonl"))

    async def body():
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        conn = FakeConn()
        conn.on_write = lambda packets: done.set_result(packets)

        class Broker:
            pass

        broker = Broker()
        broker.loop = loop
        ledger.on_start(broker)
        acks = [HeldAck(conn, message(1, f"ledger/{i}"), i) for i in (1, 2)]
        for ack in acks:
            ledger.on_message_published(CLIENT, ack.msg, ack)
            ack.routed(1)
        ledger.on_message_published(CLIENT, message(1, "elsewhere"), None)
        assert conn.writes == []
        packets = await done
        lines = [json.loads(x) for x in (tmp_path / "ledger.jsonl").read_text().splitlines()]
        assert [x["topic"] for x in lines] == ["ledger/1", "ledger/2"]
        return packets

    packets = asyncio.run(body())
    assert [p.packet_id for p in packets] == [1, 2]  # one write for the batch
    ledger.on_stop()
