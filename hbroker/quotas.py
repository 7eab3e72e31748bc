"""Quotas and abuse resistance (`[quotas]`, docs/security.md): the per-address connection rate,
and the factories of the per-connection publish rate and the topic size limits, whose checks
run on the PUBLISH path (compiled: `hbroker_ext.routing.PublishQuota`, `TopicLimits`).

Every rate is a token bucket (`hbroker_ext.routing.TokenBucket`): `rate` tokens per second, at
most `burst` held, full at the start. A burst of 0 means the rate rounded up, at least 1.
"""

from __future__ import annotations

import math

from hbroker_ext.routing import REFUSAL_LOG_INTERVAL, PublishQuota, TokenBucket, TopicLimits

from hbroker.config import QuotasConfig

# Addresses whose connection bucket is remembered at most; when full, the buckets that have
# refilled are forgotten (a forgotten address starts again with a full bucket), then the
# oldest.
MAX_ADDRESSES = 100000


def burst_of(rate: float, burst: int) -> float:
    return float(burst) if burst else float(max(1, math.ceil(rate)))


def topic_limits(quotas: QuotasConfig) -> TopicLimits:
    return TopicLimits(quotas.max_topic_levels, quotas.max_topic_length)


def new_publish_quota(quotas: QuotasConfig, protocol_version: int,
                      now: float) -> PublishQuota | None:
    """The publish rate buckets of a new connection; None when no publish rate is set."""
    rate, byte_rate = quotas.max_publish_rate, quotas.max_publish_bytes_rate
    if not rate and not byte_rate:
        return None
    messages = TokenBucket(rate, burst_of(rate, quotas.publish_rate_burst), now) \
        if rate else None
    payload_bytes = TokenBucket(byte_rate, burst_of(byte_rate, quotas.publish_bytes_burst),
                                now) if byte_rate else None
    action = quotas.publish_rate_action
    # A 3.1.1 client has no reason code to be told "too fast" with: with `refuse` it is
    # throttled, which never loses a message it was acknowledged.
    throttle = action == "throttle" or (action == "refuse" and protocol_version != 5)
    return PublishQuota(messages, payload_bytes, throttle, action == "disconnect")


class ConnectionRate:
    """New connections per second per source address: one token bucket per address."""

    __slots__ = ("rate", "burst", "_buckets", "_refusals")

    def __init__(self, quotas: QuotasConfig) -> None:
        self.rate = 0.0
        self.burst = 1.0
        self._buckets: dict[str, TokenBucket] = {}
        # address -> [refusals not yet logged, when the last line about it was written]
        self._refusals: dict[str, list[float]] = {}
        self.configure(quotas)

    def configure(self, quotas: QuotasConfig) -> None:
        rate = quotas.max_connection_rate
        burst = burst_of(rate, quotas.connection_rate_burst)
        if (rate, burst) != (self.rate, self.burst):
            self._buckets.clear()
        self.rate, self.burst = rate, burst

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def admit(self, host: str, now: float) -> bool:
        """Take a token from the address's bucket; False when it has none (refused)."""
        buckets = self._buckets
        bucket = buckets.get(host)
        if bucket is None:
            if len(buckets) >= MAX_ADDRESSES:
                self._prune(now)
            bucket = buckets[host] = TokenBucket(self.rate, self.burst, now)
        return bucket.try_take(1.0, now)

    def refused(self, host: str, now: float) -> int:
        """Count a refusal; the refusals to log now (0 while this address was logged less
        than REFUSAL_LOG_INTERVAL seconds ago), so a flood writes one line per interval."""
        refusals = self._refusals
        entry = refusals.get(host)
        if entry is None:
            if len(refusals) >= MAX_ADDRESSES:
                for h in [h for h, (_, at) in refusals.items()
                          if now - at >= REFUSAL_LOG_INTERVAL]:
                    del refusals[h]
                while len(refusals) >= MAX_ADDRESSES:
                    del refusals[next(iter(refusals))]
            refusals[host] = [0, now]
            return 1
        entry[0] += 1
        if now - entry[1] < REFUSAL_LOG_INTERVAL:
            return 0
        count = int(entry[0])
        entry[0], entry[1] = 0, now
        return count

    def _prune(self, now: float) -> None:
        buckets = self._buckets
        full = [h for h, b in buckets.items() if b.allows(0.0, now) and b.tokens >= b.burst]
        for host in full:
            del buckets[host]
        while len(buckets) >= MAX_ADDRESSES:
            del buckets[next(iter(buckets))]
