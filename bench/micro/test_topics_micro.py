"""Micro-benchmarks of the topic tries (hbroker_ext/topics.pyx): `SubscriptionTree` with
100,000 subscriptions and `RetainedTree` with 100,000 retained messages.

The trees are built once per module from a seeded random generator, so every run measures the
same trees. Topic names are `site/s<a>/d<b>/m<c>` (site, device, metric). The values stored in
the trees (subscription options, retained messages) are opaque to them: small tuples here.
Lookups run over 1,000 different topics per call, a spread over the tree closer to a broker's
traffic than one topic asked again and again; the report divides by 1,000.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from hbroker_ext.topics import RetainedTree, SubscriptionTree
from pytest_benchmark.fixture import BenchmarkFixture

Describe = Callable[..., None]  # the `describe` fixture of conftest.py

SEED = 20261123
BATCH = 1_000

# SubscriptionTree: topics site/s0..s499/d0..d49/m0..m19 (500,000 names).
SITES, DEVICES, METRICS = 500, 50, 20
EXACT_FILTERS = 45_000  # each subscribed by 2 clients: 90,000 subscriptions
EXACT_CLIENTS_PER_FILTER = 2
CLIENTS = 1_000
# Wildcard subscriptions by shape (9,800 in all): a random topic matches about 2 of them.
WILDCARD_SHAPES = {
    "site/{s}/{d}/+": 4_000,
    "site/{s}/+/{m}": 2_500,
    "site/+/{d}/{m}": 1_000,
    "site/{s}/{d}/#": 1_500,
    "site/{s}/#": 300,
    "site/{s}/{d}/{m}/+": 500,  # one level deeper than the topics: never matches them
}
SHARED = 200  # $share/g<k>/site/<s>/#, 2 to 4 members per group
SUBSCRIPTIONS = 100_000

# RetainedTree: site/s0..s99/d0..d49/m0..m19 (100,000 topics).
R_SITES, R_DEVICES, R_METRICS = 100, 50, 20


def topic(s: int, d: int, m: int) -> str:
    return f"site/s{s}/d{d}/m{m}"


def random_topic(rng: random.Random) -> str:
    return topic(rng.randrange(SITES), rng.randrange(DEVICES), rng.randrange(METRICS))


class Subscriptions:
    """The 100,000-subscription tree and the topics to match against it."""

    def __init__(self) -> None:
        rng = random.Random(SEED)
        self.tree = tree = SubscriptionTree()
        options = [(qos, False, False, 0, 0) for qos in range(3)]
        clients = [f"app-{i}" for i in range(CLIENTS)]
        exact: set[str] = set()
        while len(exact) < EXACT_FILTERS:
            exact.add(random_topic(rng))
        self.exact = sorted(exact)
        for f in self.exact:
            for client in rng.sample(clients, EXACT_CLIENTS_PER_FILTER):
                tree.subscribe(f, client, rng.choice(options))
        for shape, count in WILDCARD_SHAPES.items():
            target = len(tree) + count
            while len(tree) < target:
                f = shape.format(s=f"s{rng.randrange(SITES)}", d=f"d{rng.randrange(DEVICES)}",
                                 m=f"m{rng.randrange(METRICS)}")
                tree.subscribe(f, rng.choice(clients), rng.choice(options))
        group = 0
        while len(tree) < SUBSCRIPTIONS:
            f = f"$share/g{group}/site/s{rng.randrange(SITES)}/#"
            for client in rng.sample(clients, min(rng.randint(2, 4), SUBSCRIPTIONS - len(tree))):
                tree.subscribe(f, client, options[1])
            group += 1
        assert len(tree) == SUBSCRIPTIONS
        # Topics with subscribers: names of exact filters (2 subscribers each, plus wildcards).
        self.hits = rng.sample(self.exact, BATCH)
        # Topics without any: random names that nothing matches, down the same branches.
        self.misses: list[str] = []
        while len(self.misses) < BATCH:
            t = random_topic(rng)
            if tree.match(t) == ([], []):
                self.misses.append(t)
        # New filters for subscribe/unsubscribe: exact names nobody has subscribed to yet.
        self.new_filters: list[str] = []
        while len(self.new_filters) < BATCH:
            t = random_topic(rng)
            if t not in exact and t not in self.new_filters:
                self.new_filters.append(t)

    def mean_matches(self, topics: list[str]) -> tuple[float, float]:
        """Mean subscriptions (normal, shared groups) matched per topic."""
        normal = shared = 0
        for t in topics:
            n, s = self.tree.match(t)
            normal += len(n)
            shared += len(s)
        return normal / len(topics), shared / len(topics)


@pytest.fixture(scope="module")
def subscriptions() -> Subscriptions:
    return Subscriptions()


@pytest.fixture(scope="module")
def retained() -> RetainedTree:
    tree = RetainedTree()
    for s in range(R_SITES):
        for d in range(R_DEVICES):
            for m in range(R_METRICS):
                t = topic(s, d, m)
                tree.set(t, (t, b"x" * 64, 1))
    assert len(tree) == R_SITES * R_DEVICES * R_METRICS
    return tree


# -- SubscriptionTree -----------------------------------------------------------------------

@pytest.mark.benchmark(group="subscriptions")
@pytest.mark.parametrize("kind", ["hit", "miss"])
def test_subscription_match(benchmark: BenchmarkFixture, describe: Describe,
                            subscriptions: Subscriptions, kind: str) -> None:
    topics = subscriptions.hits if kind == "hit" else subscriptions.misses
    normal, shared = subscriptions.mean_matches(topics)
    if kind == "hit":
        text = (f"`match`, {BATCH:,} topics with subscribers (on average {normal:.1f} "
                f"subscriptions, {shared:.2f} shared groups)")
    else:
        assert normal == shared == 0
        text = f"`match`, {BATCH:,} topics without subscribers"
    describe(f"{text}, {SUBSCRIPTIONS:,} subscriptions", BATCH, "topic")
    benchmark.extra_info.update(mean_normal=normal, mean_shared=shared)
    match = subscriptions.tree.match

    def match_all() -> None:
        for t in topics:
            match(t)

    benchmark(match_all)


@pytest.mark.benchmark(group="subscriptions")
@pytest.mark.parametrize("operation", ["subscribe", "unsubscribe"])
def test_subscribe_unsubscribe(benchmark: BenchmarkFixture, describe: Describe,
                               pedantic_rounds: int, subscriptions: Subscriptions,
                               operation: str) -> None:
    """A new client subscribing to (or unsubscribing from) 1,000 exact filters nobody else
    has: new trie nodes, and their pruning. Rounds of a fixed size (`pedantic`), each after an
    untimed setup that puts the tree back in the state the operation needs."""
    tree = subscriptions.tree
    filters = subscriptions.new_filters
    options = (1, False, False, 0, 0)

    def subscribe_all() -> None:
        for f in filters:
            tree.subscribe(f, "bench-new", options)

    def unsubscribe_all() -> None:
        for f in filters:
            tree.unsubscribe(f, "bench-new")

    describe(f"`{operation}`, {BATCH:,} new exact filters of one client, "
             f"{SUBSCRIPTIONS:,} subscriptions", BATCH, "filter")
    nodes = tree._node_count()
    if operation == "subscribe":
        benchmark.pedantic(subscribe_all, setup=unsubscribe_all, rounds=pedantic_rounds)
        unsubscribe_all()
    else:
        benchmark.pedantic(unsubscribe_all, setup=subscribe_all, rounds=pedantic_rounds)
    assert len(tree) == SUBSCRIPTIONS and tree._node_count() == nodes


# -- RetainedTree ---------------------------------------------------------------------------

@pytest.mark.benchmark(group="retained")
def test_retained_get(benchmark: BenchmarkFixture, describe: Describe,
                      retained: RetainedTree) -> None:
    rng = random.Random(SEED)
    topics = [topic(rng.randrange(R_SITES), rng.randrange(R_DEVICES), rng.randrange(R_METRICS))
              for _ in range(BATCH)]
    get = retained.get

    def get_all() -> None:
        for t in topics:
            get(t)

    describe(f"`get`, {BATCH:,} topics, {len(retained):,} retained", BATCH, "topic")
    benchmark(get_all)
    assert all(retained.get(t)[0] == t for t in topics)


@pytest.mark.benchmark(group="retained")
@pytest.mark.parametrize("topic_filter", ["site/+/d7/m3", "site/s42/#", "#"])
def test_retained_match(benchmark: BenchmarkFixture, describe: Describe, retained: RetainedTree,
                        topic_filter: str) -> None:
    found = benchmark(retained.match, topic_filter)
    describe(f"`match(\"{topic_filter}\")`: {len(found):,} of {len(retained):,} retained",
             len(found), "message")
    expected = {"site/+/d7/m3": R_SITES, "site/s42/#": R_DEVICES * R_METRICS,
                "#": len(retained)}
    assert len(found) == expected[topic_filter]
