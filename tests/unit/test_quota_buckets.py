"""Token buckets and the [quotas] structures built on them (hbroker.quotas)."""

import math

import pytest
from hbroker_ext.routing import PublishQuota, TokenBucket, TopicLimits
from hypothesis import given
from hypothesis import strategies as st

from hbroker.config import QuotasConfig
from hbroker.quotas import (
    MAX_ADDRESSES,
    REFUSAL_LOG_INTERVAL,
    ConnectionRate,
    burst_of,
    new_publish_quota,
)

rates = st.floats(min_value=0.01, max_value=1e6, allow_nan=False, allow_infinity=False)
bursts = st.floats(min_value=1, max_value=1e6, allow_nan=False, allow_infinity=False)
steps = st.lists(st.tuples(st.floats(min_value=0, max_value=100, allow_nan=False),
                           st.floats(min_value=0, max_value=1e6, allow_nan=False)),
                 max_size=60)


@given(rates, bursts, steps)
def test_bucket_never_grants_more_than_burst_plus_refill_plus_one_oversized_amount(
        rate, burst, ops):
    bucket = TokenBucket(rate, burst, 0.0)
    now = granted = largest = 0.0
    for dt, amount in ops:
        now += dt
        if bucket.try_take(amount, now):
            granted += amount
            largest = max(largest, amount)
    # A full bucket covers one amount above the burst and is left in debt for it.
    bound = burst + rate * now + max(0.0, largest - burst)
    assert granted <= bound * (1 + 1e-9) + 1e-6


@given(rates, bursts, steps)
def test_bucket_tokens_stay_within_burst_and_debt_of_one_oversized_amount(rate, burst, ops):
    bucket = TokenBucket(rate, burst, 0.0)
    now = largest = 0.0
    for dt, amount in ops:
        now += dt
        if bucket.try_take(amount, now):
            largest = max(largest, amount)
        assert bucket.tokens <= burst
        assert bucket.tokens >= -max(0.0, largest - burst) - 1e-6 * max(1.0, largest)


@given(rates, bursts, st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_a_refused_take_takes_nothing(rate, burst, amount):
    bucket = TokenBucket(rate, burst, 0.0)
    bucket.tokens = 0.0
    if not bucket.try_take(max(amount, 1e-3), 0.0):
        assert bucket.tokens == 0.0


@given(rates, bursts, st.lists(st.floats(min_value=0, max_value=1e4, allow_nan=False),
                              min_size=1, max_size=30))
def test_after_the_delay_take_reports_the_bucket_is_out_of_debt(rate, burst, amounts):
    bucket = TokenBucket(rate, burst, 0.0)
    delay = 0.0
    for amount in amounts:
        delay = bucket.take(amount, 0.0)
    assert delay >= 0
    bucket.take(0.0, delay)
    assert bucket.tokens >= -1e-6 * max(1.0, sum(amounts))


def test_bucket_starts_full_and_refills_at_its_rate():
    bucket = TokenBucket(2.0, 3.0, 10.0)
    assert [bucket.try_take(1, 10.0) for _ in range(4)] == [True, True, True, False]
    assert not bucket.try_take(1, 10.4)  # 0.8 tokens
    assert bucket.try_take(1, 10.5)
    bucket.take(0, 1000.0)
    assert bucket.tokens == 3.0  # never above the burst


def test_amount_above_burst_passes_only_a_full_bucket_and_leaves_debt():
    bucket = TokenBucket(100.0, 50.0, 0.0)
    assert bucket.try_take(80, 0.0)
    assert bucket.tokens == -30.0
    assert not bucket.try_take(1, 0.2)  # -10
    assert not bucket.try_take(80, 0.5)  # 20: not full
    assert bucket.try_take(80, 0.8)  # full again


@pytest.mark.parametrize("rate,burst", [(0, 1), (1, 0), (-1, 1), (math.nan, 1)])
def test_bucket_needs_positive_rate_and_burst(rate, burst):
    with pytest.raises(ValueError):
        TokenBucket(rate, burst, 0.0)


def test_burst_of_zero_is_the_rate_rounded_up_at_least_one():
    assert burst_of(0.2, 0) == 1.0
    assert burst_of(7.5, 0) == 8.0
    assert burst_of(7.5, 3) == 3.0


def test_publish_quota_refuses_without_charging_either_bucket():
    quota = PublishQuota(TokenBucket(10, 2, 0.0), TokenBucket(100, 100, 0.0), False, False)
    assert quota.check(60, 0.0) == 0
    assert quota.check(60, 0.0) == 2  # 40 bytes left: over the byte rate
    assert quota.messages.tokens == 1.0  # the refused message was not charged
    assert quota.check(10, 0.0) == 0
    assert quota.check(0, 0.0) == 1  # no message token left
    assert quota.payload_bytes.tokens == 30.0


def test_publish_quota_charge_reports_the_longer_debt():
    quota = PublishQuota(TokenBucket(10, 1, 0.0), TokenBucket(100, 100, 0.0), True, False)
    assert quota.charge(100, 0.0) == 0.0
    assert quota.charge(50, 0.0) == pytest.approx(0.5)  # bytes: 50 in debt at 100/s
    assert quota.charge(0, 0.0) == pytest.approx(0.5)


def test_no_publish_quota_without_a_publish_rate():
    assert new_publish_quota(QuotasConfig(), 5, 0.0) is None


@pytest.mark.parametrize("action,version,throttle,disconnect", [
    ("refuse", 5, False, False), ("refuse", 4, True, False), ("refuse", 3, True, False),
    ("throttle", 5, True, False), ("disconnect", 5, False, True),
    ("disconnect", 4, False, True)])
def test_publish_rate_action_per_protocol_version(action, version, throttle, disconnect):
    quota = new_publish_quota(QuotasConfig(max_publish_rate=5, publish_rate_action=action),
                              version, 0.0)
    assert (quota.throttle, quota.disconnect) == (throttle, disconnect)
    assert quota.messages.burst == 5 and quota.payload_bytes is None


def test_topic_limits_count_levels_and_characters():
    limits = TopicLimits(3, 12)
    assert limits.allows("a/b/c")
    assert not limits.allows("a/b/c/d")
    assert not limits.allows("///")  # four empty levels
    assert limits.allows("abcdefghijkl")
    assert not limits.allows("abcdefghijklm")


def test_connection_rate_admits_the_burst_then_the_rate_per_address():
    rate = ConnectionRate(QuotasConfig(max_connection_rate=1, connection_rate_burst=2))
    assert [rate.admit("10.0.0.1", 0.0) for _ in range(3)] == [True, True, False]
    assert rate.admit("10.0.0.2", 0.0)  # another address has its own bucket
    assert not rate.admit("10.0.0.1", 0.5)
    assert rate.admit("10.0.0.1", 1.0)


def test_connection_rate_refusals_are_reported_once_per_interval():
    rate = ConnectionRate(QuotasConfig(max_connection_rate=1))
    reports = [rate.refused("10.0.0.1", t / 100) for t in range(1000)]  # 10 s of refusals
    assert reports[0] == 1 and sum(1 for r in reports if r) == 1
    assert rate.refused("10.0.0.1", REFUSAL_LOG_INTERVAL) == 1000  # 999 unreported + this one
    assert rate.refused("10.0.0.1", REFUSAL_LOG_INTERVAL + 1) == 0


def test_connection_rate_remembers_a_bounded_number_of_addresses():
    rate = ConnectionRate(QuotasConfig(max_connection_rate=1, connection_rate_burst=1))
    for i in range(MAX_ADDRESSES + 10):
        rate.admit(f"h{i}", 0.0)
    assert len(rate._buckets) <= MAX_ADDRESSES
