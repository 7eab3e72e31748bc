"""Readiness checks and the commit latency histogram, without a server."""

from __future__ import annotations

import asyncio

import pytest

from hbroker.admin.health import Readiness
from hbroker.admin.server import Tokens
from hbroker.admin.tokens import hash_token
from hbroker.config import AdminConfig, AdminToken
from hbroker.histogram import Histogram


def test_readiness_names_each_failing_check_and_a_broken_one_is_not_ready() -> None:
    readiness = Readiness()
    state = {"storage": None}
    readiness.add("storage", lambda: state["storage"])
    readiness.add("cluster", lambda: 1 / 0)
    assert readiness.failures() == {"cluster": "check failed: ZeroDivisionError('division "
                                               "by zero')"}
    state["storage"] = "storage commits fail"
    assert list(readiness.failures()) == ["storage", "cluster"]
    with pytest.raises(ValueError, match="'storage' is registered already"):
        readiness.add("storage", lambda: None)


def test_histogram_counts_each_observation_in_the_first_bucket_that_holds_it() -> None:
    h = Histogram((0.001, 0.01, 0.1))
    for seconds in (0.0005, 0.001, 0.005, 0.5):
        h.observe(seconds)
    assert h.cumulative() == [(0.001, 2), (0.01, 3), (0.1, 3), (float("inf"), 4)]
    assert (h.count, round(h.sum, 4)) == (4, 0.5065)


def test_tokens_identify_their_holder_and_role_and_refuse_others() -> None:
    tokens = Tokens(AdminConfig(tokens=(AdminToken("prometheus", hash_token("r")),
                                        AdminToken("ops", hash_token("a"), "admin"))))

    async def run() -> list:
        return [await tokens.identify(t) for t in ("r", "a", "x", "a")]

    assert asyncio.run(run()) == [("prometheus", "read"), ("ops", "admin"), None,
                                  ("ops", "admin")]
    assert len(tokens.known) == 2  # only tokens that matched are remembered
