"""Slowing down password guessing: the answer to a failed CONNECT from an address that failed
before is delayed, doubling with each failure (`[auth] failure_delay`, bounded by
`failure_delay_max`). The connection waits on a timer, never a blocking sleep, so the broker
serves everyone else meanwhile. An address is forgotten once it has not failed for
FORGET_FACTOR × failure_delay_max seconds; at most MAX_ADDRESSES are remembered.
"""

from __future__ import annotations

FORGET_FACTOR = 4
MAX_ADDRESSES = 10000


def peer_host(peer: str) -> str:
    """The address part of "host:port" (IPv6 hosts contain colons too)."""
    host, sep, port = peer.rpartition(":")
    return host if sep and port.isdigit() else peer


class FailureBackoff:
    __slots__ = ("initial", "maximum", "_failures")

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self._failures: dict[str, tuple[int, float]] = {}  # host -> (count, last failure)

    def configure(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum

    def failed(self, host: str, now: float) -> float:
        """Record a failure; the seconds to wait before answering it. The first failure of
        an address is answered at once, the n-th after initial × 2**(n-2)."""
        if self.initial <= 0:
            return 0.0
        failures = self._failures
        count, last = failures.pop(host, (0, now))
        if now - last > self.maximum * FORGET_FACTOR:
            count = 0
        if len(failures) >= MAX_ADDRESSES:
            self._prune(now)
        failures[host] = (count + 1, now)  # re-inserted: the dict stays oldest first
        if count == 0:
            return 0.0
        return min(self.maximum, self.initial * 2.0 ** min(count - 1, 62))

    def failures(self, host: str) -> int:
        return self._failures.get(host, (0, 0.0))[0]

    def _prune(self, now: float) -> None:
        horizon = self.maximum * FORGET_FACTOR
        failures = self._failures
        for host in [h for h, (_, last) in failures.items() if now - last > horizon]:
            del failures[host]
        while len(failures) >= MAX_ADDRESSES:
            del failures[next(iter(failures))]
