# Publish quotas ([quotas], hbroker.quotas; included by routing.pyx, fields declared in
# routing.pxd): token buckets, a connection's publish rates, the topic limits.

# A refused address or publisher is logged at most once per this many seconds, with the count
# since (hbroker.quotas re-exports it).
REFUSAL_LOG_INTERVAL = 10.0

cdef class TokenBucket:
    """`rate` tokens per second, at most `burst` held; starts full. `allows`/`try_take` refuse
    what the bucket cannot cover (an amount above the burst is covered by a full bucket, which
    it leaves in debt); `take` always takes and reports how long the debt lasts."""

    def __init__(self, double rate, double burst, double now):
        if not rate > 0 or not burst > 0:
            raise ValueError("a token bucket needs a positive rate and burst")
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = now

    cdef void _refill(self, double now):
        if now > self.updated:
            self.tokens += (now - self.updated) * self.rate
            if self.tokens > self.burst:
                self.tokens = self.burst
            self.updated = now

    cpdef bint allows(self, double amount, double now):
        """Whether `amount` could be taken now (nothing is taken)."""
        self._refill(now)
        return self.tokens >= (amount if amount < self.burst else self.burst)

    cpdef bint try_take(self, double amount, double now):
        if self.allows(amount, now):
            self.tokens -= amount
            return True
        return False

    cpdef double take(self, double amount, double now):
        """Take `amount` even into debt; the seconds until the bucket is out of debt."""
        self._refill(now)
        self.tokens -= amount
        return -self.tokens / self.rate if self.tokens < 0 else 0.0


cdef class PublishQuota:
    """One connection's publish rates: a bucket of PUBLISH packets and one of payload bytes
    (None when that rate is off). `throttle`: over-rate messages are accepted and the caller
    stops reading (backpressure); otherwise they are refused (`disconnect`: by closing).
    `refused`/`logged_at`: refusals since the last log line, and when that line was written."""

    def __init__(self, TokenBucket messages, TokenBucket payload_bytes, bint throttle,
                 bint disconnect):
        self.messages = messages
        self.payload_bytes = payload_bytes
        self.throttle = throttle
        self.disconnect = disconnect
        self.refused = 0
        self.logged_at = -math.inf

    cpdef int check(self, Py_ssize_t size, double now):
        """0 and both buckets charged when a PUBLISH of `size` payload bytes fits them;
        otherwise nothing is charged and the rate it exceeds: 1 messages, 2 bytes."""
        if self.messages is not None and not self.messages.allows(1.0, now):
            return OVER_MESSAGE_RATE
        if self.payload_bytes is not None and not self.payload_bytes.allows(<double>size, now):
            return OVER_BYTE_RATE
        if self.messages is not None:
            self.messages.tokens -= 1.0
        if self.payload_bytes is not None:
            self.payload_bytes.tokens -= <double>size
        return 0

    cpdef double charge(self, Py_ssize_t size, double now):
        """Charge a PUBLISH that is accepted anyway; the seconds before reading may resume."""
        cdef double delay = 0.0
        cdef double d
        if self.messages is not None:
            delay = self.messages.take(1.0, now)
        if self.payload_bytes is not None:
            d = self.payload_bytes.take(<double>size, now)
            if d > delay:
                delay = d
        return delay


cdef class TopicLimits:
    """`[quotas] max_topic_levels` and `max_topic_length`, typed for the PUBLISH path."""

    def __init__(self, Py_ssize_t max_levels, Py_ssize_t max_length):
        self.max_levels = max_levels
        self.max_length = max_length

    cpdef bint allows(self, str topic):
        """Whether a topic name (or a filter without its `$share/GROUP/` prefix) is within
        both limits."""
        cdef Py_ssize_t n = len(topic)
        if n > self.max_length:
            return False
        # n characters hold at most n + 1 levels: count the separators only when that could
        # exceed the limit (one comparison for the usual short topic).
        return n < self.max_levels or topic.count("/") < self.max_levels
