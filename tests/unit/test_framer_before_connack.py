"""The framer before the CONNACK: one packet at a time, what follows held within a limit shared
with the CONNECT, nothing allocated for what has not arrived."""

from __future__ import annotations

import tracemalloc

import pytest
from hbroker_ext.codec import (
    Auth,
    Connect,
    Framer,
    MQTTError,
    Pingreq,
    Publish,
    encode,
)

PACKET_TOO_LARGE = 0x95
CONNECT = encode(Connect("c1", 5), 5)
PUBLISH = encode(Publish("t", b"payload", 1, False, False, 1), 5)
PING = encode(Pingreq(), 5)


def test_a_connecting_framer_hands_over_the_connect_and_holds_what_follows() -> None:
    framer = Framer(1000, connecting=True)
    assert framer.feed(CONNECT + PUBLISH + PING) == [Connect("c1", 5)]
    assert framer.held and framer.buffered == len(PUBLISH + PING)
    # More bytes while the CONNECT is being decided are kept, not framed.
    assert framer.feed(PING) == []
    framer.accept(10_000)
    assert framer.feed(b"") == [Publish("t", b"payload", 1, False, False, 1), Pingreq(),
                                Pingreq()]
    assert (framer.connecting, framer.held, framer.max_packet_size) == (False, False, 10_000)


def test_resume_frames_one_more_packet_during_enhanced_authentication() -> None:
    auth = encode(Auth(0x18, {0x15: "SCRAM-SHA-256"}), 5)
    framer = Framer(1000, connecting=True)
    assert framer.feed(CONNECT + auth + auth) == [Connect("c1", 5)]
    framer.resume()
    assert framer.feed(b"") == [Auth(0x18, {0x15: "SCRAM-SHA-256"})]
    assert framer.held
    framer.resume()
    assert framer.feed(b"") == [Auth(0x18, {0x15: "SCRAM-SHA-256"})]
    framer.resume()
    assert framer.feed(b"") == []


def test_what_follows_the_connect_shares_its_limit() -> None:
    limit = len(CONNECT) + len(PUBLISH)
    framer = Framer(limit, connecting=True)
    assert framer.feed(CONNECT + PUBLISH) == [Connect("c1", 5)]
    assert framer.max_packet_size == len(PUBLISH)  # what is left for the rest
    framer.check_held()  # exactly at the limit: kept
    with pytest.raises(MQTTError) as info:
        framer.feed(PING)
    assert info.value.reason_code == PACKET_TOO_LARGE
    assert "sent ahead of the CONNACK" in str(info.value)


def test_check_held_refuses_a_first_read_beyond_the_limit() -> None:
    framer = Framer(len(CONNECT) + 10, connecting=True)
    assert framer.feed(CONNECT + PUBLISH) == [Connect("c1", 5)]
    with pytest.raises(MQTTError) as info:
        framer.check_held()
    assert info.value.reason_code == PACKET_TOO_LARGE


def test_after_accept_the_connection_limit_applies() -> None:
    big = encode(Publish("t", b"x" * 5000, 0), 5)
    framer = Framer(1000, connecting=True)
    assert framer.feed(CONNECT) == [Connect("c1", 5)]
    framer.accept(10_000)
    assert framer.feed(big) == [Publish("t", b"x" * 5000, 0)]


def test_a_framer_that_is_not_connecting_frames_everything_at_once() -> None:
    assert Framer().feed(CONNECT + PING) == [Connect("c1", 5), Pingreq()]


def test_discard_drops_what_is_held() -> None:
    framer = Framer(1000, connecting=True)
    framer.feed(CONNECT + PUBLISH)
    framer.discard()
    assert framer.buffered == 0


def test_nothing_is_allocated_for_a_declared_remaining_length() -> None:
    # A fixed header declaring 268,435,455 bytes, and three bytes of body.
    header = b"\x30\xff\xff\xff\x7f\x00\x01t"
    framer = Framer(268435460)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        assert framer.feed(header) == []
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert framer.buffered == len(header)
    assert held < 4096, held
