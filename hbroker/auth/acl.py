"""The ACL file and its engine: who may publish, subscribe and read which topics.

    [groups]
    operators = ["alice", "bob"]

    [[rules]]
    users = ["*"]                   # "*", a username, or "group:NAME"
    clients = ["sensor-*"]          # optional: client ids ("*" alone, or a trailing "*" prefix)
    topics = ["devices/%u/#"]       # topic filters; %u username, %c client id
    actions = ["publish", "subscribe", "read"]
    permission = "allow"            # or "deny"

Rules are tried in order and the first one that matches decides; no match is a deny. A rule
matches a client when `users` names it (a client without a username matches only "*"), and
`clients`, when present, names its client id.

- publish and read (receive) check a topic name against the rule's filters with MQTT's
  matching, including [MQTT-4.7.2-1]: a filter starting with a wildcard does not match `$`
  topics, so `#` does not grant `$SYS/...`; only a rule naming `$SYS/...` does.
- subscribe checks a topic filter F. An allow rule decides for F when one of its filters covers
  F (every topic F can match is matched by it); a deny rule decides when one of its filters
  overlaps F (some topic is matched by both). An allow rule that only overlaps F is passed over.
  So a granted subscription can only match topics the rules allow to subscribe to.
- %u and %c are replaced by the username and client id. A name that is empty, or contains `+`,
  `#` or `/`, makes every filter using it not match (it cannot widen a rule), and a client
  without a username never matches a filter with %u.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from typing import Any

from hbroker_ext.topics import valid_topic_filter

ACTIONS = ("publish", "subscribe", "read")
_CACHE_LIMIT = 65536


class AclError(Exception):
    """An ACL file that cannot be used; the message names the file and the rule."""


def topic_matches(filter_levels: list[str] | tuple[str, ...], topic: str) -> bool:
    """MQTT topic matching of one topic name against one filter (split into levels)."""
    levels = topic.split("/")
    if topic.startswith("$") and filter_levels and filter_levels[0] in ("+", "#"):
        return False  # [MQTT-4.7.2-1]
    n = len(levels)
    for i, f in enumerate(filter_levels):
        if f == "#":
            return True  # also matches the parent level: "a/#" matches "a"
        if i >= n:
            return False
        if f != "+" and f != levels[i]:
            return False
    return len(filter_levels) == n


def _dollar(level: str) -> bool:
    return level.startswith("$")


def covers(pattern: list[str] | tuple[str, ...], filt: list[str] | tuple[str, ...]) -> bool:
    """Whether every topic matched by filter `filt` is matched by filter `pattern`."""
    for i, p in enumerate(pattern):
        if p == "#":
            # Covers the rest, but at the first level not the $ topics a literal $ filter names.
            return not (i == 0 and i < len(filt) and _dollar(filt[0]))
        if i >= len(filt):
            return False
        f = filt[i]
        if f == "#":
            return False
        if p == "+":
            if i == 0 and _dollar(f):
                return False
            continue
        if f == "+" or f != p:
            return False
    return len(pattern) == len(filt)


def overlaps(a: list[str] | tuple[str, ...], b: list[str] | tuple[str, ...]) -> bool:
    """Whether some topic name is matched by both filters."""
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else None
        y = b[i] if i < len(b) else None
        if x is None or y is None:
            # One filter ended: only a "#" remainder on the other side matches the parent.
            rest = (b if x is None else a)[i:]
            return list(rest) == ["#"]
        if i == 0 and ((x in ("+", "#") and _dollar(y)) or (y in ("+", "#") and _dollar(x))):
            return False  # wildcards at the first level do not match $ topics
        if x == "#" or y == "#":
            return True
        if x != "+" and y != "+" and x != y:
            return False
    return True


def _safe_name(name: str | None) -> bool:
    return bool(name) and "+" not in name and "#" not in name and "/" not in name  # type: ignore


@dataclass(frozen=True, slots=True)
class Rule:
    index: int
    users: frozenset[str]        # "*" and plain usernames
    groups: frozenset[str]
    clients: tuple[str, ...] | None
    filters: tuple[tuple[str, ...], ...]
    substituted: bool            # a filter uses %u or %c
    actions: frozenset[str]
    allow: bool

    def applies(self, username: str | None, client_id: str, member_of: frozenset[str]) -> bool:
        if "*" not in self.users and (username is None or username not in self.users) \
                and not (self.groups & member_of):
            return False
        if self.clients is not None:
            return any(c == "*" or c == client_id or (c.endswith("*")
                                                      and client_id.startswith(c[:-1]))
                       for c in self.clients)
        return True

    def filters_for(self, username: str | None, client_id: str) -> list[tuple[str, ...]]:
        if not self.substituted:
            return list(self.filters)
        out = []
        for levels in self.filters:
            new = []
            for level in levels:
                if "%u" in level:
                    if not _safe_name(username):
                        break
                    level = level.replace("%u", username)  # type: ignore[arg-type]
                if "%c" in level:
                    if not _safe_name(client_id):
                        break
                    level = level.replace("%c", client_id)
                new.append(level)
            else:
                out.append(tuple(new))
        return out


class Acl:
    """The rules of one ACL file. `check` answers from a bounded cache after the first time."""

    def __init__(self, rules: list[Rule], groups: dict[str, frozenset[str]],
                 source: str = "<acl>") -> None:
        self.rules = rules
        self.source = source
        self._member_of: dict[str, frozenset[str]] = {}
        for group, members in groups.items():
            for user in members:
                self._member_of[user] = self._member_of.get(user, frozenset()) | {group}
        self._cache: dict[tuple[str | None, str, str, str], bool] = {}

    def check(self, username: str | None, client_id: str, topic: str, action: str) -> bool:
        key = (username, client_id, topic, action)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        result = self._decide(username, client_id, topic, action)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = result
        return result

    def _decide(self, username: str | None, client_id: str, topic: str, action: str) -> bool:
        member_of = self._member_of.get(username, frozenset()) if username else frozenset()
        subscribe = action == "subscribe"
        levels = topic.split("/")
        for rule in self.rules:
            if action not in rule.actions or not rule.applies(username, client_id, member_of):
                continue
            for pattern in rule.filters_for(username, client_id):
                if not subscribe:
                    if topic_matches(pattern, topic):
                        return rule.allow
                elif rule.allow:
                    if covers(pattern, levels):
                        return True
                elif overlaps(pattern, levels):
                    return False
        return False


def _strings(where: str, key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v
                                                           for v in value):
        raise AclError(f"{where}: {key}: expected a list of non-empty strings, got {value!r}")
    return value


RULE_KEYS = ("users", "clients", "topics", "actions", "permission")


def parse_acl(data: dict[str, Any], where: str) -> Acl:
    for key in data:
        if key not in ("rules", "groups"):
            raise AclError(f"{where}: unknown key '{key}' (expected 'rules' or 'groups')")
    raw_groups = data.get("groups", {})
    if not isinstance(raw_groups, dict):
        raise AclError(f"{where}: groups: expected a table of group = [users]")
    groups = {name: frozenset(_strings(where, f"groups.{name}", members))
              for name, members in raw_groups.items()}
    raw_rules = data.get("rules", [])
    if not isinstance(raw_rules, list):
        raise AclError(f"{where}: rules: expected [[rules]] tables")
    rules = []
    for i, raw in enumerate(raw_rules):
        at = f"rules[{i}]"
        if not isinstance(raw, dict):
            raise AclError(f"{where}: {at}: expected a table")
        for key in raw:
            if key not in RULE_KEYS:
                raise AclError(f"{where}: unknown key '{at}.{key}' (expected one of: "
                               f"{', '.join(RULE_KEYS)})")
        for key in ("users", "topics", "actions", "permission"):
            if key not in raw:
                raise AclError(f"{where}: {at}.{key}: missing")
        users: set[str] = set()
        rule_groups: set[str] = set()
        for user in _strings(where, f"{at}.users", raw["users"]):
            if user.startswith("group:"):
                name = user[len("group:"):]
                if name not in groups:
                    raise AclError(f"{where}: {at}.users: group {name!r} is not defined in "
                                   "[groups]")
                rule_groups.add(name)
            else:
                users.add(user)
        clients = tuple(_strings(where, f"{at}.clients", raw["clients"])) \
            if "clients" in raw else None
        topics = _strings(where, f"{at}.topics", raw["topics"])
        for topic in topics:
            if topic.startswith("$share/") or not valid_topic_filter(topic):
                raise AclError(f"{where}: {at}.topics: not a valid topic filter: {topic!r}")
        actions = _strings(where, f"{at}.actions", raw["actions"])
        for action in actions:
            if action not in ACTIONS:
                raise AclError(f"{where}: {at}.actions: expected 'publish', 'subscribe' or "
                               f"'read', got {action!r}")
        permission = raw["permission"]
        if permission not in ("allow", "deny"):
            raise AclError(f"{where}: {at}.permission: expected 'allow' or 'deny', got "
                           f"{permission!r}")
        rules.append(Rule(i, frozenset(users), frozenset(rule_groups), clients,
                          tuple(tuple(t.split("/")) for t in topics),
                          any("%u" in t or "%c" in t for t in topics),
                          frozenset(actions), permission == "allow"))
    return Acl(rules, groups, where)


def load_acl(path: str | os.PathLike) -> Acl:
    where = os.fspath(path)
    try:
        with open(where, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise AclError(f"{where}: ACL file not found") from None
    except OSError as exc:
        raise AclError(f"{where}: cannot read the ACL file: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise AclError(f"{where}: not valid TOML: {exc}") from None
    return parse_acl(data, where)
