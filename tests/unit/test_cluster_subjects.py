"""The MQTT topic ↔ NATS subject mapping against nats-server's own fixtures.

The tables are those of `TestMQTTTopicAndSubjectConversion` and `TestMQTTFilterConversion`
(nats-server `server/mqtt_test.go`), case by case; the deviations the module documents are
tested beside them. A straight port of nats-server's byte loop (`mqttToNATSSubjectConversion`)
checks the level-wise implementation on arbitrary topics.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from hbroker.cluster.subjects import (
    SubjectError,
    filter_to_subjects,
    subject_to_topic,
    topic_to_subject,
)

# TestMQTTTopicAndSubjectConversion: (MQTT topic, NATS subject), converted both ways.
TOPIC_SUBJECTS = [
    ("/", "/./"),
    ("//", "/././"),
    ("///", "/./././"),
    ("////", "/././././"),
    ("foo", "foo"),
    ("/foo", "/.foo"),
    ("//foo", "/./.foo"),
    ("///foo", "/././.foo"),
    ("///foo/", "/././.foo./"),
    ("///foo//", "/././.foo././"),
    ("///foo///", "/././.foo./././"),
    ("//.foo.//", "/././/foo//././"),
    ("foo/bar", "foo.bar"),
    ("/foo/bar", "/.foo.bar"),
    ("/foo/bar/", "/.foo.bar./"),
    ("foo/bar/baz", "foo.bar.baz"),
    ("/foo/bar/baz", "/.foo.bar.baz"),
    ("/foo/bar/baz/", "/.foo.bar.baz./"),
    ("bar/", "bar./"),
    ("bar//", "bar././"),
    ("bar///", "bar./././"),
    ("foo//bar", "foo./.bar"),
    ("foo///bar", "foo././.bar"),
    ("foo////bar", "foo./././.bar"),
    (".", "//"),
    ("..", "////"),
    ("...", "//////"),
    ("./", "//./"),
    (".//.", "//././/"),
    ("././.", "//.//.//"),
    ("././/.", "//.//././/"),
    (".foo", "//foo"),
    ("foo.", "foo//"),
    (".foo.", "//foo//"),
    ("foo../bar/", "foo////.bar./"),
    ("foo../bar/.", "foo////.bar.//"),
    ("/foo/", "/.foo./"),
    ("./foo/.", "//.foo.//"),
    ("foo.bar/baz", "foo//bar.baz"),
]

# The same test's error cases: (topic, a fragment of the reason).
TOPIC_ERRORS = [
    ("foo/+", "wildcards not allowed"),
    ("foo/#", "wildcards not allowed"),
    ("foo bar", "not supported"),
    ("foo\x7fbar", "not supported"),
]

# TestMQTTFilterConversion: (MQTT filter, NATS subject).
FILTER_SUBJECTS = [
    ("+", "*"),
    ("/+", "/.*"),
    ("+/", "*./"),
    ("/+/", "/.*./"),
    ("foo/+", "foo.*"),
    ("foo/+/", "foo.*./"),
    ("foo/+/bar", "foo.*.bar"),
    ("foo/+/+", "foo.*.*"),
    ("foo/+/+/", "foo.*.*./"),
    ("foo/+/+/bar", "foo.*.*.bar"),
    ("foo//+", "foo./.*"),
    ("foo//+/", "foo./.*./"),
    ("foo//+//", "foo./.*././"),
    ("foo//+//bar", "foo./.*./.bar"),
    ("foo///+///bar", "foo././.*././.bar"),
    ("foo.bar///+///baz", "foo//bar././.*././.baz"),
    ("#", ">"),
    ("/#", "/.>"),
    ("/foo/#", "/.foo.>"),
    ("foo/#", "foo.>"),
    ("foo//#", "foo./.>"),
    ("foo///#", "foo././.>"),
    ("foo/bar/#", "foo.bar.>"),
    ("foo/bar.baz/#", "foo.bar//baz.>"),
    # "NATS wildcards in MQTT filters are generally not escaped": inside a longer level they
    # are literal tokens for NATS as well.
    ("foo*/bar", "foo*.bar"),
    ("foo>/bar", "foo>.bar"),
]

# The rest of that table: nats-server subscribes to a NATS wildcard for a level that is `*`
# or `>`; to MQTT such a level is literal, so it is refused here (see hbroker.cluster.subjects).
FILTER_NATS_WILDCARD_LEVELS = ["foo/*/bar", "foo/*/bar/*", "foo/>", "foo/*/bar/>"]


@pytest.mark.parametrize(("topic", "subject"), TOPIC_SUBJECTS, ids=[t for t, _ in TOPIC_SUBJECTS])
def test_topic_maps_to_the_subject_nats_server_gives_it(topic: str, subject: str) -> None:
    assert topic_to_subject(topic) == subject


@pytest.mark.parametrize(("topic", "subject"), TOPIC_SUBJECTS, ids=[t for t, _ in TOPIC_SUBJECTS])
def test_subject_maps_back_to_the_topic(topic: str, subject: str) -> None:
    assert subject_to_topic(subject) == topic


@pytest.mark.parametrize(("topic", "reason"), TOPIC_ERRORS, ids=[t for t, _ in TOPIC_ERRORS])
def test_topic_nats_server_refuses_is_refused(topic: str, reason: str) -> None:
    with pytest.raises(SubjectError, match=reason):
        topic_to_subject(topic)


@pytest.mark.parametrize("topic", ["foo\tbar", "foo\nbar", "foo\rbar", "foo\fbar", " ",
                                   "a/b c/d"])
def test_topic_with_whitespace_is_refused(topic: str) -> None:
    with pytest.raises(SubjectError, match="not supported"):
        topic_to_subject(topic)


@pytest.mark.parametrize("topic", ["*", ">", "a/*", "a/>", "*/b", "a/*/b", "a//>"])
def test_topic_level_that_would_be_a_nats_wildcard_is_refused(topic: str) -> None:
    with pytest.raises(SubjectError, match="would be a NATS wildcard"):
        topic_to_subject(topic)


@pytest.mark.parametrize(("topic", "subject"), [("a*/b", "a*.b"), ("a/>b", "a.>b"),
                                                ("**", "**"), ("a/*.", "a.*//")])
def test_topic_with_star_or_gt_inside_a_level_is_a_literal_subject(topic: str,
                                                                    subject: str) -> None:
    assert topic_to_subject(topic) == subject
    assert subject_to_topic(subject) == topic


def test_empty_topic_is_refused() -> None:
    with pytest.raises(SubjectError, match=r"MQTT-4\.7\.3-1"):
        topic_to_subject("")


@pytest.mark.parametrize(("topic_filter", "subject"), FILTER_SUBJECTS,
                         ids=[f for f, _ in FILTER_SUBJECTS])
def test_filter_maps_to_the_subject_nats_server_gives_it(topic_filter: str,
                                                         subject: str) -> None:
    assert filter_to_subjects(topic_filter)[0] == subject


@pytest.mark.parametrize("topic_filter", FILTER_NATS_WILDCARD_LEVELS)
def test_filter_level_that_would_be_a_nats_wildcard_is_refused(topic_filter: str) -> None:
    with pytest.raises(SubjectError, match="would be a NATS wildcard"):
        filter_to_subjects(topic_filter)


@pytest.mark.parametrize(("topic_filter", "subjects"), [
    ("foo/#", ("foo.>", "foo")),
    ("foo/bar/#", ("foo.bar.>", "foo.bar")),
    ("foo//#", ("foo./.>", "foo./")),
    ("/foo/#", ("/.foo.>", "/.foo")),
    ("foo.bar/#", ("foo//bar.>", "foo//bar")),
    ("+/#", ("*.>", "*")),
    ("/#", ("/.>", "/")),  # nats-server's mqttNeedSubForLevelUp: any `X.>` gets `X` too
    ("#", (">",)),
    ("foo/+", ("foo.*",)),
    ("foo", ("foo",)),
])
def test_multi_level_wildcard_also_subscribes_to_the_parent_level(
        topic_filter: str, subjects: tuple[str, ...]) -> None:
    # [MQTT-4.7.1-2]: "sport/#" also matches "sport".
    assert filter_to_subjects(topic_filter) == subjects


def test_parent_level_subject_is_the_subject_of_the_parent_topic() -> None:
    for topic_filter, topic in [("foo/#", "foo"), ("foo//#", "foo/"), ("a/b.c/#", "a/b.c")]:
        assert filter_to_subjects(topic_filter)[1] == topic_to_subject(topic)


@pytest.mark.parametrize("topic_filter", ["foo bar", "a/\t/#", "+/\x7f", ""])
def test_filter_nats_cannot_carry_is_refused(topic_filter: str) -> None:
    with pytest.raises(SubjectError):
        filter_to_subjects(topic_filter)


def test_prefix_is_a_leading_token_of_every_subject() -> None:
    assert topic_to_subject("a/b", "hb") == "hb.a.b"
    assert topic_to_subject("/a", "hb.x") == "hb.x./.a"
    assert filter_to_subjects("a/#", "hb") == ("hb.a.>", "hb.a")
    # "#" matches every topic under the prefix, and the prefix itself is no topic.
    assert filter_to_subjects("#", "hb") == ("hb.>",)
    assert filter_to_subjects("+", "hb") == ("hb.*",)
    assert subject_to_topic("hb.a.b", "hb") == "a/b"
    assert subject_to_topic("hb.x./.a", "hb.x") == "/a"


@pytest.mark.parametrize("subject", ["a.b", "hbx.a", "hb", "hb.", "xhb.a"])
def test_subject_outside_the_prefix_is_refused(subject: str) -> None:
    with pytest.raises(SubjectError, match="prefix|empty"):
        subject_to_topic(subject, "hb")


@pytest.mark.parametrize("subject", [
    "", "a..b", ".a", "a.", "a/b", "a.///", "a.*", ">", "a.#", "a.+.b", "a\x00b", "a b",
    "a\x7f",
])
def test_subject_no_topic_maps_to_is_refused(subject: str) -> None:
    # nats-server's natsSubjectToMQTTTopic drops a stray "/" ("a/b" → "ab") and passes "+"
    # and "#" into a topic name, which MQTT forbids [MQTT-4.7.1-1].
    with pytest.raises(SubjectError):
        subject_to_topic(subject)


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------


def nats_server_conversion(mt: str, wildcards_ok: bool) -> str:
    """nats-server's mqttToNATSSubjectConversion, byte loop for byte loop (on characters)."""
    res: list[str] = []
    end = len(mt) - 1
    for i, c in enumerate(mt):
        if c == "/":
            if i == 0 or res[-1] == ".":
                res += ["/", "."]
            elif i == end or mt[i + 1] == "/":
                res += [".", "/"]
            else:
                res.append(".")
        elif c in " \t\n\r\f\x7f":
            raise SubjectError("character not supported for MQTT topics")
        elif c == ".":
            res += ["/", "/"]
        elif c in "+#":
            if not wildcards_ok:
                raise SubjectError("wildcards not allowed in publish's topic")
            res.append("*" if c == "+" else ">")
        else:
            res.append(c)
    if res and res[-1] == ".":
        res.append("/")
    return "".join(res)


# Topics made of the characters the mapping treats specially, plus ordinary ones.
topics = st.text(alphabet=st.sampled_from("ab/./é*>+# \t\x7f"), min_size=1, max_size=14) \
    | st.text(min_size=1, max_size=20)


def refused_here_only(text: str) -> bool:
    """What hbroker.cluster.subjects refuses and nats-server passes: a level that is a NATS
    wildcard, and U+0000 (never in an MQTT topic or filter [MQTT-1.5.4-2])."""
    return "\x00" in text or any(level in ("*", ">") for level in text.split("/"))


def first_subject(topic_filter: str) -> str:
    return filter_to_subjects(topic_filter)[0]


@pytest.mark.parametrize(("convert", "wildcards_ok"), [(topic_to_subject, False),
                                                       (first_subject, True)],
                         ids=["topic", "filter"])
@given(text=topics)
@example(text="a//b")
@example(text="/")
def test_maps_as_nats_server_maps_it(convert: Callable[[str], str], wildcards_ok: bool,
                                     text: str) -> None:
    try:
        expected = nats_server_conversion(text, wildcards_ok=wildcards_ok)
    except SubjectError:
        expected = None
    if expected is None or refused_here_only(text):
        with pytest.raises(SubjectError):
            convert(text)
    else:
        assert convert(text) == expected


@given(topics, st.sampled_from(["", "hb", "a.b"]))
def test_every_topic_nats_can_carry_comes_back_from_its_subject(topic: str,
                                                                prefix: str) -> None:
    try:
        subject = topic_to_subject(topic, prefix)
    except SubjectError:
        return
    assert subject_to_topic(subject, prefix) == topic


@given(st.text(alphabet=st.sampled_from("ab./é*>+#"), min_size=1, max_size=14))
def test_every_subject_that_maps_to_a_topic_comes_back_from_it(subject: str) -> None:
    try:
        topic = subject_to_topic(subject)
    except SubjectError:
        return
    assert topic_to_subject(topic) == subject


@given(topics)
def test_a_carried_topic_gives_a_literal_subject_of_one_token_per_level(topic: str) -> None:
    try:
        subject = topic_to_subject(topic)
    except SubjectError:
        return
    tokens = subject.split(".")
    assert len(tokens) == len(topic.split("/"))
    assert all(tokens) and "*" not in tokens and ">" not in tokens
