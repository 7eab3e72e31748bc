# cython: language_level=3
"""Topic names, topic filters, the subscription trie and the retained-message trie.

Pure computation: strings in, lists out. See docs/architecture.md, "The topics seam".
"""

from cpython.dict cimport PyDict_Next
from cpython.object cimport PyObject

SHARE_PREFIX = "$share/"


cdef inline void _append_items(list out, dict d) except *:
    """out.extend(d.items()) without the view and its iterator."""
    cdef Py_ssize_t pos = 0
    cdef PyObject* key
    cdef PyObject* value
    while PyDict_Next(d, &pos, &key, &value):
        out.append((<object>key, <object>value))


cdef bint _fits_utf8_string(str s):
    """At most 65535 bytes as UTF-8; a lone surrogate cannot be encoded [MQTT-1.5.4-1]."""
    try:
        return len(s.encode("utf-8")) <= 65535
    except UnicodeEncodeError:
        return False


def valid_topic_name(str name) -> bool:
    """[MQTT-4.7.3-1] at least one character; [MQTT-4.7.1-1] no wildcards; no U+0000."""
    if not name or "+" in name or "#" in name or "\x00" in name:
        return False
    return _fits_utf8_string(name)


def parse_shared(str topic_filter):
    """`$share/<group>/<filter>` -> (group, filter); any other filter -> (None, filter)."""
    if topic_filter.startswith(SHARE_PREFIX):
        rest = topic_filter[7:]
        idx = rest.find("/")
        if idx >= 0:
            return rest[:idx], rest[idx + 1:]
        return rest, ""
    return None, topic_filter


cdef bint _valid_plain_filter(str f):
    cdef list levels
    cdef Py_ssize_t i, n
    cdef str level
    if not f:
        return False
    levels = f.split("/")
    n = len(levels)
    for i in range(n):
        level = levels[i]
        if "#" in level:
            # [MQTT-4.7.1-2] '#' alone, and last.
            if level != "#" or i != n - 1:
                return False
        elif "+" in level and level != "+":
            # [MQTT-4.7.1-3] '+' occupies a whole level.
            return False
    return True


def valid_topic_filter(str topic_filter) -> bool:
    """A filter a client may subscribe to, the shared form included [MQTT-4.8.2-1, -2]."""
    if not topic_filter or "\x00" in topic_filter or not _fits_utf8_string(topic_filter):
        return False
    if topic_filter.startswith(SHARE_PREFIX):
        group, inner = parse_shared(topic_filter)
        if not group or "+" in group or "#" in group or "/" in group:
            return False
        return _valid_plain_filter(inner)
    return _valid_plain_filter(topic_filter)


cdef class _Node:
    cdef dict children
    # The "+" and "#" children, also in `children`: matching reads them without a lookup.
    cdef _Node plus
    cdef _Node hash
    cdef dict subs  # client_id -> options
    cdef dict shared  # group -> _Group
    cdef _Node parent
    cdef str level
    cdef str path  # the filter (without $share) this node stands for

    def __cinit__(self, _Node parent, str level, str path):
        self.children = {}
        self.subs = None
        self.shared = None
        self.parent = parent
        self.level = level
        self.path = path

    cdef bint empty(self):
        return not self.children and not self.subs and not self.shared


cdef class _Group:
    cdef str key  # "$share/<group>/<filter>"
    cdef dict members  # client_id -> options, in join order

    def __cinit__(self, str key):
        self.key = key
        self.members = {}


cdef class SubscriptionTree:
    """Subscriptions by topic filter: `match` costs the matching paths, not the tree size."""

    cdef _Node root
    cdef readonly long long generation
    cdef Py_ssize_t count

    def __cinit__(self):
        self.root = _Node(None, "", "")
        self.generation = 0
        self.count = 0

    def __len__(self):
        return self.count

    cdef _Node _find(self, str inner, bint create):
        cdef _Node node = self.root
        cdef _Node child
        cdef str level
        for level in inner.split("/"):
            child = node.children.get(level)
            if child is None:
                if not create:
                    return None
                child = _Node(node, level,
                              level if node is self.root else node.path + "/" + level)
                node.children[level] = child
                if level == "+":
                    node.plus = child
                elif level == "#":
                    node.hash = child
            node = child
        return node

    def subscribe(self, str topic_filter, client_id, options) -> bool:
        """True if new, False if it replaced this client's subscription to this filter."""
        group, inner = parse_shared(topic_filter)
        cdef _Node node = self._find(inner, True)
        cdef _Group g
        cdef bint new
        if group is None:
            if node.subs is None:
                node.subs = {}
            new = client_id not in node.subs
            node.subs[client_id] = options
        else:
            if node.shared is None:
                node.shared = {}
            g = node.shared.get(group)
            if g is None:
                g = _Group(topic_filter)
                node.shared[group] = g
            new = client_id not in g.members
            g.members[client_id] = options  # a re-subscribe keeps its place
        if new:
            self.count += 1
        self.generation += 1
        return new

    def unsubscribe(self, str topic_filter, client_id) -> bool:
        group, inner = parse_shared(topic_filter)
        cdef _Node node = self._find(inner, False)
        cdef _Group g
        if node is None:
            return False
        if group is None:
            if not node.subs or client_id not in node.subs:
                return False
            del node.subs[client_id]
        else:
            if not node.shared:
                return False
            g = node.shared.get(group)
            if g is None or client_id not in g.members:
                return False
            del g.members[client_id]
            if not g.members:
                del node.shared[group]
        self.count -= 1
        self.generation += 1
        self._prune(node)
        return True

    cdef void _prune(self, _Node node):
        while node is not self.root and node.empty():
            del node.parent.children[node.level]
            if node.parent.plus is node:
                node.parent.plus = None
            elif node.parent.hash is node:
                node.parent.hash = None
            node = node.parent

    def match(self, str topic):
        """(normal, shared) for a topic name; see docs/architecture.md."""
        cdef list normal = []
        cdef list shared = []
        cdef list levels = topic.split("/")
        self._match(self.root, levels, 0, len(levels), topic.startswith("$"), normal, shared)
        return normal, shared

    cdef void _collect(self, _Node node, list normal, list shared) except *:
        cdef _Group g
        if node.subs:
            _append_items(normal, node.subs)
        if node.shared:
            for g in node.shared.values():
                shared.append((g.key, list(g.members.items())))

    cdef void _match(self, _Node node, list levels, Py_ssize_t i, Py_ssize_t n, bint dollar,
                     list normal, list shared) except *:
        cdef _Node child
        if i == n:
            self._collect(node, normal, shared)
            # "sport/#" also matches "sport" [MQTT-4.7.1-2].
            if node.hash is not None:
                self._collect(node.hash, normal, shared)
            return
        # [MQTT-4.7.2-1] filters starting with a wildcard do not match topics starting with $.
        if not (i == 0 and dollar):
            if node.hash is not None:
                self._collect(node.hash, normal, shared)
            if node.plus is not None:
                self._match(node.plus, levels, i + 1, n, dollar, normal, shared)
        child = node.children.get(levels[i])
        if child is not None:
            self._match(child, levels, i + 1, n, dollar, normal, shared)

    def _node_count(self) -> int:
        """Nodes below the root (for tests: unsubscribing everything leaves none)."""
        cdef list stack = [self.root]
        cdef _Node node
        cdef Py_ssize_t total = -1
        while stack:
            node = stack.pop()
            total += 1
            stack.extend(node.children.values())
        return total


cdef class _RNode:
    cdef dict children
    cdef object value
    cdef bint has_value
    cdef _RNode parent
    cdef str level

    def __cinit__(self, _RNode parent, str level):
        self.children = {}
        self.value = None
        self.has_value = False
        self.parent = parent
        self.level = level


cdef class RetainedTree:
    """Retained messages by exact topic; `match(filter)` walks only reachable branches."""

    cdef _RNode root
    cdef Py_ssize_t count

    def __cinit__(self):
        self.root = _RNode(None, "")
        self.count = 0

    def __len__(self):
        return self.count

    def __contains__(self, str topic):
        cdef _RNode node = self._find(topic, False)
        return node is not None and node.has_value

    cdef _RNode _find(self, str topic, bint create):
        cdef _RNode node = self.root
        cdef _RNode child
        cdef str level
        for level in topic.split("/"):
            child = node.children.get(level)
            if child is None:
                if not create:
                    return None
                child = _RNode(node, level)
                node.children[level] = child
            node = child
        return node

    def set(self, str topic, value) -> None:
        cdef _RNode node = self._find(topic, True)
        if not node.has_value:
            self.count += 1
            node.has_value = True
        node.value = value

    def get(self, str topic):
        cdef _RNode node = self._find(topic, False)
        if node is None or not node.has_value:
            return None
        return node.value

    def pop(self, str topic):
        cdef _RNode node = self._find(topic, False)
        if node is None or not node.has_value:
            return None
        value = node.value
        node.value = None
        node.has_value = False
        self.count -= 1
        while node is not self.root and not node.has_value and not node.children:
            del node.parent.children[node.level]
            node = node.parent
        return value

    def values(self) -> list:
        cdef list out = []
        self._collect_all(self.root, out, False)
        return out

    cdef void _collect_all(self, _RNode start, list out, bint skip_dollar_children):
        cdef list stack = [start]
        cdef _RNode node
        cdef _RNode child
        cdef str key
        while stack:
            node = stack.pop()
            if node.has_value:
                out.append(node.value)
            for key, child in node.children.items():
                if skip_dollar_children and node is self.root and key.startswith("$"):
                    continue
                stack.append(child)

    def match(self, str topic_filter) -> list:
        cdef list out = []
        cdef list levels = topic_filter.split("/")
        self._match(self.root, levels, 0, len(levels), out)
        return out

    cdef void _match(self, _RNode node, list levels, Py_ssize_t i, Py_ssize_t n, list out):
        cdef str level
        cdef str key
        cdef _RNode child
        if i == n:
            if node.has_value:
                out.append(node.value)
            return
        level = levels[i]
        if level == "#":
            # The parent level and everything below; at the top, not the $ topics.
            if i == 0:
                self._collect_all(self.root, out, True)
            else:
                self._collect_all(node, out, False)
            return
        if level == "+":
            for key, child in node.children.items():
                if i == 0 and key.startswith("$"):
                    continue
                self._match(child, levels, i + 1, n, out)
            return
        child = node.children.get(level)
        if child is not None:
            self._match(child, levels, i + 1, n, out)
