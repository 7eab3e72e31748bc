"""Per-address backoff after failed authentication."""

from __future__ import annotations

from hbroker.auth.backoff import FORGET_FACTOR, MAX_ADDRESSES, FailureBackoff, peer_host


def test_first_failure_is_answered_at_once_then_delays_double_up_to_the_maximum() -> None:
    backoff = FailureBackoff(0.5, 4.0)
    delays = [backoff.failed("10.0.0.1", float(t)) for t in range(7)]
    assert delays == [0.0, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_addresses_are_counted_separately() -> None:
    backoff = FailureBackoff(1.0, 8.0)
    for t in range(4):
        backoff.failed("10.0.0.1", t)
    assert backoff.failed("10.0.0.2", 5.0) == 0.0
    assert backoff.failures("10.0.0.1") == 4


def test_an_address_is_forgotten_after_a_quiet_period() -> None:
    backoff = FailureBackoff(1.0, 2.0)
    backoff.failed("h", 0.0)
    assert backoff.failed("h", 1.0) == 1.0
    assert backoff.failed("h", 1.0 + 2.0 * FORGET_FACTOR + 0.1) == 0.0


def test_zero_initial_delay_disables_the_backoff() -> None:
    backoff = FailureBackoff(0.0, 10.0)
    assert {backoff.failed("h", float(t)) for t in range(5)} == {0.0}


def test_memory_is_bounded() -> None:
    backoff = FailureBackoff(1.0, 2.0)
    for i in range(MAX_ADDRESSES + 50):
        backoff.failed(f"h{i}", 0.0)
    assert len(backoff._failures) <= MAX_ADDRESSES
    assert backoff.failures(f"h{MAX_ADDRESSES + 49}") == 1


def test_peer_host_strips_the_port() -> None:
    assert peer_host("192.0.2.1:5000") == "192.0.2.1"
    assert peer_host("::1:5000") == "::1"
    assert peer_host("unix:pid=1,uid=0") == "unix:pid=1,uid=0"
