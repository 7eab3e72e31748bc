"""The ACL engine: rule order, users, groups, clients, %u/%c, $SYS and subscribe semantics."""

from __future__ import annotations

import itertools
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hbroker.auth.acl import AclError, covers, load_acl, overlaps, parse_acl, topic_matches

ACL_TEXT = """
[groups]
ops = ["alice"]

[[rules]]
users = ["*"]
topics = ["secret/#"]
actions = ["publish", "subscribe", "read"]
permission = "deny"

[[rules]]
users = ["group:ops"]
topics = ["#", "$SYS/#"]
actions = ["subscribe", "read"]
permission = "allow"

[[rules]]
users = ["*"]
topics = ["devices/%u/#"]
actions = ["publish", "subscribe", "read"]
permission = "allow"

[[rules]]
users = ["*"]
clients = ["sensor-*"]
topics = ["telemetry/%c"]
actions = ["publish"]
permission = "allow"

[[rules]]
users = ["*"]
topics = ["public/+/status"]
actions = ["subscribe", "read"]
permission = "allow"
"""

ACL = parse_acl(tomllib.loads(ACL_TEXT), "acl.toml")

# (username, client id): who asks.
ALICE = ("alice", "console")
BOB = ("bob", "bob-laptop")
SENSOR = ("carol", "sensor-7")
ANON = (None, "anon-1")
EVIL = ("+", "evil")  # a username that is a wildcard must not widen devices/%u/#

P, S, R = "publish", "subscribe", "read"

# (who, topic or filter, action) -> allowed
MATRIX = {
    (ALICE, "secret/plans", R): False,       # the deny rule comes first, even for ops
    (ALICE, "secret/#", S): False,
    (ALICE, "#", S): False,                  # overlaps the denied secret/#
    (ALICE, "factory/line1", S): True,       # covered by ops' "#"
    (ALICE, "factory/line1", R): True,
    (ALICE, "factory/line1", P): False,      # ops read, they do not publish
    (ALICE, "$SYS/broker/uptime", R): True,  # granted by an explicit $SYS rule
    (ALICE, "$SYS/#", S): True,
    (ALICE, "devices/alice/temp", P): True,
    (BOB, "devices/bob/temp", P): True,
    (BOB, "devices/bob/#", S): True,
    (BOB, "devices/alice/temp", P): False,
    (BOB, "devices/alice/temp", R): False,
    (BOB, "devices/+/temp", S): False,       # would reach other users' devices
    (BOB, "devices/#", S): False,
    (BOB, "$SYS/broker/uptime", R): False,   # no rule names $SYS for bob
    (BOB, "#", S): False,
    (BOB, "public/a/status", R): True,
    (BOB, "public/+/status", S): True,
    (BOB, "public/#", S): False,             # wider than public/+/status
    (BOB, "public/a/status", P): False,
    (SENSOR, "telemetry/sensor-7", P): True,
    (SENSOR, "telemetry/sensor-8", P): False,
    (SENSOR, "devices/carol/x", P): True,
    (BOB, "telemetry/bob-laptop", P): False,  # not a sensor-* client
    (ANON, "devices/anon-1/x", P): False,    # no username: %u never matches
    (ANON, "public/a/status", R): True,
    (ANON, "other", P): False,               # no rule: deny
    (EVIL, "devices/x/temp", P): False,
    (EVIL, "devices/+/#", S): False,
}


@pytest.mark.parametrize(("who", "topic", "action"), list(MATRIX),
                         ids=[f"{w[0]}-{t}-{a}" for w, t, a in MATRIX])
def test_acl_matrix(who: tuple, topic: str, action: str) -> None:
    username, client_id = who
    assert ACL.check(username, client_id, topic, action) is MATRIX[(who, topic, action)]


def test_cached_answers_equal_fresh_ones() -> None:
    for (username, client_id), topic, action in itertools.chain(MATRIX, MATRIX):
        assert ACL.check(username, client_id, topic, action) == \
            ACL._decide(username, client_id, topic, action)


def test_hash_does_not_match_dollar_topics() -> None:
    assert topic_matches(("#",), "a/b")
    assert not topic_matches(("#",), "$SYS/broker")
    assert not topic_matches(("+", "broker"), "$SYS/broker")
    assert topic_matches(("$SYS", "#"), "$SYS/broker")
    assert topic_matches(("a", "#"), "a")  # "#" also matches the parent level


@pytest.mark.parametrize(("text", "message"), [
    ("[[rules]]\nusers=['*']\ntopics=['a']\nactions=['write']\npermission='allow'",
     "rules[0].actions"),
    ("[[rules]]\nusers=['*']\ntopics=['a/#/b']\nactions=['read']\npermission='allow'",
     "rules[0].topics"),
    ("[[rules]]\nusers=['group:x']\ntopics=['a']\nactions=['read']\npermission='allow'",
     "group 'x' is not defined"),
    ("[[rules]]\nusers=['*']\ntopics=['a']\nactions=['read']\npermission='maybe'",
     "rules[0].permission"),
    ("[[rules]]\nusers=['*']\ntopics=['a']\nactions=['read']", "rules[0].permission: missing"),
    ("[[rules]]\nuser=['*']", "unknown key 'rules[0].user'"),
    ("[rule]\nx=1", "unknown key 'rule'"),
])
def test_bad_acl_files_name_the_file_and_the_rule(tmp_path: Path, text: str,
                                                  message: str) -> None:
    path = tmp_path / "acl.toml"
    path.write_text(text)
    with pytest.raises(AclError) as info:
        load_acl(path)
    assert str(path) in str(info.value) and message in str(info.value)


# -- subscribe semantics, checked against brute force over a small topic space ------------

LEVELS = ["a", "b", "$s"]
FILTER_LEVELS = [*LEVELS, "+", "#"]
TOPICS = ["/".join(t) for n in (1, 2, 3) for t in itertools.product(LEVELS, repeat=n)
          if "$s" not in t[1:]]


def _filters() -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(FILTER_LEVELS), min_size=1, max_size=3).filter(
        lambda f: "#" not in f[:-1] and "$s" not in f[1:])


@settings(max_examples=400)
@given(_filters(), _filters())
def test_covers_means_every_topic_of_the_filter_is_matched(pattern: list[str],
                                                           filt: list[str]) -> None:
    of_filter = {t for t in TOPICS if topic_matches(filt, t)}
    of_pattern = {t for t in TOPICS if topic_matches(pattern, t)}
    if covers(pattern, filt):
        assert of_filter <= of_pattern
    elif of_filter and "#" not in filt and "+" not in filt:
        # A filter without wildcards is one topic: not covered means not matched.
        assert not of_filter <= of_pattern


@settings(max_examples=400)
@given(_filters(), _filters())
def test_overlaps_when_some_topic_matches_both(a: list[str], b: list[str]) -> None:
    both = [t for t in TOPICS if topic_matches(a, t) and topic_matches(b, t)]
    if both:
        assert overlaps(a, b) and overlaps(b, a)
    if not overlaps(a, b):
        assert not both


@settings(max_examples=200)
@given(st.text(alphabet="ab+#/", min_size=1, max_size=6))
def test_a_username_with_wildcards_or_slashes_never_widens_a_rule(username: str) -> None:
    acl = parse_acl(tomllib.loads(
        "[[rules]]\nusers=['*']\ntopics=['devices/%u/#']\n"
        "actions=['publish','subscribe','read']\npermission='allow'"), "<t>")
    if any(c in username for c in "+#/"):
        for action in ("publish", "read"):
            assert not acl.check(username, "c", f"devices/{username}/x", action)
            assert not acl.check(username, "c", "devices/a/x", action)
        assert not acl.check(username, "c", f"devices/{username}/#", "subscribe")
    else:
        assert acl.check(username, "c", f"devices/{username}/x", "publish")
        assert not acl.check(username, "c", "devices/other/x", "publish") or username == "other"
