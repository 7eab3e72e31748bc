"""MQTT topics and filters ↔ NATS subjects, as nats-server's own MQTT maps them.

The rules of `mqttToNATSSubjectConversion` and `natsSubjectToMQTTTopic` (nats-server,
`server/mqtt.go`), so NATS-native clients and nats-server's MQTT see the same subjects:

- each topic level is one subject token, `/` → `.`;
- a `.` inside a level → `//`;
- an empty level → `/` (so a leading `/` → `/.`, `a//b` → `a./.b`, a trailing `/` → `./`);
- in filters `+` → `*` and `#` → `>`; a filter ending in `/#` also matches its parent level
  [MQTT-4.7.1-2], so it needs a second subscription on that level (`a/#` → `a.>` and `a`);
- whitespace (space, tab, CR, LF, FF) and DEL are refused, as nats-server refuses them.

Where this module is stricter than nats-server, on purpose:
- a topic level that is exactly `*` or `>` is refused: as a token it would be a NATS wildcard,
  which a published subject must not hold (nats-server's `IsValidLiteralSubject`; a pedantic
  server refuses it), while nats-server's MQTT publishes it anyway;
  `*` or `>` inside a longer level (`a*`, `>b`) is a literal token and passes;
- a filter level that is exactly `*` or `>` is refused too: nats-server subscribes to the
  wildcard (`a/*/b` → `a.*.b`, matching `a/x/b`), while to MQTT it is a literal level that only
  the refused topic above could match;
- U+0000 is refused in topics, filters and subjects: no MQTT string holds it [MQTT-1.5.4-2];
- a subject whose `/` are not the mapping's own (`a/b` from a NATS-native publisher) is refused
  by `subject_to_topic`; nats-server drops such a `/` and delivers `ab`. So is a subject
  holding `+` or `#`, which would give a topic name with a wildcard [MQTT-4.7.1-1].

A topic starting with `$` maps to a subject starting with `$`, where NATS keeps its own APIs
(`$JS.API.>`, `$KV.>`, `$SYS.>`): `$JS/API/...` would be a JetStream API call. The mapping
leaves that to its callers (a `subject_prefix`, or not forwarding `$` topics, which MQTT keeps
apart from wildcards anyway [MQTT-4.7.2-1]).

Plain `str` operations: the common topic (no `.`, no empty level) costs a few scans and one
`replace`.
"""

from __future__ import annotations

__all__ = ["SubjectError", "filter_to_subjects", "subject_to_topic", "topic_to_subject"]


class SubjectError(ValueError):
    """A topic, filter or subject that NATS cannot carry or this mapping cannot invert."""


# nats-server refuses these in MQTT topics and filters (errMQTTUnsupportedCharacters): they
# would split a NATS protocol line, and DEL is SubjectTree's internal pivot. All of them are
# non-printable except the space, so a printable string needs one more scan only. U+0000 is
# refused too: no MQTT topic holds it [MQTT-1.5.4-2], so no subject may map to it.
_UNSUPPORTED = " \t\n\r\f\x7f\x00"


def _unsupported(text: str) -> str | None:
    """The first character of `text` that nats-server refuses in an MQTT topic, if any."""
    if text.isprintable():
        return " " if " " in text else None
    for c in text:
        if c in _UNSUPPORTED:
            return c
    return None


def _levels_to_subject(text: str) -> str:
    """The subject of a topic or filter whose characters are already checked."""
    if "." not in text and not text.startswith("/") and not text.endswith("/") \
            and "//" not in text:
        return text.replace("/", ".")
    return ".".join(level.replace(".", "//") if level else "/" for level in text.split("/"))


def _refuse(kind: str, text: str, why: str) -> SubjectError:
    return SubjectError(f"{kind} {text!r}: {why}")


def _check(kind: str, text: str) -> None:
    """What a topic and a filter must both be to map: not empty, no character nats-server
    refuses, no level that would be a NATS wildcard."""
    if not text:
        raise _refuse(kind, text, "empty [MQTT-4.7.3-1]")
    bad = _unsupported(text)
    if bad is not None:
        raise _refuse(kind, text, f"character {bad!r} not supported")
    if "*" in text or ">" in text:
        for level in text.split("/"):
            if level == "*" or level == ">":
                raise _refuse(kind, text, f"level {level!r} would be a NATS wildcard")


def topic_to_subject(topic: str, prefix: str = "") -> str:
    """The NATS subject of a PUBLISH topic (`a/b.c` → `a.b//c`), after `prefix.` if given."""
    if "+" in topic or "#" in topic:
        # [MQTT-3.3.2-2] [MQTT-4.7.1-1]
        raise _refuse("topic", topic, "wildcards not allowed in a topic name")
    _check("topic", topic)
    subject = _levels_to_subject(topic)
    return f"{prefix}.{subject}" if prefix else subject


def filter_to_subjects(topic_filter: str, prefix: str = "") -> tuple[str, ...]:
    """The NATS subjects to subscribe to for a (valid, non-shared) MQTT topic filter: one, or
    two for a filter ending in `/#` (`a/#` → `a.>` and `a`)."""
    _check("filter", topic_filter)
    subject = _levels_to_subject(topic_filter)
    if "+" in subject or "#" in subject:
        subject = subject.replace("+", "*").replace("#", ">")
    head = f"{prefix}." if prefix else ""
    # nats-server's mqttNeedSubForLevelUp: more than one token and ending in `.>`.
    if len(subject) >= 3 and subject.endswith(".>"):
        return (head + subject, head + subject[:-2])
    return (head + subject,)


def subject_to_topic(subject: str, prefix: str = "") -> str:
    """The MQTT topic of a message received on NATS subject `subject` (`prefix.` removed)."""
    if prefix:
        if not subject.startswith(prefix) or subject[len(prefix):len(prefix) + 1] != ".":
            raise _refuse("subject", subject, f"not under the prefix {prefix!r}")
        subject = subject[len(prefix) + 1:]
    if not subject:
        raise _refuse("subject", subject, "empty")
    if "+" in subject or "#" in subject:
        # [MQTT-4.7.1-1]: no wildcard in a topic name
        raise _refuse("subject", subject, "not a valid MQTT topic name")
    bad = _unsupported(subject)
    if bad is not None:
        raise _refuse("subject", subject, f"character {bad!r} not supported")
    if "*" in subject or ">" in subject:
        for token in subject.split("."):
            if token == "*" or token == ">":
                raise _refuse("subject", subject, f"token {token!r} is a NATS wildcard")
    if "/" not in subject:
        if ".." in subject or subject.startswith(".") or subject.endswith("."):
            raise _refuse("subject", subject, "empty token")
        return subject.replace(".", "/")
    levels = []
    for token in subject.split("."):
        if token == "/":
            levels.append("")
            continue
        if not token:
            raise _refuse("subject", subject, "empty token")
        level = token.replace("//", ".")
        if "/" in level:
            raise _refuse("subject", subject, f"token {token!r} is not a mapped topic level")
        levels.append(level)
    if len(levels) == 1 and not levels[0]:
        # "/", the parent level of "/#" (see filter_to_subjects): no topic maps to it
        raise _refuse("subject", subject, "an empty topic [MQTT-4.7.3-1]")
    return "/".join(levels)
