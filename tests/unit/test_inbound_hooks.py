"""The compiled side of the "message published" seam (hbroker_ext/inbound.pyx): the PUBLISH
handler calls `Broker.message_published` only when `publish_hooks` is set, refuses a PUBLISH
for an int reason code, and for a HeldAck writes no PUBACK itself: the acknowledgement goes
out when every holder released it, in PUBLISH order [MQTT-4.6.0-2].

The acknowledgements are hbroker.acknowledgement's HeldAcks, made by `Broker.hold_ack`."""

from __future__ import annotations

from typing import Any

from fake_transport import Loop, Transport
from hbroker_ext.codec import (
    PUBACK,
    PUBREC,
    Connect,
    Framer,
    Subscribe,
    Subscription,
    encode,
    encode_publish,
)

from hbroker.acknowledgement import HeldAck
from hbroker.broker import Broker
from hbroker.config import ListenerConfig, parse_config
from hbroker.connection import Connection
from hbroker.hooks import Hooks
from hbroker.transports import Listener


class HookedBroker(Broker):
    """A broker with one hook providing "message published": `mode` None (no hold), "hold"
    (holds every QoS 1/2 acknowledgement until the test releases it) or an int (refuse)."""

    mode: Any = None

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.published: list[tuple[str, int]] = []
        self.held: list[HeldAck] = []
        self.dropped: list[tuple[str, Any, str]] = []

    def message_published(self, conn: Any, msg: Any, packet_id: int) -> Any:
        self.published.append((msg.topic, packet_id))
        if isinstance(self.mode, int):
            return self.mode
        if self.mode == "hold" and packet_id:
            ack = self.hold_ack(conn, msg, packet_id)
            ack.hold()
            self.held.append(ack)
            return ack
        return None

    def message_dropped(self, msg: Any, client_id: Any, reason: str) -> None:
        self.dropped.append((msg.topic, client_id, reason))


def broker(cls: type[Broker] = HookedBroker) -> Broker:
    b = cls(parse_config({"storage": {"backend": "memory"}}, "<test>"), Hooks())
    b.loop = Loop()  # type: ignore[assignment]
    return b


def connect(b: Broker, client_id: str, version: int = 5) -> tuple[Connection, Transport]:
    conn = Connection(b, Listener(ListenerConfig()))
    transport = Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.data_received(encode(Connect(client_id=client_id, clean_start=True, keepalive=60,
                                      protocol_version=version), version))
    b.flush()
    transport.data = b""
    return conn, transport


def publishes(qos: int, ids: range, version: int = 5, topic: str = "t") -> bytes:
    return b"".join(encode_publish(topic, b"x", qos, False, False, i, None, version)
                    for i in ids)


def acks(transport: Transport, version: int = 5) -> list[tuple[int, int, int]]:
    packets = Framer(protocol_version=version).feed(transport.data)
    return [(p.packet_type, p.packet_id, p.reason_code) for p in packets]


def run(b: Broker, qos: int, version: int) -> tuple[bytes, bytes]:
    """A subscriber and a publisher; three PUBLISHes: what each was written."""
    sub, sub_t = connect(b, "sub", version)
    sub.data_received(encode(Subscribe(1, [Subscription("t", qos)]), version))
    b.flush()
    sub_t.data = b""
    pub, pub_t = connect(b, "pub", version)
    pub.data_received(publishes(qos, range(1, 4), version))
    b.flush()
    return pub_t.data, sub_t.data


def test_without_hooks_the_upcall_is_not_made_and_output_is_unchanged() -> None:
    for qos in (0, 1, 2):
        for version in (4, 5):
            plain = run(broker(Broker), qos, version)
            b = broker()
            b.mode = "hold"  # would hold, if it were called
            assert run(b, qos, version) == plain
            assert b.published == []


def test_a_hook_that_takes_no_hold_changes_nothing() -> None:
    plain = run(broker(Broker), 1, 5)
    b = broker()
    b.publish_hooks = True
    assert run(b, 1, 5) == plain
    assert b.published == [("t", 1), ("t", 2), ("t", 3)]
    assert b.held == []


def test_a_held_puback_waits_for_release_and_acks_keep_publish_order() -> None:
    b = broker()
    b.publish_hooks = True
    b.mode = "hold"
    sub, sub_t = connect(b, "sub")
    sub.data_received(encode(Subscribe(1, [Subscription("t", 1)]), 5))
    pub, pub_t = connect(b, "pub")
    pub.data_received(publishes(1, range(1, 4)))
    b.flush()
    assert acks(pub_t) == []  # routed, not acknowledged
    assert len(b.held) == 3 and pub.deferred == 3
    b.held[2].release()
    b.held[1].release()
    assert acks(pub_t) == []  # the first one still holds the others back
    b.held[0].release()
    assert acks(pub_t) == [(PUBACK, 1, 0), (PUBACK, 2, 0), (PUBACK, 3, 0)]
    assert pub.deferred == 0
    # A PUBLISH the hook does not hold waits behind one that is held.
    b.mode = None
    b.held.clear()
    pub_t.data = b""
    b.mode = "hold"
    pub.data_received(publishes(1, range(4, 5)))
    b.mode = None
    pub.data_received(publishes(1, range(5, 6), topic="nobody"))
    b.flush()
    assert acks(pub_t) == []
    b.held[0].release()
    assert acks(pub_t) == [(PUBACK, 4, 0), (PUBACK, 5, 0x10)]


def test_a_held_pubrec_records_the_qos2_packet_id() -> None:
    b = broker()
    b.publish_hooks = True
    b.mode = "hold"
    pub, pub_t = connect(b, "pub")
    pub.data_received(publishes(2, range(7, 8)))
    b.flush()
    assert 7 in pub.session.awaiting_pubrel
    assert acks(pub_t) == []
    b.held[0].release()
    assert acks(pub_t) == [(PUBREC, 7, 0x10)]


def one_held_puback() -> tuple:
    """A broker whose hook held the PUBACK of the publisher's first PUBLISH (packet id 1)
    and holds no more: (broker, publisher, its transport)."""
    b = broker()
    b.publish_hooks = True
    b.mode = "hold"
    pub, pub_t = connect(b, "pub")
    pub.data_received(publishes(1, range(1, 2)))
    b.mode = None
    return b, pub, pub_t


def test_a_resent_qos2_publish_is_acknowledged_behind_held_acknowledgements() -> None:
    """The PUBREC of a duplicate (its packet id awaits PUBREL) does not overtake earlier
    acknowledgements still held [MQTT-4.6.0-2]; it says success, and nothing is routed."""
    b, pub, pub_t = one_held_puback()
    pub.data_received(publishes(2, range(2, 3)))
    pub.data_received(publishes(2, range(2, 3)))  # re-sent
    b.flush()
    assert b.published == [("t", 1), ("t", 2)]
    assert acks(pub_t) == []
    assert pub.deferred == 3
    b.held[0].release()
    assert acks(pub_t) == [(PUBACK, 1, 0x10), (PUBREC, 2, 0x10), (PUBREC, 2, 0)]
    assert pub.deferred == 0
    # With nothing held, it is answered at once.
    pub_t.data = b""
    pub.data_received(publishes(2, range(2, 3)))
    b.flush()
    assert acks(pub_t) == [(PUBREC, 2, 0)]


def test_a_refused_publish_is_answered_behind_held_acknowledgements() -> None:
    """A refusal's PUBACK/PUBREC (here a $SYS topic, 0x87) does not overtake earlier
    acknowledgements still held either [MQTT-4.6.0-2], and the refusal is counted once."""
    b, pub, pub_t = one_held_puback()
    pub.data_received(publishes(1, range(2, 3), topic="$SYS/x"))
    pub.data_received(publishes(2, range(3, 4), topic="$SYS/x"))
    b.flush()
    assert acks(pub_t) == []
    assert pub.deferred == 3
    b.held[0].release()
    assert acks(pub_t) == [(PUBACK, 1, 0x10), (PUBACK, 2, 0x87), (PUBREC, 3, 0x87)]
    assert pub.deferred == 0
    assert b.stats.publish_dropped == 2
    # With nothing held, it is answered at once.
    pub_t.data = b""
    pub.data_received(publishes(1, range(4, 5), topic="$SYS/x"))
    b.flush()
    assert acks(pub_t) == [(PUBACK, 4, 0x87)]


def test_a_hook_refusal_is_answered_like_an_acl_refusal() -> None:
    b = broker()
    b.publish_hooks = True
    b.drop_hooks = True
    b.mode = 0x87
    sub, sub_t = connect(b, "sub")
    sub.data_received(encode(Subscribe(1, [Subscription("t", 1)]), 5))
    b.flush()
    sub_t.data = b""
    pub, pub_t = connect(b, "pub")
    pub.data_received(publishes(1, range(1, 2)))
    b.flush()
    assert acks(pub_t) == [(PUBACK, 1, 0x87)]
    assert sub_t.data == b""
    assert b.dropped == [("t", "pub", "refused")]
    assert b.stats.publish_dropped == 1


def test_message_dropped_for_no_subscribers_only_with_drop_hooks() -> None:
    b = broker()
    pub, _ = connect(b, "pub")
    pub.data_received(publishes(0, range(0, 1)))
    assert b.dropped == []
    b.drop_hooks = True
    pub.data_received(publishes(0, range(0, 1)))
    assert b.dropped == [("t", "pub", "no_subscribers")]
