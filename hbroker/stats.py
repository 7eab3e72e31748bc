"""Counters the broker keeps for $SYS and metrics (compiled: they are incremented on the path
of every message)."""

from hbroker_ext.routing import Stats

__all__ = ["Stats"]
