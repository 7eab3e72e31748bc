"""The topics seam (hbroker_ext/topics.pyx) against naive references written from MQTT 5.0 4.7/4.8.

The subscription trie and the retained trie are driven by hypothesis state machines through random
subscribe/unsubscribe and set/pop sequences; after every step the tries must agree with a plain
dict model matched by `reference_matches`, a direct transcription of the rules of section 4.7.
"""

from __future__ import annotations

import itertools

import pytest
from hbroker_ext.topics import (
    RetainedTree,
    SubscriptionTree,
    parse_shared,
    valid_topic_filter,
    valid_topic_name,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

SHARE = "$share/"
MAX_UTF8_BYTES = 65535

# ---------------------------------------------------------------------------------------------
# References, written from the specification rather than from the implementation.
# ---------------------------------------------------------------------------------------------


def reference_matches(topic_filter: str, topic: str) -> bool:
    """Whether a plain (non-shared) filter matches a topic name, MQTT 5.0 section 4.7.

    `+` matches exactly one level, `#` matches any number of levels including none (so `a/#`
    matches `a`), empty levels are levels, and a filter whose first character is a wildcard does
    not match a topic whose first character is `$` [MQTT-4.7.2-1].
    """
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for i, level in enumerate(filter_levels):
        if level == "#":
            return True
        if i >= len(topic_levels):
            return False
        if level != "+" and level != topic_levels[i]:
            return False
    return len(filter_levels) == len(topic_levels)


def reference_parse_shared(topic_filter: str) -> tuple[str | None, str]:
    if not topic_filter.startswith(SHARE):
        return None, topic_filter
    group, _, inner = topic_filter[len(SHARE):].partition("/")
    return group, inner


def _utf8_length(text: str) -> int | None:
    """The UTF-8 length, or None when the text cannot be UTF-8 (lone surrogates, MQTT-1.5.4-1)."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return None


def reference_valid_topic_name(name: str) -> bool:
    length = _utf8_length(name)
    return (bool(name) and "+" not in name and "#" not in name and "\x00" not in name
            and length is not None and length <= MAX_UTF8_BYTES)


def _reference_valid_plain_filter(topic_filter: str) -> bool:
    if not topic_filter:
        return False
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if level == "#":
            if i != len(levels) - 1:
                return False
        elif level != "+" and ("+" in level or "#" in level):
            return False
    return True


def reference_valid_topic_filter(topic_filter: str) -> bool:
    length = _utf8_length(topic_filter)
    if not topic_filter or "\x00" in topic_filter or length is None or length > MAX_UTF8_BYTES:
        return False
    if topic_filter.startswith(SHARE):
        rest = topic_filter[len(SHARE):]
        if "/" not in rest:
            return False
        group, _, inner = rest.partition("/")
        if not group or "+" in group or "#" in group:
            return False
        return _reference_valid_plain_filter(inner)
    return _reference_valid_plain_filter(topic_filter)


def test_reference_matcher_follows_the_specification_examples() -> None:
    # The examples of MQTT 5.0 4.7.1.2, 4.7.1.3 and 4.7.2, so the reference itself is checked.
    assert reference_matches("sport/tennis/player1/#", "sport/tennis/player1")
    assert reference_matches("sport/tennis/player1/#", "sport/tennis/player1/ranking")
    assert reference_matches("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon")
    assert reference_matches("sport/#", "sport")
    assert reference_matches("sport/tennis/+", "sport/tennis/player1")
    assert not reference_matches("sport/tennis/+", "sport/tennis/player1/ranking")
    assert not reference_matches("sport/+", "sport")
    assert reference_matches("sport/+", "sport/")
    assert reference_matches("+/+", "/finance")
    assert reference_matches("/+", "/finance")
    assert not reference_matches("+", "/finance")
    assert not reference_matches("#", "$SYS/broker")
    assert not reference_matches("+/monitor/Clients", "$SYS/monitor/Clients")
    assert reference_matches("$SYS/#", "$SYS/monitor/Clients")
    assert reference_matches("$SYS/monitor/+", "$SYS/monitor/Clients")


# ---------------------------------------------------------------------------------------------
# Strategies: a small alphabet of level names, so that filters and topics actually meet.
# ---------------------------------------------------------------------------------------------

LEVELS = ("a", "b", "", "$x")
CLIENTS = ("c1", "c2", "c3")
GROUPS = ("g1", "g2")

topic_names = st.lists(st.sampled_from(LEVELS), min_size=1, max_size=4).map("/".join).filter(
    bool)
plain_filters = st.builds(
    lambda levels, hash_tail: "/".join(levels + (["#"] if hash_tail else [])),
    st.lists(st.sampled_from((*LEVELS, "+")), min_size=0, max_size=3),
    st.booleans(),
).filter(bool)
shared_filters = st.builds(lambda g, f: f"{SHARE}{g}/{f}", st.sampled_from(GROUPS), plain_filters)
any_filters = st.one_of(plain_filters, shared_filters)

# Every topic the strategies can produce with up to three levels: the final exhaustive check.
ALL_TOPICS = [t for n in (1, 2, 3) for t in map("/".join, itertools.product(LEVELS, repeat=n))
              if t]

MACHINE_SETTINGS = settings(max_examples=50, stateful_step_count=25, deadline=None,
                            database=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------------------------
# SubscriptionTree
# ---------------------------------------------------------------------------------------------

Members = dict[str, int]


class SubscriptionTreeMachine(RuleBasedStateMachine):
    """The trie against a dict model: plain (filter, client) -> options; shared key -> members."""

    def __init__(self) -> None:
        super().__init__()
        self.tree = SubscriptionTree()
        self.plain: dict[tuple[str, str], int] = {}
        self.shared: dict[str, Members] = {}  # dict order is join order
        self.next_option = 0

    def _count(self) -> int:
        return len(self.plain) + sum(len(m) for m in self.shared.values())

    def _exists(self, topic_filter: str, client: str) -> bool:
        if topic_filter.startswith(SHARE):
            return client in self.shared.get(topic_filter, {})
        return (topic_filter, client) in self.plain

    def _expected(self, topic: str) -> tuple[list[tuple[str, int]], list[tuple[str, list]]]:
        normal = sorted(
            (client, options) for (f, client), options in self.plain.items()
            if reference_matches(f, topic))
        shared = sorted(
            (key, list(members.items())) for key, members in self.shared.items()
            if members and reference_matches(reference_parse_shared(key)[1], topic))
        return normal, shared

    def _check_topic(self, topic: str) -> None:
        normal, shared = self.tree.match(topic)
        expected_normal, expected_shared = self._expected(topic)
        assert sorted(normal) == expected_normal, topic
        # Groups may come in any order; members must be in join order.
        assert sorted(shared) == expected_shared, topic

    @initialize()
    def empty_tree_matches_nothing(self) -> None:
        assert len(self.tree) == 0
        assert self.tree.match("a") == ([], [])

    @rule(topic_filter=any_filters, client=st.sampled_from(CLIENTS))
    def subscribe(self, topic_filter: str, client: str) -> None:
        self._subscribe(topic_filter, client)

    @precondition(lambda self: self._count() > 0)
    @rule(data=st.data(), client=st.sampled_from(CLIENTS))
    def subscribe_to_existing_filter(self, data: st.DataObject, client: str) -> None:
        """Re-subscriptions and further group members, which random filters seldom produce."""
        # Half the time a shared group, so that groups grow and members re-subscribe.
        if self.shared and data.draw(st.booleans()):
            filters = sorted(self.shared)
        else:
            filters = sorted({f for f, _ in self.plain} | set(self.shared))
        self._subscribe(data.draw(st.sampled_from(filters)), client)

    def _subscribe(self, topic_filter: str, client: str) -> None:
        self.next_option += 1
        options = self.next_option
        expected_new = not self._exists(topic_filter, client)
        before = self.tree.generation
        assert self.tree.subscribe(topic_filter, client, options) is expected_new
        assert self.tree.generation == before + 1
        if topic_filter.startswith(SHARE):
            self.shared.setdefault(topic_filter, {})[client] = options  # keeps its place
        else:
            self.plain[(topic_filter, client)] = options

    @precondition(lambda self: self._count() > 0)
    @rule(data=st.data())
    def unsubscribe_existing(self, data: st.DataObject) -> None:
        existing = sorted(self.plain) + sorted(
            (key, client) for key, members in self.shared.items() for client in members)
        topic_filter, client = data.draw(st.sampled_from(existing))
        before = self.tree.generation
        assert self.tree.unsubscribe(topic_filter, client) is True
        assert self.tree.generation == before + 1
        if topic_filter.startswith(SHARE):
            del self.shared[topic_filter][client]
            if not self.shared[topic_filter]:
                del self.shared[topic_filter]
        else:
            del self.plain[(topic_filter, client)]

    @rule(topic_filter=any_filters, client=st.sampled_from(CLIENTS))
    def unsubscribe_any(self, topic_filter: str, client: str) -> None:
        existed = self._exists(topic_filter, client)
        before = self.tree.generation
        assert self.tree.unsubscribe(topic_filter, client) is existed
        if existed:
            assert self.tree.generation == before + 1
            if topic_filter.startswith(SHARE):
                del self.shared[topic_filter][client]
                if not self.shared[topic_filter]:
                    del self.shared[topic_filter]
            else:
                del self.plain[(topic_filter, client)]

    @rule(topic=topic_names)
    def match(self, topic: str) -> None:
        self._check_topic(topic)

    @invariant()
    def length_is_the_number_of_subscriptions(self) -> None:
        assert len(self.tree) == self._count()

    def teardown(self) -> None:
        for topic in ALL_TOPICS:
            self._check_topic(topic)
        # Removing every subscription leaves an empty trie: no node survives pruning.
        for topic_filter, client in list(self.plain):
            assert self.tree.unsubscribe(topic_filter, client) is True
        for key, members in self.shared.items():
            for client in members:
                assert self.tree.unsubscribe(key, client) is True
        assert len(self.tree) == 0
        assert self.tree._node_count() == 0
        assert all(self.tree.match(topic) == ([], []) for topic in ALL_TOPICS)


SubscriptionTreeMachine.TestCase.settings = MACHINE_SETTINGS
TestSubscriptionTreeAgreesWithReferenceMatcher = SubscriptionTreeMachine.TestCase


def test_subscribe_returns_true_when_new_and_false_when_replacing_options() -> None:
    tree = SubscriptionTree()
    assert tree.subscribe("a/+", "c1", "qos0") is True
    assert tree.subscribe("a/+", "c1", "qos1") is False
    assert tree.subscribe("a/+", "c2", "qos0") is True
    assert len(tree) == 2
    assert sorted(tree.match("a/b")[0]) == [("c1", "qos1"), ("c2", "qos0")]


def test_unsubscribe_returns_whether_the_subscription_existed() -> None:
    tree = SubscriptionTree()
    tree.subscribe("a/b", "c1", 1)
    tree.subscribe("$share/g/a/b", "c1", 2)
    assert tree.unsubscribe("a/b", "c2") is False
    assert tree.unsubscribe("a", "c1") is False
    assert tree.unsubscribe("a/b/c", "c1") is False
    assert tree.unsubscribe("$share/h/a/b", "c1") is False
    assert tree.unsubscribe("a/b", "c1") is True
    assert tree.unsubscribe("a/b", "c1") is False
    assert tree.unsubscribe("$share/g/a/b", "c1") is True
    assert len(tree) == 0
    assert tree._node_count() == 0


def test_generation_increments_on_every_change() -> None:
    tree = SubscriptionTree()
    assert tree.generation == 0
    tree.subscribe("a", "c1", 0)
    assert tree.generation == 1
    tree.subscribe("a", "c1", 1)  # replacing the options is a change too
    assert tree.generation == 2
    tree.subscribe("$share/g/a", "c2", 0)
    assert tree.generation == 3
    assert tree.unsubscribe("a", "c1") is True
    assert tree.generation == 4
    assert tree.unsubscribe("$share/g/a", "c2") is True
    assert tree.generation == 5


def test_wildcard_filter_does_not_match_dollar_topic() -> None:
    tree = SubscriptionTree()
    for f in ("#", "+/broker", "+/#", "$SYS/#", "$SYS/+", "$share/g/#", "$share/g/$SYS/#"):
        tree.subscribe(f, "c1", f)
    normal, shared = tree.match("$SYS/broker")
    assert sorted(normal) == [("c1", "$SYS/#"), ("c1", "$SYS/+")]
    assert shared == [("$share/g/$SYS/#", [("c1", "$share/g/$SYS/#")])]


def test_hash_matches_the_parent_level_and_empty_levels_count() -> None:
    tree = SubscriptionTree()
    for f in ("sport/#", "sport/+", "+/+", "/+", "+"):
        tree.subscribe(f, "c1", f)
    assert sorted(tree.match("sport")[0]) == [("c1", "+"), ("c1", "sport/#")]
    assert sorted(tree.match("sport/")[0]) == [("c1", "+/+"), ("c1", "sport/#"),
                                               ("c1", "sport/+")]
    assert sorted(tree.match("/finance")[0]) == [("c1", "+/+"), ("c1", "/+")]


def test_client_with_overlapping_filters_appears_once_per_filter() -> None:
    tree = SubscriptionTree()
    tree.subscribe("a/#", "c1", 1)
    tree.subscribe("a/+", "c1", 2)
    tree.subscribe("a/b", "c1", 3)
    tree.subscribe("#", "c1", 4)
    assert sorted(tree.match("a/b")[0]) == [("c1", 1), ("c1", 2), ("c1", 3), ("c1", 4)]


def test_shared_members_are_listed_in_join_order_per_group_key() -> None:
    tree = SubscriptionTree()
    tree.subscribe("$share/g/a/+", "c3", 1)
    tree.subscribe("$share/g/a/+", "c1", 2)
    tree.subscribe("$share/g/a/b", "c2", 3)
    tree.subscribe("$share/h/a/+", "c2", 4)
    tree.subscribe("$share/g/a/+", "c2", 5)
    tree.subscribe("$share/g/a/+", "c3", 6)  # re-subscribing keeps its place, new options
    normal, shared = tree.match("a/b")
    assert normal == []
    assert sorted(shared) == [
        ("$share/g/a/+", [("c3", 6), ("c1", 2), ("c2", 5)]),
        ("$share/g/a/b", [("c2", 3)]),
        ("$share/h/a/+", [("c2", 4)]),
    ]
    tree.unsubscribe("$share/g/a/+", "c3")
    tree.subscribe("$share/g/a/+", "c3", 7)  # leaving and joining again goes to the end
    assert dict(tree.match("a/c")[1])["$share/g/a/+"] == [("c1", 2), ("c2", 5), ("c3", 7)]


def test_shared_subscription_matches_its_inner_filter_only() -> None:
    tree = SubscriptionTree()
    tree.subscribe("$share/g/a", "c1", 1)
    assert tree.match("$share/g/a") == ([], [])
    assert tree.match("a") == ([], [("$share/g/a", [("c1", 1)])])


# Many siblings, so that a node's children index grows, shrinks and deletes from the middle of
# probe runs; levels longer than 8 bytes, non-ASCII levels, and lone surrogates (which no valid
# topic has, but the trie must still treat as names like any other).
WIDE_LEVELS = (*(f"n{i}" for i in range(120)), "é", "日本語", "ü/ß", "x" * 8, "x" * 9, "x" * 17,
               "longer-than-eight-bytes", "\ud800", "a\udfffb", "", "$d")


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_trie_with_many_siblings_agrees_with_the_reference(data: st.DataObject) -> None:
    tree = SubscriptionTree()
    model: dict[tuple[str, str], int] = {}
    level = st.sampled_from(WIDE_LEVELS)
    new_filter = st.lists(st.one_of(level, st.just("+")), min_size=1, max_size=2).map("/".join)
    for step in range(data.draw(st.integers(0, 400))):
        if model and data.draw(st.integers(0, 2)) == 0:
            topic_filter, client = data.draw(st.sampled_from(sorted(model)))
            assert tree.unsubscribe(topic_filter, client) is True
            del model[(topic_filter, client)]
        else:
            topic_filter, client = data.draw(new_filter), data.draw(st.sampled_from(CLIENTS))
            tree.subscribe(topic_filter, client, step)
            model[(topic_filter, client)] = step
    topics = {f.replace("+", "n0") for f, _ in model} | set(data.draw(
        st.lists(st.lists(level, min_size=1, max_size=3).map("/".join), max_size=20)))
    for topic in topics:
        expected = sorted((c, o) for (f, c), o in model.items() if reference_matches(f, topic))
        assert sorted(tree.match(topic)[0]) == expected, topic
    for topic_filter, client in list(model):
        assert tree.unsubscribe(topic_filter, client) is True
    assert tree._node_count() == 0
    assert all(tree.match(topic) == ([], []) for topic in topics)


def test_removing_siblings_in_any_order_keeps_the_others_reachable() -> None:
    tree = SubscriptionTree()
    names = [f"w/{i}" for i in range(2000)]
    for name in names:
        tree.subscribe(name, "c1", name)
    remaining = set(names)
    for name in names[::3] + names[1::3]:  # two passes through every probe run
        assert tree.unsubscribe(name, "c1") is True
        remaining.discard(name)
        if len(remaining) % 250 == 0:
            for other in names:
                assert tree.match(other)[0] == ([("c1", other)] if other in remaining else [])
    assert len(tree) == len(remaining) == len(names[2::3])
    for name in names[2::3]:
        assert tree.unsubscribe(name, "c1") is True
    assert tree._node_count() == 0


def test_match_results_follow_changes_to_the_same_filter() -> None:
    # match hands out the trie's own (client, options) pairs: a change must replace them.
    tree = SubscriptionTree()
    tree.subscribe("a", "c1", 1)
    tree.subscribe("$share/g/a", "c2", 1)
    first = tree.match("a")
    assert first == ([("c1", 1)], [("$share/g/a", [("c2", 1)])])
    tree.subscribe("a", "c1", 2)
    tree.subscribe("a", "c3", 3)
    tree.subscribe("$share/g/a", "c4", 4)
    assert tree.match("a") == ([("c1", 2), ("c3", 3)],
                               [("$share/g/a", [("c2", 1), ("c4", 4)])])
    assert first == ([("c1", 1)], [("$share/g/a", [("c2", 1)])])  # earlier results unchanged
    tree.unsubscribe("a", "c1")
    tree.unsubscribe("$share/g/a", "c2")
    assert tree.match("a") == ([("c3", 3)], [("$share/g/a", [("c4", 4)])])


# ---------------------------------------------------------------------------------------------
# RetainedTree
# ---------------------------------------------------------------------------------------------

# Filters for the exhaustive final check: every plain filter of up to two levels plus '#'.
ALL_FILTERS = sorted({
    f for n in (1, 2) for levels in itertools.product((*LEVELS, "+"), repeat=n)
    for f in ("/".join(levels), "/".join(levels) + "/#") if f
} | {"#"})


class RetainedTreeMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tree = RetainedTree()
        self.model: dict[str, int] = {}
        self.next_value = 0

    def _check_filter(self, topic_filter: str) -> None:
        expected = sorted(v for t, v in self.model.items() if reference_matches(topic_filter, t))
        assert sorted(self.tree.match(topic_filter)) == expected, topic_filter

    @rule(topic=topic_names)
    def set(self, topic: str) -> None:
        self.next_value += 1
        self.tree.set(topic, self.next_value)
        self.model[topic] = self.next_value

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def pop_existing(self, data: st.DataObject) -> None:
        topic = data.draw(st.sampled_from(sorted(self.model)))
        assert self.tree.pop(topic) == self.model.pop(topic)
        assert self.tree.get(topic) is None

    @rule(topic=topic_names)
    def pop_any(self, topic: str) -> None:
        assert self.tree.pop(topic) == self.model.pop(topic, None)

    @rule(topic=topic_names)
    def get(self, topic: str) -> None:
        assert self.tree.get(topic) == self.model.get(topic)

    @rule(topic_filter=plain_filters)
    def match(self, topic_filter: str) -> None:
        self._check_filter(topic_filter)

    @invariant()
    def length_and_values_agree(self) -> None:
        assert len(self.tree) == len(self.model)
        assert sorted(self.tree.values()) == sorted(self.model.values())

    def teardown(self) -> None:
        for topic_filter in ALL_FILTERS:
            self._check_filter(topic_filter)
        for topic in list(self.model):
            assert self.tree.pop(topic) == self.model.pop(topic)
        assert len(self.tree) == 0
        assert self.tree.values() == []
        assert self.tree.match("#") == []


RetainedTreeMachine.TestCase.settings = MACHINE_SETTINGS
TestRetainedTreeAgreesWithReferenceMatcher = RetainedTreeMachine.TestCase


def test_retained_hash_filter_does_not_match_dollar_topics() -> None:
    tree = RetainedTree()
    for topic in ("$SYS/broker/uptime", "$SYS", "a", "a/b", "/a"):
        tree.set(topic, topic)
    assert sorted(tree.match("#")) == ["/a", "a", "a/b"]
    assert sorted(tree.match("+")) == ["a"]
    assert sorted(tree.match("+/+")) == ["/a", "a/b"]
    assert sorted(tree.match("$SYS/#")) == ["$SYS", "$SYS/broker/uptime"]
    assert sorted(tree.match("$SYS/+/uptime")) == ["$SYS/broker/uptime"]


def test_retained_hash_filter_matches_the_parent_level() -> None:
    tree = RetainedTree()
    tree.set("sport", 1)
    tree.set("sport/tennis", 2)
    tree.set("sport/tennis/player1", 3)
    tree.set("sports", 4)
    assert sorted(tree.match("sport/#")) == [1, 2, 3]
    assert sorted(tree.match("sport/tennis/#")) == [2, 3]
    assert tree.match("sport/+") == [2]
    assert tree.match("sport/tennis/player1/#") == [3]


def test_retained_set_replaces_and_pop_removes() -> None:
    tree = RetainedTree()
    assert tree.get("a/b") is None
    tree.set("a/b", "one")
    tree.set("a/b", "two")
    tree.set("a", "parent")
    assert len(tree) == 2
    assert tree.get("a/b") == "two"
    assert tree.pop("a/b/c") is None
    assert tree.pop("a/b") == "two"
    assert tree.pop("a/b") is None
    assert len(tree) == 1
    assert tree.values() == ["parent"]
    assert tree.match("a/#") == ["parent"]


# ---------------------------------------------------------------------------------------------
# valid_topic_name, valid_topic_filter, parse_shared
# ---------------------------------------------------------------------------------------------

LONGEST = "a" * MAX_UTF8_BYTES
LONGEST_MULTIBYTE = "é" * (MAX_UTF8_BYTES // 2) + "a"  # 65535 bytes in 32768 characters

VALID_NAMES = ["a", "/", "a/b", "a//b", "/a", "a/", "//", " ", "$SYS/broker", "$share/g/a",
               "é/ü", "a$b", LONGEST, LONGEST_MULTIBYTE]
INVALID_NAMES = ["", "+", "#", "a/+", "a/#", "a+", "a#b", "+/a", "\x00", "a\x00b",
                 LONGEST + "a", "é" * (MAX_UTF8_BYTES // 2 + 1), "\ud800", "a/\udfff"]


@pytest.mark.parametrize("name", VALID_NAMES, ids=lambda s: repr(s[:20]))
def test_valid_topic_name_accepts(name: str) -> None:
    assert valid_topic_name(name) is True


@pytest.mark.parametrize("name", INVALID_NAMES, ids=lambda s: repr(s[:20]))
def test_valid_topic_name_rejects(name: str) -> None:
    assert valid_topic_name(name) is False


VALID_FILTERS = ["#", "+", "a", "a/#", "a/+/b", "+/+", "/", "//", "/+", "+/", "/#", "a//#",
                 "+/#", "$SYS/#", "$share", "$shared/a", "$SHARE/g/a", "$share/g/a",
                 "$share/g/#", "$share/g/+/b", "$share/g//", "$share/g/$share/g/a",
                 "$share/group-1/a/b", LONGEST, "$share/g/" + "a" * (MAX_UTF8_BYTES - 9)]
INVALID_FILTERS = ["", "a/#/b", "#/", "#/a", "##", "a#", "#a", "a+", "+a", "a/b+", "++",
                   "a/+#", "a/#+", "$share/g", "$share/g/", "$share/", "$share//a",
                   "$share/g+/a", "$share/+/a", "$share/g#/a", "$share/#/a", "$share/#",
                   "$share/g/a/#/b", "$share/g/a+", "$SHARE/g+/a", "a\x00", "$share/g/\x00",
                   LONGEST + "a",
                   "$share/g/" + "a" * (MAX_UTF8_BYTES - 8), "\ud800"]


@pytest.mark.parametrize("topic_filter", VALID_FILTERS, ids=lambda s: repr(s[:20]))
def test_valid_topic_filter_accepts(topic_filter: str) -> None:
    assert valid_topic_filter(topic_filter) is True


@pytest.mark.parametrize("topic_filter", INVALID_FILTERS, ids=lambda s: repr(s[:20]))
def test_valid_topic_filter_rejects(topic_filter: str) -> None:
    assert valid_topic_filter(topic_filter) is False


@pytest.mark.parametrize(("topic_filter", "expected"), [
    ("a/b", (None, "a/b")),
    ("#", (None, "#")),
    ("$SYS/#", (None, "$SYS/#")),
    ("$share", (None, "$share")),
    ("$shared/g/a", (None, "$shared/g/a")),
    ("$SHARE/g/a", (None, "$SHARE/g/a")),
    ("$share/g/a", ("g", "a")),
    ("$share/g/a/b/#", ("g", "a/b/#")),
    ("$share/g//a", ("g", "/a")),
    ("$share/g/", ("g", "")),
    ("$share/g", ("g", "")),
    ("$share//a", ("", "a")),
])
def test_parse_shared_splits_group_and_filter(topic_filter: str,
                                              expected: tuple[str | None, str]) -> None:
    assert parse_shared(topic_filter) == expected


# Fragments that combine into the interesting cases: wildcards next to text, empty levels,
# the shared prefix, a $ first character, U+0000 and a two-byte character.
FRAGMENTS = ("a", "b", "/", "+", "#", "$", "$share/", "\x00", "é", "")
fragment_text = st.lists(st.sampled_from(FRAGMENTS), max_size=8).map("".join)
candidates = st.one_of(fragment_text, fragment_text, st.text(max_size=12))


@settings(max_examples=300, deadline=None, database=None)
@given(text=candidates)
def test_validators_agree_with_reference(text: str) -> None:
    assert valid_topic_name(text) is reference_valid_topic_name(text)
    assert valid_topic_filter(text) is reference_valid_topic_filter(text)
    assert parse_shared(text) == reference_parse_shared(text)
