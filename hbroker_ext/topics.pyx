# cython: language_level=3
"""Topic names, topic filters, the subscription trie and the retained-message trie.

Pure computation: strings in, lists out. See docs/architecture.md, "The topics seam".
"""

import os

cimport cython

from cpython.mem cimport PyMem_Calloc, PyMem_Free
from cpython.object cimport PyObject
from cpython.unicode cimport (
    PyUnicode_1BYTE_DATA,
    PyUnicode_AsUTF8AndSize,
    PyUnicode_GET_LENGTH,
)
from libc.stdint cimport uint64_t
from libc.string cimport memchr, memcmp

SHARE_PREFIX = "$share/"


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


# -- The children index of the subscription trie ----------------------------------------------
#
# `match` runs once per topic the broker has not seen since the subscriptions last changed, so
# its cost is per level of the topic. A dict keyed by level strings would need the topic split
# into new strings, each hashed with SipHash and compared by the dict. Instead every node keeps,
# besides its `children` dict (which owns the nodes and serves subscribe/unsubscribe), an
# open-addressing table of borrowed pointers keyed by the level's UTF-8 bytes: `match` hashes
# slices of the topic's own UTF-8 buffer (for an ASCII str, its character data: no copy), probes,
# and compares bytes. The hash is seeded per process from os.urandom, so which levels collide
# in a table cannot be chosen by a client subscribing to crafted filters.

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    static uint64_t hb_level_seed;
    /* A bijective 64-bit mixer (xorshift-multiply, as in MurmurHash3's finaliser). */
    static inline uint64_t hb_fold(uint64_t h) {
        h ^= h >> 32;
        h *= 0xd6e8feb86659fd93ULL;
        h ^= h >> 32;
        h *= 0xd6e8feb86659fd93ULL;
        h ^= h >> 32;
        return h;
    }
    /* Seeded hash of a level's UTF-8 bytes: 8 bytes at a time, the tail zero-padded. */
    static inline uint64_t hb_level_hash(const char *p, Py_ssize_t n) {
        uint64_t h = hb_level_seed ^ ((uint64_t)n * 0x9e3779b97f4a7c15ULL);
        uint64_t w;
        while (n >= 8) {
            memcpy(&w, p, 8);
            h = hb_fold(h ^ w);
            p += 8;
            n -= 8;
        }
        w = 0;
        memcpy(&w, p, (size_t)n);
        return hb_fold(h ^ w);
    }
    """
    uint64_t hb_level_seed
    uint64_t hb_level_hash(const char* p, Py_ssize_t n) nogil

hb_level_seed = int.from_bytes(os.urandom(8), "little")

ctypedef struct _Slot:
    uint64_t hash
    PyObject* node  # borrowed: `children` owns it; NULL marks an empty slot


cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object o)


cdef inline object _utf8(str s, const char** p, Py_ssize_t* size):
    """Points p at the UTF-8 bytes of `s`: its own character data if ASCII, its cached UTF-8
    otherwise. Lone surrogates (never in a valid topic, [MQTT-1.5.4-1]) are encoded as
    `surrogatepass` does, here and for node keys alike; the bytes returned must then be kept
    alive as long as p is read."""
    cdef bytes b
    if PyUnicode_IS_ASCII(s):
        p[0] = <const char*>PyUnicode_1BYTE_DATA(s)
        size[0] = PyUnicode_GET_LENGTH(s)
        return None
    try:
        p[0] = PyUnicode_AsUTF8AndSize(s, size)
        return None
    except UnicodeEncodeError:
        b = s.encode("utf-8", "surrogatepass")
        p[0] = <const char*>b
        size[0] = len(b)
        return b


@cython.final
cdef class _Node:
    cdef dict children  # level -> _Node: owns the children
    # The "+" and "#" children, also in `children`: matching reads them without a lookup.
    cdef _Node plus
    cdef _Node hash
    cdef dict subs  # client_id -> options
    cdef list items  # subs as (client_id, options) pairs for `match`; None after a change
    cdef dict shared  # group -> _Group
    cdef _Node parent
    cdef str level
    cdef bytes key  # the level as UTF-8
    cdef uint64_t key_hash
    # The index over `children` (see above): mask + 1 slots, a power of two, at most half used.
    cdef _Slot* table
    cdef Py_ssize_t mask
    cdef Py_ssize_t used

    def __cinit__(self, _Node parent, str level):
        cdef Py_ssize_t size
        cdef const char* p
        keep = _utf8(level, &p, &size)
        self.children = {}
        self.subs = None
        self.items = None
        self.shared = None
        self.parent = parent
        self.level = level
        self.key = p[:size]
        self.key_hash = hb_level_hash(p, size)
        self.table = NULL
        self.mask = -1
        self.used = 0

    def __dealloc__(self):
        PyMem_Free(self.table)

    cdef bint empty(self):
        return not self.children and not self.subs and not self.shared

    cdef inline _Node lookup(self, const char* p, Py_ssize_t n):
        """The child for the level p[:n], or None."""
        cdef uint64_t h
        cdef Py_ssize_t i
        cdef _Slot* slot
        cdef _Node child
        if self.used == 0:
            return None
        h = hb_level_hash(p, n)
        i = <Py_ssize_t>(h & <uint64_t>self.mask)
        while True:
            slot = &self.table[i]
            if slot.node == NULL:
                return None
            if slot.hash == h:
                child = <_Node>slot.node
                if len(child.key) == n and memcmp(<const char*>child.key, p, n) == 0:
                    return child
            i = (i + 1) & self.mask

    cdef void _place(self, _Node child):
        cdef Py_ssize_t i = <Py_ssize_t>(child.key_hash & <uint64_t>self.mask)
        while self.table[i].node != NULL:
            i = (i + 1) & self.mask
        self.table[i].hash = child.key_hash
        self.table[i].node = <PyObject*>child

    cdef int _resize(self, Py_ssize_t slots) except -1:
        cdef _Slot* new_table = <_Slot*>PyMem_Calloc(slots, sizeof(_Slot))
        cdef _Slot* old = self.table
        cdef Py_ssize_t i, old_slots = self.mask + 1
        if new_table == NULL:
            raise MemoryError()
        self.table = new_table
        self.mask = slots - 1
        for i in range(old_slots):
            if old[i].node != NULL:
                self._place(<_Node>old[i].node)
        PyMem_Free(old)
        return 0

    cdef int add_child(self, _Node child) except -1:
        cdef Py_ssize_t slots = self.mask + 1
        self.children[child.level] = child
        if 2 * (self.used + 1) > slots:
            self._resize(8 if slots == 0 else 2 * slots)
        self._place(child)
        self.used += 1
        if child.level == "+":
            self.plus = child
        elif child.level == "#":
            self.hash = child
        return 0

    cdef int remove_child(self, _Node child) except -1:
        """Linear probing without tombstones: later entries of the run shift back."""
        cdef Py_ssize_t i = <Py_ssize_t>(child.key_hash & <uint64_t>self.mask)
        cdef Py_ssize_t j, home
        while self.table[i].node != <PyObject*>child:
            i = (i + 1) & self.mask
        self.table[i].node = NULL
        j = i
        while True:
            j = (j + 1) & self.mask
            if self.table[j].node == NULL:
                break
            home = <Py_ssize_t>(self.table[j].hash & <uint64_t>self.mask)
            # Leave the entry where it is if its home lies cyclically in (i, j].
            if (i < home <= j) if i <= j else (i < home or home <= j):
                continue
            self.table[i] = self.table[j]
            self.table[j].node = NULL
            i = j
        self.used -= 1
        if self.plus is child:
            self.plus = None
        elif self.hash is child:
            self.hash = None
        del self.children[child.level]  # last: it may hold the last reference to child
        if self.used == 0:
            PyMem_Free(self.table)
            self.table = NULL
            self.mask = -1
        elif self.mask >= 63 and 8 * self.used <= self.mask + 1:
            self._resize((self.mask + 1) // 4)
        return 0


cdef class _Group:
    cdef str key  # "$share/<group>/<filter>"
    cdef dict members  # client_id -> options, in join order
    cdef tuple entry  # (key, [(client_id, options), ...]) for `match`; None after a change

    def __cinit__(self, str key):
        self.key = key
        self.members = {}
        self.entry = None


cdef class SubscriptionTree:
    """Subscriptions by topic filter: `match` costs the matching paths, not the tree size."""

    cdef _Node root
    cdef readonly long long generation
    cdef Py_ssize_t count

    def __cinit__(self):
        self.root = _Node(None, "")
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
                child = _Node(node, level)
                node.add_child(child)
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
            node.items = None
        else:
            if node.shared is None:
                node.shared = {}
            g = node.shared.get(group)
            if g is None:
                g = _Group(topic_filter)
                node.shared[group] = g
            new = client_id not in g.members
            g.members[client_id] = options  # a re-subscribe keeps its place
            g.entry = None
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
            node.items = None
        else:
            if not node.shared:
                return False
            g = node.shared.get(group)
            if g is None or client_id not in g.members:
                return False
            del g.members[client_id]
            g.entry = None
            if not g.members:
                del node.shared[group]
        self.count -= 1
        self.generation += 1
        self._prune(node)
        return True

    def has_shared_group(self, str topic_filter) -> bool:
        """Whether the shared subscription `$share/<group>/<filter>` has any member."""
        group, inner = parse_shared(topic_filter)
        if group is None:
            return False
        cdef _Node node = self._find(inner, False)
        return node is not None and node.shared is not None and group in node.shared

    cdef void _prune(self, _Node node) except *:
        cdef _Node parent
        while node is not self.root and node.empty():
            parent = node.parent
            parent.remove_child(node)
            node = parent

    def match(self, str topic):
        """(normal, shared) for a topic name; see docs/architecture.md.

        The lists are new, but the pairs and shared entries in them are the trie's own until
        the next change: callers read them and must not modify them.
        """
        cdef list normal = []
        cdef list shared = []
        cdef Py_ssize_t n
        cdef const char* p
        keep = _utf8(topic, &p, &n)
        self._match(self.root, p, 0, n, n > 0 and p[0] == c'$', normal, shared)
        return normal, shared

    cdef void _collect(self, _Node node, list normal, list shared) except *:
        cdef _Group g
        if node.subs:
            if node.items is None:
                node.items = list(node.subs.items())
            normal.extend(node.items)
        if node.shared:
            for g in node.shared.values():
                if g.entry is None:
                    g.entry = (g.key, list(g.members.items()))
                shared.append(g.entry)

    cdef void _match(self, _Node node, const char* p, Py_ssize_t start, Py_ssize_t n,
                     bint dollar, list normal, list shared) except *:
        """Levels are slices of p[:n]; `start` is where the next one begins, n + 1 once the
        last one has been consumed. Exact children are followed in the loop, `+` recursively."""
        cdef const char* slash
        cdef Py_ssize_t end
        while True:
            if start > n:
                self._collect(node, normal, shared)
                # "sport/#" also matches "sport" [MQTT-4.7.1-2].
                if node.hash is not None:
                    self._collect(node.hash, normal, shared)
                return
            slash = <const char*>memchr(p + start, c'/', n - start)
            end = n if slash == NULL else slash - p
            # [MQTT-4.7.2-1] filters starting with a wildcard do not match topics starting with $.
            if not (start == 0 and dollar):
                if node.hash is not None:
                    self._collect(node.hash, normal, shared)
                if node.plus is not None:
                    self._match(node.plus, p, end + 1, n, dollar, normal, shared)
            node = node.lookup(p + start, end - start)
            if node is None:
                return
            start = end + 1

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
