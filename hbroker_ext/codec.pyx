# cython: language_level=3
"""MQTT 3.1, 3.1.1 and 5.0 packet codec: incremental framer, decoders, encoders.

Pure computation: bytes in, packet objects out, and back. Malformed input raises `MQTTError`
with the MQTT 5.0 reason code that fits; nothing else escapes, whatever the bytes.
See docs/architecture.md, "The codec seam".
"""

from cpython.bytearray cimport (
    PyByteArray_AS_STRING,
    PyByteArray_FromStringAndSize,
    PyByteArray_GET_SIZE,
    PyByteArray_Resize,
)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Copy
from libc.stdint cimport uint64_t
from libc.string cimport memchr, memcmp, memcpy


cdef extern from "Python.h":
    # CPython's string layout: a compact ASCII string's characters are its UTF-8 bytes.
    bint PyUnicode_IS_COMPACT_ASCII(object s)
    void* PyUnicode_DATA(object s)
    Py_ssize_t PyUnicode_GET_LENGTH(object s)
    str PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)

# -- packet types -----------------------------------------------------------------------
CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14
AUTH = 15

# The same as C constants for the compiled code below (a module global is a dict lookup and a
# Python integer comparison each time).
DEF C_CONNECT = 1
DEF C_CONNACK = 2
DEF C_PUBLISH = 3
DEF C_PUBACK = 4
DEF C_PUBREC = 5
DEF C_PUBREL = 6
DEF C_PUBCOMP = 7
DEF C_SUBSCRIBE = 8
DEF C_SUBACK = 9
DEF C_UNSUBSCRIBE = 10
DEF C_UNSUBACK = 11
DEF C_PINGREQ = 12
DEF C_PINGRESP = 13
DEF C_DISCONNECT = 14
DEF C_AUTH = 15
DEF C_TOPIC_ALIAS = 0x23

# -- MQTT 5.0 property identifiers (section 2.2.2.2) -----------------------------------
PAYLOAD_FORMAT_INDICATOR = 0x01
MESSAGE_EXPIRY_INTERVAL = 0x02
CONTENT_TYPE = 0x03
RESPONSE_TOPIC = 0x08
CORRELATION_DATA = 0x09
SUBSCRIPTION_IDENTIFIER = 0x0B
SESSION_EXPIRY_INTERVAL = 0x11
ASSIGNED_CLIENT_IDENTIFIER = 0x12
SERVER_KEEP_ALIVE = 0x13
AUTHENTICATION_METHOD = 0x15
AUTHENTICATION_DATA = 0x16
REQUEST_PROBLEM_INFORMATION = 0x17
WILL_DELAY_INTERVAL = 0x18
REQUEST_RESPONSE_INFORMATION = 0x19
RESPONSE_INFORMATION = 0x1A
SERVER_REFERENCE = 0x1C
REASON_STRING = 0x1F
RECEIVE_MAXIMUM = 0x21
TOPIC_ALIAS_MAXIMUM = 0x22
TOPIC_ALIAS = 0x23
MAXIMUM_QOS = 0x24
RETAIN_AVAILABLE = 0x25
USER_PROPERTY = 0x26
MAXIMUM_PACKET_SIZE = 0x27
WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
SHARED_SUBSCRIPTION_AVAILABLE = 0x2A

# Reason codes the codec raises.
DEF RC_MALFORMED = 0x81
DEF RC_PROTOCOL = 0x82
DEF RC_UNSUPPORTED_VERSION = 0x84
DEF RC_TOPIC_NAME_INVALID = 0x90
DEF RC_PACKET_TOO_LARGE = 0x95

# Property value types.
DEF T_BYTE = 1
DEF T_U16 = 2
DEF T_U32 = 3
DEF T_VARINT = 4
DEF T_STR = 5
DEF T_BIN = 6
DEF T_PAIR = 7

# "Packet type" 0 stands for the will properties inside CONNECT.
DEF WILL_PROPS = 0

cdef int _PROP_TYPE[64]
cdef unsigned int _PROP_ALLOWED[64]  # bit n set: allowed in packet type n (bit 0: will)
cdef bint _PROP_BOOLEAN[64]  # value must be 0 or 1
cdef bint _PROP_NONZERO[64]  # value 0 is a protocol error

PROPERTY_NAMES = {}
cdef tuple _PROP_NAME = ()  # PROPERTY_NAMES by identifier, 64 entries ("" for unknown ones)


def _prop(int pid, str name, int ptype, tuple packets, bint boolean=False,
                bint nonzero=False):
    cdef unsigned int mask = 0
    cdef int t
    for t in packets:
        mask |= (1u << t)
    _PROP_TYPE[pid] = ptype
    _PROP_ALLOWED[pid] = mask
    _PROP_BOOLEAN[pid] = boolean
    _PROP_NONZERO[pid] = nonzero
    PROPERTY_NAMES[pid] = name


cdef void _init_props():
    cdef int i
    for i in range(64):
        _PROP_TYPE[i] = 0
        _PROP_ALLOWED[i] = 0
        _PROP_BOOLEAN[i] = False
        _PROP_NONZERO[i] = False
    _prop(0x01, "Payload Format Indicator", T_BYTE, (3, 0), boolean=True)
    _prop(0x02, "Message Expiry Interval", T_U32, (3, 0))
    _prop(0x03, "Content Type", T_STR, (3, 0))
    _prop(0x08, "Response Topic", T_STR, (3, 0))
    _prop(0x09, "Correlation Data", T_BIN, (3, 0))
    _prop(0x0B, "Subscription Identifier", T_VARINT, (3, 8), nonzero=True)
    _prop(0x11, "Session Expiry Interval", T_U32, (1, 2, 14))
    _prop(0x12, "Assigned Client Identifier", T_STR, (2,))
    _prop(0x13, "Server Keep Alive", T_U16, (2,))
    _prop(0x15, "Authentication Method", T_STR, (1, 2, 15))
    _prop(0x16, "Authentication Data", T_BIN, (1, 2, 15))
    _prop(0x17, "Request Problem Information", T_BYTE, (1,), boolean=True)
    _prop(0x18, "Will Delay Interval", T_U32, (0,))
    _prop(0x19, "Request Response Information", T_BYTE, (1,), boolean=True)
    _prop(0x1A, "Response Information", T_STR, (2,))
    _prop(0x1C, "Server Reference", T_STR, (2, 14))
    _prop(0x1F, "Reason String", T_STR, (2, 4, 5, 6, 7, 9, 11, 14, 15))
    _prop(0x21, "Receive Maximum", T_U16, (1, 2), nonzero=True)
    _prop(0x22, "Topic Alias Maximum", T_U16, (1, 2))
    _prop(0x23, "Topic Alias", T_U16, (3,), nonzero=True)
    _prop(0x24, "Maximum QoS", T_BYTE, (2,), boolean=True)
    _prop(0x25, "Retain Available", T_BYTE, (2,), boolean=True)
    _prop(0x26, "User Property", T_PAIR, (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 14, 15))
    _prop(0x27, "Maximum Packet Size", T_U32, (1, 2), nonzero=True)
    _prop(0x28, "Wildcard Subscription Available", T_BYTE, (2,), boolean=True)
    _prop(0x29, "Subscription Identifier Available", T_BYTE, (2,), boolean=True)
    _prop(0x2A, "Shared Subscription Available", T_BYTE, (2,), boolean=True)
    global _PROP_NAME
    _PROP_NAME = tuple(PROPERTY_NAMES.get(i, "") for i in range(64))


_init_props()


class MQTTError(Exception):
    """Bad input: `reason_code` is the MQTT 5.0 reason code that fits; `packets` holds the
    packets the framer decoded before the bad one."""

    def __init__(self, int reason_code, str message, packets=None):
        super().__init__(message)
        self.reason_code = reason_code
        self.packets = packets if packets is not None else []

    def __reduce__(self):
        return (MQTTError, (self.reason_code, str(self), self.packets))


cdef inline _fail(int code, str message):
    raise MQTTError(code, message)


# == packets ===============================================================================

cdef _props_eq(a, b):
    return (a or None) == (b or None)


cdef class Packet:
    """Base of every packet class: equality and repr by the fields listed in `_fields`."""

    _fields = ()

    def __eq__(self, other):
        if type(self) is not type(other):
            return NotImplemented
        for name in self._fields:
            a = getattr(self, name)
            b = getattr(other, name)
            if name == "properties":
                if not _props_eq(a, b):
                    return False
            elif a != b:
                return False
        return True

    def __ne__(self, other):
        result = self.__eq__(other)
        if result is NotImplemented:
            return result
        return not result

    __hash__ = None

    def __repr__(self):
        parts = []
        for name in self._fields:
            value = getattr(self, name)
            if isinstance(value, bytes) and len(value) > 64:
                value = value[:64] + b"..."
            parts.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


cdef class Will(Packet):
    cdef public str topic
    cdef public bytes payload
    cdef public int qos
    cdef public bint retain
    cdef public object properties
    _fields = ("topic", "payload", "qos", "retain", "properties")

    def __init__(self, topic, payload=b"", qos=0, retain=False, properties=None):
        self.topic = topic
        self.payload = bytes(payload)
        self.qos = qos
        self.retain = retain
        self.properties = properties


cdef class Connect(Packet):
    cdef public str client_id
    cdef public int protocol_version
    cdef public str protocol_name
    cdef public bint clean_start
    cdef public int keepalive
    cdef public object username
    cdef public object password
    cdef public object will
    cdef public object properties
    packet_type = CONNECT
    _fields = ("client_id", "protocol_version", "protocol_name", "clean_start", "keepalive",
               "username", "password", "will", "properties")

    def __init__(self, client_id="", protocol_version=4, protocol_name="MQTT", clean_start=True,
                 keepalive=60, username=None, password=None, will=None, properties=None):
        self.client_id = client_id
        self.protocol_version = protocol_version
        self.protocol_name = protocol_name
        self.clean_start = clean_start
        self.keepalive = keepalive
        self.username = username
        self.password = password
        self.will = will
        self.properties = properties


cdef class Connack(Packet):
    cdef public bint session_present
    cdef public int reason_code
    cdef public object properties
    packet_type = CONNACK
    _fields = ("session_present", "reason_code", "properties")

    def __init__(self, session_present=False, reason_code=0, properties=None):
        self.session_present = session_present
        self.reason_code = reason_code
        self.properties = properties


cdef class Publish(Packet):
    # fields declared in codec.pxd: topic, payload, qos, retain, dup, packet_id, properties
    packet_type = PUBLISH
    _fields = ("topic", "payload", "qos", "retain", "dup", "packet_id", "properties")

    def __init__(self, topic, payload=b"", qos=0, retain=False, dup=False, packet_id=0,
                 properties=None):
        self.topic = topic
        self.payload = bytes(payload)
        self.qos = qos
        self.retain = retain
        self.dup = dup
        self.packet_id = packet_id
        self.properties = properties


cdef class _PacketIdAck(Packet):
    # fields declared in codec.pxd: packet_id, reason_code, properties
    _fields = ("packet_id", "reason_code", "properties")

    def __init__(self, packet_id, reason_code=0, properties=None):
        self.packet_id = packet_id
        self.reason_code = reason_code
        self.properties = properties


cdef class Puback(_PacketIdAck):
    packet_type = PUBACK


cdef class Pubrec(_PacketIdAck):
    packet_type = PUBREC


cdef class Pubrel(_PacketIdAck):
    packet_type = PUBREL


cdef class Pubcomp(_PacketIdAck):
    packet_type = PUBCOMP


cdef class Subscription(Packet):
    cdef public str topic_filter
    cdef public int qos
    cdef public bint no_local
    cdef public bint retain_as_published
    cdef public int retain_handling
    _fields = ("topic_filter", "qos", "no_local", "retain_as_published", "retain_handling")

    def __init__(self, topic_filter, qos=0, no_local=False, retain_as_published=False,
                 retain_handling=0):
        self.topic_filter = topic_filter
        self.qos = qos
        self.no_local = no_local
        self.retain_as_published = retain_as_published
        self.retain_handling = retain_handling


cdef class Subscribe(Packet):
    cdef public int packet_id
    cdef public list subscriptions
    cdef public object properties
    packet_type = SUBSCRIBE
    _fields = ("packet_id", "subscriptions", "properties")

    def __init__(self, packet_id, subscriptions, properties=None):
        self.packet_id = packet_id
        self.subscriptions = list(subscriptions)
        self.properties = properties


cdef class Suback(Packet):
    cdef public int packet_id
    cdef public list reason_codes
    cdef public object properties
    packet_type = SUBACK
    _fields = ("packet_id", "reason_codes", "properties")

    def __init__(self, packet_id, reason_codes, properties=None):
        self.packet_id = packet_id
        self.reason_codes = list(reason_codes)
        self.properties = properties


cdef class Unsubscribe(Packet):
    cdef public int packet_id
    cdef public list topic_filters
    cdef public object properties
    packet_type = UNSUBSCRIBE
    _fields = ("packet_id", "topic_filters", "properties")

    def __init__(self, packet_id, topic_filters, properties=None):
        self.packet_id = packet_id
        self.topic_filters = list(topic_filters)
        self.properties = properties


cdef class Unsuback(Packet):
    cdef public int packet_id
    cdef public object reason_codes
    cdef public object properties
    packet_type = UNSUBACK
    _fields = ("packet_id", "reason_codes", "properties")

    def __init__(self, packet_id, reason_codes=None, properties=None):
        self.packet_id = packet_id
        self.reason_codes = list(reason_codes) if reason_codes is not None else None
        self.properties = properties


cdef class Pingreq(Packet):
    packet_type = PINGREQ


cdef class Pingresp(Packet):
    packet_type = PINGRESP


cdef class Disconnect(Packet):
    cdef public int reason_code
    cdef public object properties
    packet_type = DISCONNECT
    _fields = ("reason_code", "properties")

    def __init__(self, reason_code=0, properties=None):
        self.reason_code = reason_code
        self.properties = properties


cdef class Auth(Packet):
    cdef public int reason_code
    cdef public object properties
    packet_type = AUTH
    _fields = ("reason_code", "properties")

    def __init__(self, reason_code=0, properties=None):
        self.reason_code = reason_code
        self.properties = properties


# == decoding ==============================================================================

cdef struct Reader:
    const unsigned char* buf
    Py_ssize_t pos
    Py_ssize_t end


cdef inline int _need(Reader* r, Py_ssize_t n, str what) except -1:
    if r.end - r.pos < n:
        _fail(RC_MALFORMED, f"packet too short for {what}")
    return 0


cdef inline int _u8(Reader* r, str what) except -1:
    _need(r, 1, what)
    r.pos += 1
    return r.buf[r.pos - 1]


cdef inline int _u16(Reader* r, str what) except -1:
    _need(r, 2, what)
    r.pos += 2
    return (r.buf[r.pos - 2] << 8) | r.buf[r.pos - 1]


cdef inline long long _u32(Reader* r, str what) except -1:
    _need(r, 4, what)
    r.pos += 4
    return ((<long long>r.buf[r.pos - 4] << 24) | (r.buf[r.pos - 3] << 16)
            | (r.buf[r.pos - 2] << 8) | r.buf[r.pos - 1])


cdef long long _varint_long(Reader* r, str what) except -1:
    """Variable byte integer: at most 4 bytes, minimal encoding [MQTT-1.5.5-1]."""
    cdef long long value = 0
    cdef long long mult = 1
    cdef int count = 0
    cdef unsigned char b
    while True:
        _need(r, 1, what)
        b = r.buf[r.pos]
        r.pos += 1
        count += 1
        value += (b & 0x7F) * mult
        if not (b & 0x80):
            if count > 1 and b == 0:
                _fail(RC_MALFORMED, f"{what}: variable byte integer not minimally encoded")
            return value
        if count == 4:
            _fail(RC_MALFORMED, f"{what}: variable byte integer longer than 4 bytes")
        mult *= 128


cdef inline long long _varint(Reader* r, str what) except -1:
    # One byte (every property identifier, most property lengths) needs no loop and is always
    # minimally encoded.
    if r.pos < r.end and not (r.buf[r.pos] & 0x80):
        r.pos += 1
        return r.buf[r.pos - 1]
    return _varint_long(r, what)


cdef inline bint _ascii_text(const unsigned char* p, Py_ssize_t n):
    """Every byte in 1..127: ASCII without U+0000, eight bytes at a time."""
    cdef uint64_t w
    cdef Py_ssize_t i = 0
    while n - i >= 8:
        memcpy(&w, p + i, 8)
        # A high bit set, or (with no high bit set) a zero byte: (w - 0x01..) borrows into
        # the high bit of exactly the bytes that were 0.
        if (w | ((w - 0x0101010101010101ULL) & ~w)) & 0x8080808080808080ULL:
            return False
        i += 8
    while i < n:
        if p[i] == 0 or p[i] & 0x80:
            return False
        i += 1
    return True


cdef inline str _ascii_copy(const unsigned char* p, Py_ssize_t n):
    """The compact ASCII string of `n` bytes of ASCII text (`_ascii_text`)."""
    cdef str s = PyUnicode_New(n, 127)
    memcpy(PyUnicode_DATA(s), p, n)
    return s


cdef str _utf8(const unsigned char* p, Py_ssize_t n, str what):
    """Well-formed UTF-8 without U+0000 [MQTT-1.5.4-1, MQTT-1.5.4-2]."""
    if n > 1 and _ascii_text(p, n):
        # Most strings are ASCII: valid UTF-8, and copied straight into a compact ASCII string
        # (what the decoder builds, without its second pass over the bytes). Zero and one
        # characters go the decoder's way, which hands out its shared strings for them.
        return _ascii_copy(p, n)
    if n and memchr(p, 0, n) != NULL:
        _fail(RC_MALFORMED, f"{what}: contains U+0000")
    try:
        return (<char*>p)[:n].decode("utf-8")
    except UnicodeDecodeError:
        _fail(RC_MALFORMED, f"{what}: not well-formed UTF-8")


cdef str _str(Reader* r, str what):
    cdef int n = _u16(r, what)
    _need(r, n, what)
    r.pos += n
    return _utf8(r.buf + r.pos - n, n, what)


cdef bytes _bin(Reader* r, str what):
    cdef int n = _u16(r, what)
    _need(r, n, what)
    r.pos += n
    return PyBytes_FromStringAndSize(<const char*>(r.buf + r.pos - n), n)


# Property values of the common types, read in place: the property's name (for the message of
# an error) is only looked up when there is one, by the generic reader the error is left to.

cdef inline long long _prop_uint(Reader* r, int ptype, int pid) except -1:
    """The value of a Byte, Two Byte or Four Byte Integer property."""
    cdef const unsigned char* p = r.buf + r.pos
    if ptype == T_BYTE:
        if r.end - r.pos < 1:
            return _u8(r, _PROP_NAME[pid])
        r.pos += 1
        return p[0]
    if ptype == T_U16:
        if r.end - r.pos < 2:
            return _u16(r, _PROP_NAME[pid])
        r.pos += 2
        return (p[0] << 8) | p[1]
    if r.end - r.pos < 4:
        return _u32(r, _PROP_NAME[pid])
    r.pos += 4
    return (<long long>p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]


cdef str _prop_str(Reader* r, int pid):
    """The value of a UTF-8 Encoded String property."""
    cdef const unsigned char* p = r.buf + r.pos
    cdef Py_ssize_t n
    if r.end - r.pos < 2:
        return _str(r, _PROP_NAME[pid])
    n = (p[0] << 8) | p[1]
    if r.end - r.pos - 2 < n:
        return _str(r, _PROP_NAME[pid])
    r.pos += 2 + n
    return _utf8(p + 2, n, _PROP_NAME[pid])


cdef object _properties(Reader* r, int packet_type, bint* lists=NULL):
    """The property block of a 5.0 packet: None when empty, else a dict by identifier.
    `lists`, when given, is set when a value is a list (User Property, Subscription
    Identifier in a PUBLISH)."""
    cdef long long length = _varint(r, "property length")
    cdef Py_ssize_t end
    cdef Py_ssize_t saved_end = r.end
    cdef int pid
    cdef int ptype
    cdef long long value
    cdef dict props
    cdef unsigned long long seen = 0  # bit n: property n read
    if length == 0:
        return None
    _need(r, length, "properties")
    end = r.pos + length
    r.end = end
    props = {}
    try:
        while r.pos < end:
            pid = <int>_varint(r, "property identifier")
            if pid >= 64 or _PROP_TYPE[pid] == 0 or not (_PROP_ALLOWED[pid] & (1u << packet_type)):
                _fail(RC_MALFORMED, f"property 0x{pid:02x} is not valid in this packet")
            ptype = _PROP_TYPE[pid]
            if ptype == T_PAIR:
                name = _PROP_NAME[pid]
                key = _str(r, name)
                val = _str(r, name)
                if lists != NULL:
                    lists[0] = True
                pairs = props.get(pid)
                if pairs is None:
                    props[pid] = [(key, val)]
                else:
                    pairs.append((key, val))
                continue
            if ptype == T_VARINT and packet_type == C_PUBLISH:
                # Several subscription identifiers may travel in one PUBLISH.
                value = _varint(r, _PROP_NAME[pid])
                if value == 0:
                    _fail(RC_PROTOCOL, f"{_PROP_NAME[pid]} of 0")
                if lists != NULL:
                    lists[0] = True
                ids = props.get(pid)
                if ids is None:
                    props[pid] = [value]
                else:
                    ids.append(value)
                continue
            if seen & (1ull << pid):
                _fail(RC_PROTOCOL, f"{_PROP_NAME[pid]} appears twice")
            seen |= 1ull << pid
            if ptype <= T_U32:  # T_BYTE, T_U16, T_U32
                value = _prop_uint(r, ptype, pid)
            elif ptype == T_VARINT:
                value = _varint(r, _PROP_NAME[pid])
            elif ptype == T_STR:
                props[pid] = _prop_str(r, pid)
                continue
            else:
                props[pid] = _bin(r, _PROP_NAME[pid])
                continue
            if _PROP_BOOLEAN[pid] and value > 1:
                _fail(RC_PROTOCOL, f"{_PROP_NAME[pid]} must be 0 or 1, got {value}")
            if _PROP_NONZERO[pid] and value == 0:
                _fail(RC_PROTOCOL, f"{_PROP_NAME[pid]} of 0")
            props[pid] = value
    finally:
        r.end = saved_end
    return props


DEF PROPS_KEPT = 48  # the size of Framer.last_props_raw


cdef object _publish_properties(Reader* r, Framer framer):
    """`_properties` of a PUBLISH. A client's messages often carry the same properties (a
    content type, an expiry interval): a block with the bytes of the framer's last one, valid
    then and so now, is decoded once more and then no longer: the next ones get copies of that
    dict (its values shared: they are immutable, as blocks with a list value, User Property or
    Subscription Identifier, are not kept). `framer`: None when decoding alone."""
    cdef Py_ssize_t start = r.pos
    cdef long long length
    cdef const unsigned char* block
    cdef bint lists = False
    if framer is None:
        return _properties(r, C_PUBLISH)
    length = _varint(r, "property length")
    block = r.buf + r.pos
    if 0 < length <= PROPS_KEPT and length <= r.end - r.pos:
        if length == framer.last_props_size \
                and memcmp(block, framer.last_props_raw, length) == 0:
            if framer.last_props is not None:
                r.pos += length
                return PyDict_Copy(framer.last_props)
            r.pos = start
            props = _properties(r, C_PUBLISH, &lists)
            if not lists:
                framer.last_props = PyDict_Copy(props)
            return props
        # Only the bytes are kept for now: a memcpy for blocks that change every time.
        memcpy(framer.last_props_raw, block, length)
        framer.last_props_size = length
        framer.last_props = None
    r.pos = start
    return _properties(r, C_PUBLISH)


cdef inline int _packet_id(Reader* r) except -1:
    cdef int pid = _u16(r, "packet identifier")
    if pid == 0:
        _fail(RC_PROTOCOL, "packet identifier 0")
    return pid


cdef inline int _done(Reader* r, str what) except -1:
    if r.pos != r.end:
        _fail(RC_MALFORMED, f"{what}: {r.end - r.pos} unexpected bytes at the end")
    return 0


cdef Connect _decode_connect(Reader* r):
    cdef str name = _str(r, "protocol name")
    cdef int level = _u8(r, "protocol level")
    cdef int flags
    cdef int will_qos
    cdef Connect c
    if not ((name == "MQTT" and (level == 4 or level == 5)) or (name == "MQIsdp" and level == 3)):
        if name != "MQTT" and name != "MQIsdp":
            _fail(RC_UNSUPPORTED_VERSION, f"unknown protocol name {name!r}")
        _fail(RC_UNSUPPORTED_VERSION, f"unsupported protocol level {level} for {name}")
    flags = _u8(r, "connect flags")
    if flags & 0x01:
        _fail(RC_MALFORMED, "reserved connect flag set")  # [MQTT-3.1.2-3]
    will_qos = (flags >> 3) & 0x03
    if not (flags & 0x04) and (will_qos or flags & 0x20):
        _fail(RC_MALFORMED, "will QoS or retain set without a will")  # [MQTT-3.1.2-11, -13, -15]
    if will_qos == 3:
        _fail(RC_MALFORMED, "will QoS 3")  # [MQTT-3.1.2-14]
    if level < 5 and (flags & 0x40) and not (flags & 0x80):
        _fail(RC_MALFORMED, "password flag without user name flag")  # [MQTT-3.1.2-22]
    c = Connect.__new__(Connect)
    c.protocol_name = name
    c.protocol_version = level
    c.clean_start = bool(flags & 0x02)
    c.keepalive = _u16(r, "keep alive")
    c.properties = _properties(r, C_CONNECT) if level == 5 else None
    c.client_id = _str(r, "client identifier")
    c.will = None
    c.username = None
    c.password = None
    if flags & 0x04:
        will_props = _properties(r, WILL_PROPS) if level == 5 else None
        will_topic = _str(r, "will topic")
        c.will = Will(will_topic, _bin(r, "will payload"), will_qos, bool(flags & 0x20),
                      will_props)
    if flags & 0x80:
        c.username = _str(r, "user name")
    if flags & 0x40:
        c.password = _bin(r, "password")
    _done(r, "CONNECT")
    return c


cdef Publish _decode_publish(Reader* r, int flags, int version, Framer framer):
    """`framer`: the connection's framer, whose last topic name is reused when the next PUBLISH
    carries the same bytes (one string object per topic for a run of messages: no decoding,
    and its hash is computed once for every lookup by topic); None when decoding alone."""
    cdef int qos = (flags >> 1) & 0x03
    cdef str last
    cdef int n
    cdef Publish p
    cdef const unsigned char* t
    if qos == 3:
        _fail(RC_MALFORMED, "PUBLISH with QoS 3")  # [MQTT-3.3.1-4]
    if qos == 0 and flags & 0x08:
        _fail(RC_MALFORMED, "PUBLISH QoS 0 with DUP set")  # [MQTT-3.3.1-2]
    n = _u16(r, "topic name")
    _need(r, n, "topic name")
    t = r.buf + r.pos
    r.pos += n
    p = Publish.__new__(Publish)
    last = framer.last_topic if framer is not None else None
    if last is not None and PyUnicode_GET_LENGTH(last) == n \
            and memcmp(PyUnicode_DATA(last), t, n) == 0:
        # The bytes of an ASCII topic accepted before: valid, and the same string.
        p.topic = last
    else:
        if memchr(t, ord("+"), n) != NULL or memchr(t, ord("#"), n) != NULL:
            _fail(RC_TOPIC_NAME_INVALID, "wildcard in PUBLISH topic name")  # [MQTT-3.3.2-2]
        p.topic = _utf8(t, n, "topic name")
        if framer is not None and n and PyUnicode_IS_COMPACT_ASCII(p.topic):
            framer.last_topic = p.topic
    p.qos = qos
    p.retain = flags & 0x01
    p.dup = (flags & 0x08) != 0
    p.packet_id = _packet_id(r) if qos else 0
    p.properties = _publish_properties(r, framer) if version == 5 else None
    if n == 0:
        if version != 5:
            _fail(RC_MALFORMED, "empty topic name")  # [MQTT-4.7.3-1]
        if p.properties is None or C_TOPIC_ALIAS not in p.properties:
            _fail(RC_PROTOCOL, "empty topic name without a topic alias")
    p.payload = PyBytes_FromStringAndSize(<const char*>(r.buf + r.pos), r.end - r.pos)
    r.pos = r.end
    return p


cdef _decode_ack(Reader* r, int ptype, int version):
    cdef _PacketIdAck a
    if ptype == C_PUBACK:
        a = Puback.__new__(Puback)
    elif ptype == C_PUBREC:
        a = Pubrec.__new__(Pubrec)
    elif ptype == C_PUBREL:
        a = Pubrel.__new__(Pubrel)
    else:
        a = Pubcomp.__new__(Pubcomp)
    a.packet_id = _packet_id(r)
    a.reason_code = 0
    a.properties = None
    if version == 5:
        if r.pos < r.end:
            a.reason_code = _u8(r, "reason code")
        if r.pos < r.end:
            a.properties = _properties(r, ptype)
    _done(r, "acknowledgement")
    return a


cdef Subscribe _decode_subscribe(Reader* r, int version):
    cdef int pid = _packet_id(r)
    cdef int opts
    cdef list subs = []
    props = None
    if version == 5:
        props = _properties(r, C_SUBSCRIBE)
    while r.pos < r.end:
        topic_filter = _str(r, "topic filter")
        opts = _u8(r, "subscription options")
        if version == 5:
            if opts & 0xC0:
                _fail(RC_MALFORMED, "reserved subscription option bits set")  # [MQTT-3.8.3-5]
            if (opts >> 4) & 0x03 == 3:
                _fail(RC_PROTOCOL, "retain handling 3")
        elif opts & 0xFC:
            # 3.1.1 [MQTT-3-8.3-4], so spelt by the 3.1.1 specification (5.0's MQTT-3.8.3-4
            # is another statement: No Local on a shared subscription).
            _fail(RC_MALFORMED, "reserved bits in requested QoS")
        if opts & 0x03 == 3:
            # 5.0 (3.8.3.1): "It is a Protocol Error if the Maximum QoS field has the value 3";
            # 3.1.1: malformed [MQTT-3-8.3-4].
            _fail(RC_PROTOCOL if version == 5 else RC_MALFORMED, "subscription with QoS 3")
        subs.append(Subscription(topic_filter, opts & 0x03, bool(opts & 0x04),
                                 bool(opts & 0x08), (opts >> 4) & 0x03))
    if not subs:
        _fail(RC_PROTOCOL, "SUBSCRIBE without a topic filter")  # [MQTT-3.8.3-3]
    return Subscribe(pid, subs, props)


cdef Suback _decode_suback(Reader* r, int version):
    cdef int pid = _packet_id(r)
    props = _properties(r, C_SUBACK) if version == 5 else None
    cdef list codes = []
    cdef int code
    while r.pos < r.end:
        code = _u8(r, "reason code")
        if version != 5 and code not in (0, 1, 2, 0x80):
            _fail(RC_MALFORMED, f"SUBACK return code 0x{code:02x}")
        codes.append(code)
    return Suback(pid, codes, props)


cdef Unsubscribe _decode_unsubscribe(Reader* r, int version):
    cdef int pid = _packet_id(r)
    props = _properties(r, C_UNSUBSCRIBE) if version == 5 else None
    cdef list filters = []
    while r.pos < r.end:
        filters.append(_str(r, "topic filter"))
    if not filters:
        _fail(RC_PROTOCOL, "UNSUBSCRIBE without a topic filter")  # [MQTT-3.10.3-2]
    return Unsubscribe(pid, filters, props)


cdef Unsuback _decode_unsuback(Reader* r, int version):
    cdef int pid = _packet_id(r)
    if version != 5:
        _done(r, "UNSUBACK")
        return Unsuback(pid, None, None)
    props = _properties(r, C_UNSUBACK)
    cdef list codes = []
    while r.pos < r.end:
        codes.append(_u8(r, "reason code"))
    return Unsuback(pid, codes, props)


cdef _decode_body(int first, const unsigned char* buf, Py_ssize_t start, Py_ssize_t end,
                  int version, Framer framer):
    cdef int ptype = first >> 4
    cdef int flags = first & 0x0F
    cdef Reader r
    cdef int code
    r.buf = buf
    r.pos = start
    r.end = end
    if ptype == C_PUBLISH:
        return _decode_publish(&r, flags, version, framer)
    if ptype == C_PUBREL or ptype == C_SUBSCRIBE or ptype == C_UNSUBSCRIBE:
        if flags != 0x02:
            _fail(RC_MALFORMED, f"packet type {ptype} with flags {flags:#x}")  # [MQTT-2.2.2-2]
    elif flags != 0:
        _fail(RC_MALFORMED, f"packet type {ptype} with flags {flags:#x}")
    if ptype == C_CONNECT:
        return _decode_connect(&r)
    if version == 0:
        version = 4
    if C_PUBACK <= ptype <= C_PUBCOMP:
        return _decode_ack(&r, ptype, version)
    if ptype == C_SUBSCRIBE:
        return _decode_subscribe(&r, version)
    if ptype == C_UNSUBSCRIBE:
        return _decode_unsubscribe(&r, version)
    if ptype == C_PINGREQ or ptype == C_PINGRESP:
        _done(&r, "PING")
        return Pingreq() if ptype == C_PINGREQ else Pingresp()
    if ptype == C_CONNACK:
        ack_flags = _u8(&r, "connack flags")
        if ack_flags & 0xFE:
            _fail(RC_MALFORMED, "reserved CONNACK flags set")
        code = _u8(&r, "reason code")
        if version != 5 and code > 5:
            _fail(RC_MALFORMED, f"CONNACK return code {code}")
        props = _properties(&r, C_CONNACK) if version == 5 else None
        _done(&r, "CONNACK")
        return Connack(bool(ack_flags & 1), code, props)
    if ptype == C_SUBACK:
        return _decode_suback(&r, version)
    if ptype == C_UNSUBACK:
        return _decode_unsuback(&r, version)
    if ptype == C_DISCONNECT or ptype == C_AUTH:
        if ptype == C_AUTH and version != 5:
            _fail(RC_MALFORMED, "AUTH does not exist before MQTT 5.0")
        code = 0
        props = None
        if version == 5:
            if r.pos < r.end:
                code = _u8(&r, "reason code")
            if r.pos < r.end:
                props = _properties(&r, ptype)
        _done(&r, "DISCONNECT" if ptype == C_DISCONNECT else "AUTH")
        return Disconnect(code, props) if ptype == C_DISCONNECT else Auth(code, props)
    _fail(RC_MALFORMED, f"packet type {ptype} is reserved")


def decode(data, int protocol_version=4):
    """Decode exactly one whole packet (fixed header included)."""
    if type(data) is bytes:  # read in place, as `Framer.feed` does
        return _decode_whole(<const unsigned char*>PyBytes_AS_STRING(data),
                             PyBytes_GET_SIZE(data), protocol_version)
    return _decode_whole_view(data, protocol_version)


cdef object _decode_whole_view(data, int protocol_version):
    cdef const unsigned char[::1] view = _contiguous(data)
    return _decode_whole(&view[0] if view.shape[0] else NULL, view.shape[0], protocol_version)


cdef object _decode_whole(const unsigned char* buf, Py_ssize_t size, int protocol_version):
    cdef Reader r
    cdef long long length
    if size < 2:
        _fail(RC_MALFORMED, "packet shorter than a fixed header")
    r.buf = buf
    r.pos = 1
    r.end = size
    length = _varint(&r, "remaining length")
    if r.end - r.pos != length:
        _fail(RC_MALFORMED, "remaining length does not match the data")
    return _decode_body(buf[0], r.buf, r.pos, r.end, protocol_version, None)


cdef class Framer:
    """Incremental framer: `feed` returns every complete packet of the buffer at once and keeps
    the incomplete rest.

    A server's framer starts `connecting`: until the connection calls `accept`, `feed` returns
    one packet at a time and then holds what follows it unread (`held`), because what comes
    after a CONNECT (or an AUTH) must wait for its answer: packets a client sends ahead of the
    CONNACK are handled only once the CONNECT is accepted [MQTT-3.1.4-5], and not at all if it
    is refused. Meanwhile `max_packet_size` is the pre-CONNACK limit, and what the client sends
    after its CONNECT shares it with the CONNECT: the limit left after a CONNECT of N bytes is
    `max_packet_size - N`, for each later packet and for the bytes held. `resume` frames the
    next packet (enhanced authentication goes on); `accept` ends the phase with the normal
    limit. Nothing is allocated for a declared remaining length: only bytes that arrived are
    kept."""

    # fields declared in codec.pxd: max_packet_size, protocol_version, connecting, held,
    # pending

    def __init__(self, int max_packet_size=268435455, int protocol_version=0,
                 bint connecting=False):
        self.max_packet_size = max_packet_size
        self.protocol_version = protocol_version
        self.connecting = connecting
        self.held = False
        self.pending = bytearray()

    @property
    def buffered(self):
        return len(self.pending)

    def resume(self):
        """Frame the next packet after the held one (while `connecting`, again one)."""
        self.held = False

    def accept(self, int max_packet_size):
        """The CONNECT was accepted: every packet from now on, up to `max_packet_size`."""
        self.connecting = False
        self.held = False
        self.max_packet_size = max_packet_size

    def discard(self):
        """Drop what is buffered (a refused connection that is closed later)."""
        self.pending = bytearray()

    def check_held(self):
        """MQTTError 0x95 when the bytes held exceed the limit left before the CONNACK (as
        `feed` raises when more arrive)."""
        if self.held:
            self._hold(b"")

    cpdef list feed(self, data):
        cdef object src
        if self.held:
            self._hold(data)
            return []
        if self.pending:
            if type(data) is bytes or type(data) is bytearray:
                self.pending += data
            else:
                self.pending += _contiguous(data)
            src = self.pending
        else:
            src = data
        # bytes (what the event loop hands over) and bytearray (the kept rest) are read in
        # place; anything else with the buffer protocol through a memoryview, in a function of
        # its own (a typed memoryview local costs a hundred instructions a call, even unused).
        if type(src) is bytes:
            return _frames(self, <const unsigned char*>PyBytes_AS_STRING(src),
                           PyBytes_GET_SIZE(src), False)
        if type(src) is bytearray:
            return _frames(self, <const unsigned char*>PyByteArray_AS_STRING(src),
                           PyByteArray_GET_SIZE(src), src is self.pending)
        return _frames_of_view(self, src)

    cdef void _hold(self, data) except *:
        """Keep `data` unread behind the held packet, within `max_packet_size`."""
        if type(data) is bytes or type(data) is bytearray:
            self.pending += data
        else:
            self.pending += _contiguous(data)
        if len(self.pending) > self.max_packet_size:
            _fail(RC_PACKET_TOO_LARGE,
                  f"{len(self.pending)} bytes sent ahead of the CONNACK exceed the "
                  f"{self.max_packet_size} left of the limit before it")


cdef object _contiguous(data):
    """A one-dimensional C-contiguous buffer of bytes with the contents of `data`: `data`
    itself when it is one, else a copy (a strided or multi-dimensional view is read as its
    logical sequence of bytes, not as the memory under it)."""
    mv = memoryview(data)
    if mv.ndim == 1 and mv.c_contiguous and mv.format == "B":
        return mv
    return mv.tobytes()


cdef list _frames_of_view(Framer framer, src):
    """`Framer.feed` of a buffer that is neither bytes nor bytearray (never the kept rest)."""
    cdef const unsigned char[::1] view = _contiguous(src)
    return _frames(framer, &view[0] if view.shape[0] else NULL, view.shape[0], False)


cdef list _frames(Framer framer, const unsigned char* buf, Py_ssize_t end, bint in_pending):
    """The packets of `buf`, the framer's kept rest (`in_pending`) or the caller's buffer; what
    is left of an incomplete packet is kept."""
    cdef Py_ssize_t pos = 0, i, body, total
    cdef long long length, mult
    cdef int count, first
    cdef unsigned char b
    cdef list out = []
    cdef bint incomplete
    if end == 0:
        return out
    try:
        while end - pos >= 2:
            first = buf[pos]
            i = pos + 1
            length = 0
            mult = 1
            count = 0
            incomplete = False
            while True:
                if i >= end:
                    incomplete = True
                    break
                b = buf[i]
                i += 1
                count += 1
                length += (b & 0x7F) * mult
                if not (b & 0x80):
                    if count > 1 and b == 0:
                        _fail(RC_MALFORMED, "remaining length not minimally encoded")
                    break
                if count == 4:
                    _fail(RC_MALFORMED, "remaining length longer than 4 bytes")
                mult *= 128
            if incomplete:
                break
            body = i
            total = (body - pos) + length
            if total > framer.max_packet_size:
                if first >> 4 == 1 and framer.protocol_version == 0:
                    # An oversized CONNECT: its protocol level says whether a CONNACK 0x95
                    # can tell the client (5.0); wait for those few bytes of its body.
                    if end - body < 7:
                        break
                    framer.protocol_version = _connect_level(buf + body)
                # [MQTT-3.1.2-24] checked before the body arrives.
                _fail(RC_PACKET_TOO_LARGE,
                     f"packet of {total} bytes exceeds the maximum of {framer.max_packet_size}")
            if end - pos < total:
                break
            packet = _decode_body(first, buf, body, body + length, framer.protocol_version,
                                  framer)
            if first >> 4 == 1:  # CONNECT
                framer.protocol_version = (<Connect>packet).protocol_version
                if framer.connecting:
                    # What follows the CONNECT before its CONNACK shares its limit.
                    framer.max_packet_size -= total
            out.append(packet)
            pos += total
            if framer.connecting:
                framer.held = True  # the rest waits for the connection's answer
                break
    except MQTTError as exc:
        exc.packets = out
        raise
    if in_pending:
        if pos:
            del framer.pending[:pos]
    elif pos < end:
        framer.pending = PyByteArray_FromStringAndSize(<const char*>(buf + pos), end - pos)
    return out


cdef int _connect_level(const unsigned char* body):
    """The protocol level of a CONNECT from the first 7 bytes of its body (protocol name and
    level), 0 when the name is neither MQTT nor MQIsdp."""
    if body[0] == 0 and body[1] == 4 and body[2] == 77 and body[3] == 81 and body[4] == 84 \
            and body[5] == 84:  # "MQTT"
        return body[6]
    if body[0] == 0 and body[1] == 6 and body[2] == 77 and body[3] == 81:  # "MQ"Isdp
        return 3
    return 0


# == encoding ==============================================================================

cdef int varint_size(Py_ssize_t n) noexcept nogil:
    """The size of `n` as a variable byte integer (MQTT 5.0 section 1.5.5): 1 to 4 bytes for
    what the protocol allows (n < 268,435,456)."""
    if n < 128:
        return 1
    if n < 16384:
        return 2
    if n < 2097152:
        return 3
    cdef int size = 4
    n >>= 28
    while n:  # beyond the protocol's 4 bytes: what write_varint writes all the same
        size += 1
        n >>= 7
    return size


cdef Py_ssize_t write_varint(unsigned char* w, Py_ssize_t n) noexcept nogil:
    """Write `n` at `w` as a variable byte integer, 7 bits a byte, least significant first,
    the high bit set on every byte but the last; returns the bytes written (varint_size).
    The one writer of every encoder: this module's and HARCP's (hbroker_ext/harcp.pyx)."""
    cdef Py_ssize_t i = 0
    while n >= 128:
        w[i] = <unsigned char>((n & 0x7F) | 0x80)
        n >>= 7
        i += 1
    w[i] = <unsigned char>n
    return i + 1


cdef inline void _put_varint(bytearray out, Py_ssize_t n) except *:
    cdef Py_ssize_t size = PyByteArray_GET_SIZE(out)
    PyByteArray_Resize(out, size + varint_size(n))
    write_varint(<unsigned char*>PyByteArray_AS_STRING(out) + size, n)


cdef inline void _put_u16(bytearray out, int n):
    out.append((n >> 8) & 0xFF)
    out.append(n & 0xFF)


cdef inline void _put_u32(bytearray out, long long n):
    out.append((n >> 24) & 0xFF)
    out.append((n >> 16) & 0xFF)
    out.append((n >> 8) & 0xFF)
    out.append(n & 0xFF)


cdef inline void _put_str(bytearray out, str s):
    cdef bytes b = s.encode("utf-8")
    _put_u16(out, len(b))
    out += b


cdef inline void _put_bin(bytearray out, b):
    _put_u16(out, len(b))
    out += b


cdef bytes _NO_PROPERTIES = b"\x00"


cdef bytes _encode_properties(props):
    """The whole property block, length included."""
    cdef bytearray body
    cdef bytearray out
    cdef int pid
    cdef int ptype
    if not props:
        return _NO_PROPERTIES  # most packets: a zero length and nothing else
    body = bytearray()
    for pid, value in props.items():
        if pid < 0 or pid >= 64 or _PROP_TYPE[pid] == 0:
            raise ValueError(f"unknown property identifier {pid}")
        ptype = _PROP_TYPE[pid]
        if ptype == T_PAIR:
            for key, val in value:
                body.append(pid)
                _put_str(body, key)
                _put_str(body, val)
            continue
        if ptype == T_VARINT and isinstance(value, (list, tuple)):
            for v in value:
                body.append(pid)
                _put_varint(body, v)
            continue
        body.append(pid)
        if ptype == T_BYTE:
            body.append(value)
        elif ptype == T_U16:
            _put_u16(body, value)
        elif ptype == T_U32:
            _put_u32(body, value)
        elif ptype == T_VARINT:
            _put_varint(body, value)
        elif ptype == T_STR:
            _put_str(body, value)
        else:
            _put_bin(body, value)
    out = bytearray()
    _put_varint(out, len(body))
    out += body
    return bytes(out)


cdef bytes _frame(int first, bytearray body):
    cdef bytearray out = bytearray()
    out.append(first)
    _put_varint(out, len(body))
    out += body
    return bytes(out)


cdef bytes _encode_connect(Connect c):
    cdef bytearray body = bytearray()
    cdef int flags = 0
    cdef int version = c.protocol_version
    cdef Will will = c.will
    _put_str(body, c.protocol_name)
    body.append(version)
    if c.clean_start:
        flags |= 0x02
    if will is not None:
        flags |= 0x04 | (will.qos << 3)
        if will.retain:
            flags |= 0x20
    if c.password is not None:
        flags |= 0x40
    if c.username is not None:
        flags |= 0x80
    body.append(flags)
    _put_u16(body, c.keepalive)
    if version == 5:
        body += _encode_properties(c.properties)
    _put_str(body, c.client_id)
    if will is not None:
        if version == 5:
            body += _encode_properties(will.properties)
        _put_str(body, will.topic)
        _put_bin(body, will.payload)
    if c.username is not None:
        _put_str(body, c.username)
    if c.password is not None:
        _put_bin(body, c.password)
    return _frame(0x10, body)


cdef bytes _encode_reason_and_props(int first, int code, props, int version,
                                    bytearray body):
    """Tail of the 5.0 packets whose reason code and properties may be left out."""
    if version == 5 and (code or props):
        body.append(code)
        if props:
            body += _encode_properties(props)
    return _frame(first, body)


def encode(packet, int protocol_version):
    """Encode any packet for the given protocol version (3, 4 or 5)."""
    cdef int t = packet.packet_type
    cdef int v = protocol_version
    cdef bytearray body = bytearray()
    if t == C_PUBLISH:
        p = <Publish>packet
        return encode_publish(p.topic, p.payload, p.qos, p.retain, p.dup, p.packet_id,
                              p.properties, v)
    if t == C_CONNECT:
        return _encode_connect(<Connect>packet)
    if t == C_CONNACK:
        body.append(1 if packet.session_present else 0)
        body.append(packet.reason_code)
        if v == 5:
            body += _encode_properties(packet.properties)
        return _frame(0x20, body)
    if C_PUBACK <= t <= C_PUBCOMP:
        _put_u16(body, packet.packet_id)
        return _encode_reason_and_props((t << 4) | (0x02 if t == C_PUBREL else 0),
                                        packet.reason_code, packet.properties, v, body)
    if t == C_SUBSCRIBE:
        _put_u16(body, packet.packet_id)
        if v == 5:
            body += _encode_properties(packet.properties)
        for s in packet.subscriptions:
            _put_str(body, s.topic_filter)
            if v == 5:
                body.append(s.qos | (0x04 if s.no_local else 0)
                            | (0x08 if s.retain_as_published else 0)
                            | (s.retain_handling << 4))
            else:
                body.append(s.qos)
        return _frame(0x82, body)
    if t == C_SUBACK:
        _put_u16(body, packet.packet_id)
        if v == 5:
            body += _encode_properties(packet.properties)
        for code in packet.reason_codes:
            body.append(code)
        return _frame(0x90, body)
    if t == C_UNSUBSCRIBE:
        _put_u16(body, packet.packet_id)
        if v == 5:
            body += _encode_properties(packet.properties)
        for f in packet.topic_filters:
            _put_str(body, f)
        return _frame(0xA2, body)
    if t == C_UNSUBACK:
        _put_u16(body, packet.packet_id)
        if v == 5:
            body += _encode_properties(packet.properties)
            for code in (packet.reason_codes or ()):
                body.append(code)
        return _frame(0xB0, body)
    if t == C_PINGREQ:
        return b"\xc0\x00"
    if t == C_PINGRESP:
        return b"\xd0\x00"
    if t == C_DISCONNECT:
        return _encode_reason_and_props(0xE0, packet.reason_code, packet.properties, v, body)
    if t == C_AUTH:
        return _encode_reason_and_props(0xF0, packet.reason_code, packet.properties, v, body)
    raise ValueError(f"cannot encode packet type {t}")


cpdef bytes encode_ack(int packet_type, int packet_id, int reason_code, int protocol_version):
    """PUBACK, PUBREC, PUBREL or PUBCOMP without properties: the hot-path encoder, equal to
    `encode` of the packet. The reason code travels only in 5.0 and only when it is not 0
    [MQTT-3.4.2.1]; with no properties the Property Length is left out (Remaining Length 3)."""
    cdef char buf[5]
    if packet_type < C_PUBACK or packet_type > C_PUBCOMP:
        raise ValueError(f"not an acknowledgement: packet type {packet_type}")
    if packet_id < 1 or packet_id > 65535:
        raise ValueError(f"packet id {packet_id} out of range")
    buf[0] = <char>((packet_type << 4) | (0x02 if packet_type == C_PUBREL else 0))
    buf[2] = <char>(packet_id >> 8)
    buf[3] = <char>(packet_id & 0xFF)
    if reason_code and protocol_version == 5:
        buf[1] = 3
        buf[4] = <char>reason_code
        return PyBytes_FromStringAndSize(buf, 5)
    buf[1] = 2
    return PyBytes_FromStringAndSize(buf, 4)


cpdef bytes encode_publish(str topic, object payload, int qos, bint retain, bint dup,
                           int packet_id, object properties, int protocol_version):
    """A PUBLISH in one allocation: the hot-path encoder."""
    cdef bytes tb = topic.encode("utf-8")
    cdef bytes pb = _encode_properties(properties) if protocol_version == 5 else b""
    cdef Py_ssize_t tlen = len(tb)
    cdef Py_ssize_t plen
    cdef Py_ssize_t rl
    cdef Py_ssize_t total
    cdef Py_ssize_t n
    cdef bytes out
    cdef char* w
    if not isinstance(payload, bytes):
        payload = bytes(payload)
    plen = len(<bytes>payload)
    rl = 2 + tlen + (2 if qos else 0) + len(pb) + plen
    total = 1 + varint_size(rl) + rl
    out = PyBytes_FromStringAndSize(NULL, total)
    w = PyBytes_AS_STRING(out)
    w[0] = <char>(0x30 | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0))
    n = 1 + write_varint(<unsigned char*>w + 1, rl)
    w[n] = <char>(tlen >> 8)
    w[n + 1] = <char>(tlen & 0xFF)
    n += 2
    memcpy(w + n, PyBytes_AS_STRING(tb), tlen)
    n += tlen
    if qos:
        w[n] = <char>(packet_id >> 8)
        w[n + 1] = <char>(packet_id & 0xFF)
        n += 2
    if len(pb):
        memcpy(w + n, PyBytes_AS_STRING(pb), len(pb))
        n += len(pb)
    if plen:
        memcpy(w + n, PyBytes_AS_STRING(<bytes>payload), plen)
    return out


cpdef bytes set_packet_id(bytes encoded, int packet_id, bint dup):
    """A copy of an encoded QoS 1/2 PUBLISH with another packet id and DUP flag."""
    cdef Py_ssize_t size = len(encoded)
    cdef const unsigned char* src = <const unsigned char*>PyBytes_AS_STRING(encoded)
    cdef Py_ssize_t i = 1
    cdef Py_ssize_t tlen
    cdef bytes out
    cdef char* w
    while i < size and i < 5 and src[i] & 0x80:
        i += 1
    i += 1
    if i + 2 > size or not (src[0] >> 1) & 0x03:
        raise ValueError("not an encoded QoS 1/2 PUBLISH")
    tlen = (src[i] << 8) | src[i + 1]
    i += 2 + tlen
    if i + 2 > size:
        raise ValueError("not an encoded QoS 1/2 PUBLISH")
    out = PyBytes_FromStringAndSize(<const char*>src, size)
    w = PyBytes_AS_STRING(out)
    w[0] = <char>((src[0] & 0xF7) | (0x08 if dup else 0))
    w[i] = <char>(packet_id >> 8)
    w[i + 1] = <char>(packet_id & 0xFF)
    return out
