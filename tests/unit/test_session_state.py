"""Session state changed from outside the compiled flow (restore from storage, a refused
commit's withdrawal) goes through Session's own methods, which keep its counters right."""

from __future__ import annotations

from hbroker.broker import Broker
from hbroker.config import Config
from hbroker.session import AWAITING_PUBCOMP, Delivery, Message, Session


def message(payload: bytes) -> Message:
    return Message("t", payload, 1, False, None, 0, "publisher")


def session() -> Session:
    s = Broker(Config()).new_session("s", 5)
    s.expiry_interval = 60
    return s


def test_restore_delivery_puts_it_in_flight_under_its_packet_id_or_queues_it() -> None:
    s = session()
    sent = Delivery(message(b"sent"), 2, False, (), None)
    sent.packet_id = 7
    sent.state = AWAITING_PUBCOMP
    queued = Delivery(message(b"queued"), 1, False, (), None)
    s.restore_delivery(sent)
    s.restore_delivery(queued)
    assert s.inflight == {7: sent}
    assert sent.state == AWAITING_PUBCOMP
    assert list(s.queue) == [queued]
    assert s.queued_bytes == len(b"queued")


def test_withdraw_takes_the_queued_deliveries_of_refused_messages_only() -> None:
    s = session()
    kept, refused, other = message(b"kept"), message(b"refused!"), message(b"other")
    for msg in (kept, refused, other, refused):
        s.restore_delivery(Delivery(msg, 1, False, (), None))
    in_flight = Delivery(refused, 1, False, (), None)
    in_flight.packet_id = 3
    s.restore_delivery(in_flight)
    removed = s.withdraw({refused})
    assert [d.message for d in removed] == [refused, refused]
    assert [d.message for d in s.queue] == [kept, other]
    assert s.queued_bytes == len(b"kept") + len(b"other")
    assert s.inflight == {3: in_flight}  # sent already: completed with the client
    assert s.withdraw({refused}) == []
    assert session().withdraw({refused}) == []  # nothing queued
