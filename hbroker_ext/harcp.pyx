# cython: language_level=3
"""HARCP v1 frame codec (docs/harcp.md §1, §2, §4, §5 step 1).

Pure computation: `encode` builds the bytes a signer signs (fixed header, payload length,
payload); `decode` checks a frame's structure and returns a `Frame` whose payload and signed
bytes are zero-copy views of the input. Structural faults raise `HarcpError` with the code and
name of §4; nothing else escapes, whatever the bytes. Signatures and payloads are checked by
`hbroker.control.harcp`, which knows the keys.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

from hbroker_ext.codec cimport varint_size, write_varint

# -- layout (§1) --------------------------------------------------------------------------
VERSION = 1
HEADER_SIZE = 39
SIGNATURE_SIZE = 64
OPERATION_ID_SIZE = 16
KEY_ID_SIZE = 8
FLAG_SIGNED = 0x01
RESERVED_FLAGS = 0xFE
DEFAULT_MAX_PAYLOAD = 4096
MAX_PAYLOAD_LENGTH = 268_435_455  # the largest 4-byte variable byte integer

DEF C_HEADER_SIZE = 39
DEF C_SIGNATURE_SIZE = 64
DEF C_VARINT_MAX_BYTES = 4

# -- message types (§2) -------------------------------------------------------------------
EXECUTE = 1
ACK = 2
STATUS = 3
CAPABILITY_QUERY = 4
CAPABILITY_RESPONSE = 5
ERROR = 6
TYPE_NAMES = {EXECUTE: "execute", ACK: "ack", STATUS: "status",
              CAPABILITY_QUERY: "capability_query", CAPABILITY_RESPONSE: "capability_response",
              ERROR: "error"}
TYPES = {name: value for value, name in TYPE_NAMES.items()}

# -- error codes (§4) ---------------------------------------------------------------------
MALFORMED = 1
TRUNCATED = 2
TRAILING_BYTES = 3
UNSUPPORTED_VERSION = 4
UNKNOWN_TYPE = 5
RESERVED_FLAG = 6
OVERSIZE = 7
UNSIGNED_REFUSED = 8
UNKNOWN_KEY = 9
BAD_SIGNATURE = 10
BAD_PAYLOAD = 11
STALE = 12
REPLAYED = 13
SEQUENCE = 14
WRONG_TARGET = 15
UNKNOWN_OP = 16
UNEXPECTED_TYPE = 17
ERROR_NAMES = {
    MALFORMED: "malformed", TRUNCATED: "truncated", TRAILING_BYTES: "trailing_bytes",
    UNSUPPORTED_VERSION: "unsupported_version", UNKNOWN_TYPE: "unknown_type",
    RESERVED_FLAG: "reserved_flag", OVERSIZE: "oversize", UNSIGNED_REFUSED: "unsigned_refused",
    UNKNOWN_KEY: "unknown_key", BAD_SIGNATURE: "bad_signature", BAD_PAYLOAD: "bad_payload",
    STALE: "stale", REPLAYED: "replayed", SEQUENCE: "sequence", WRONG_TARGET: "wrong_target",
    UNKNOWN_OP: "unknown_op", UNEXPECTED_TYPE: "unexpected_type",
}
ERROR_CODES = {name: code for code, name in ERROR_NAMES.items()}


class HarcpError(Exception):
    """A refused frame: `code` and `name` from docs/harcp.md §4, a `detail` for the log, and
    the `frame` when its structure was readable (checks 2 onwards), so that the receiver can
    answer with an `error` frame carrying its operation id."""

    def __init__(self, code, detail="", frame=None):
        self.code = code
        self.name = ERROR_NAMES[code]
        self.detail = detail
        self.frame = frame
        super().__init__(f"{self.name}: {detail}" if detail else self.name)

    def __reduce__(self):
        return (HarcpError, (self.code, self.detail))


cdef class Frame:
    """A structurally valid frame. `payload`, `signed_bytes` and `signature` are memoryviews
    of the decoded buffer (no copy); `signature` is None when the frame is unsigned."""

    cdef readonly int version
    cdef readonly int type
    cdef readonly int flags
    cdef readonly bytes operation_id
    cdef readonly uint64_t timestamp
    cdef readonly uint32_t sequence
    cdef readonly bytes key_id
    cdef readonly object payload
    cdef readonly object signed_bytes
    cdef readonly object signature
    cdef readonly Py_ssize_t signed_length

    @property
    def signed(self):
        return bool(self.flags & 0x01)

    @property
    def type_name(self):
        return TYPE_NAMES[self.type]

    def __repr__(self):
        return (f"Frame({TYPE_NAMES.get(self.type, self.type)}, flags={self.flags:#04x}, "
                f"operation_id={self.operation_id.hex()}, timestamp={self.timestamp}, "
                f"sequence={self.sequence}, key_id={self.key_id.hex()}, "
                f"payload={len(self.payload)} bytes)")


def encode(int type, int flags, operation_id, uint64_t timestamp, uint32_t sequence,
           key_id, payload, int version=1):
    """The bytes a signer signs: the 39-byte header, the payload length as a minimal variable
    byte integer, the payload. A signed frame is these bytes followed by the signature.

    Any byte value is accepted for `version`, `type` and `flags` (tests build refused frames
    with them); sizes that the layout cannot hold raise ValueError."""
    cdef const uint8_t[::1] op = operation_id
    cdef const uint8_t[::1] kid = key_id
    cdef const uint8_t[::1] body = payload
    cdef Py_ssize_t n = body.shape[0]
    cdef Py_ssize_t pos
    cdef int i
    if op.shape[0] != 16:
        raise ValueError(f"operation_id must be 16 bytes, not {op.shape[0]}")
    if kid.shape[0] != 8:
        raise ValueError(f"key_id must be 8 bytes, not {kid.shape[0]}")
    if not (0 <= version <= 255 and 0 <= type <= 255 and 0 <= flags <= 255):
        raise ValueError("version, type and flags are single bytes")
    if n > MAX_PAYLOAD_LENGTH:
        raise ValueError(f"payload of {n} bytes exceeds {MAX_PAYLOAD_LENGTH}")
    out = PyBytes_FromStringAndSize(NULL, C_HEADER_SIZE + varint_size(n) + n)
    cdef uint8_t *p = <uint8_t *>PyBytes_AS_STRING(out)
    p[0] = <uint8_t>version
    p[1] = <uint8_t>type
    p[2] = <uint8_t>flags
    memcpy(p + 3, &op[0], 16)
    for i in range(8):
        p[19 + i] = <uint8_t>(timestamp >> (56 - 8 * i))
    for i in range(4):
        p[27 + i] = <uint8_t>(sequence >> (24 - 8 * i))
    memcpy(p + 31, &kid[0], 8)
    pos = C_HEADER_SIZE + write_varint(p + C_HEADER_SIZE, n)
    if body.shape[0]:
        memcpy(p + pos, &body[0], body.shape[0])
    return out


def decode(buf, Py_ssize_t max_payload=4096):
    """Check the structure of one frame (§5 step 1, in its order) and return it as a `Frame`.

    `buf`: bytes, bytearray or memoryview holding exactly one frame. Raises `HarcpError`
    (truncated, unsupported_version, unknown_type, reserved_flag, malformed, oversize,
    trailing_bytes)."""
    cdef const uint8_t[::1] data = buf
    cdef Py_ssize_t n = data.shape[0]
    cdef Py_ssize_t pos
    cdef Py_ssize_t length = 0
    cdef Py_ssize_t expected
    cdef uint8_t byte
    cdef int i
    cdef int done = 0
    cdef uint64_t timestamp = 0
    cdef uint32_t sequence = 0
    if n < C_HEADER_SIZE:
        raise HarcpError(TRUNCATED, f"{n} bytes, the header has 39")
    if data[0] != 1:
        raise HarcpError(UNSUPPORTED_VERSION, f"version {data[0]}")
    if data[1] < 1 or data[1] > 6:
        raise HarcpError(UNKNOWN_TYPE, f"type {data[1]}")
    if data[2] & 0xFE:
        raise HarcpError(RESERVED_FLAG, f"flags {data[2]:#04x}")
    if not data[2] & 0x01:
        for i in range(31, 39):
            if data[i]:
                # An unsigned frame names no key: otherwise unsigned frames could advance a
                # real key's sequence (§1).
                raise HarcpError(MALFORMED, "an unsigned frame with a non-zero key id")
    pos = C_HEADER_SIZE
    for i in range(C_VARINT_MAX_BYTES):
        if pos >= n:
            raise HarcpError(TRUNCATED, "the payload length is cut short")
        byte = data[pos]
        pos += 1
        length |= <Py_ssize_t>(byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            done = 1
            break
    if not done:
        raise HarcpError(MALFORMED, "payload length longer than 4 bytes")
    if length > max_payload:
        raise HarcpError(OVERSIZE, f"payload length {length} above the maximum {max_payload}")
    expected = pos + length + (C_SIGNATURE_SIZE if data[2] & 0x01 else 0)
    if n < expected:
        raise HarcpError(TRUNCATED, f"{n} bytes, the frame announces {expected}")
    if n > expected:
        raise HarcpError(TRAILING_BYTES, f"{n - expected} bytes after the frame")
    for i in range(8):
        timestamp = (timestamp << 8) | data[19 + i]
    for i in range(4):
        sequence = (sequence << 8) | data[27 + i]
    cdef Frame frame = Frame.__new__(Frame)
    frame.version = data[0]
    frame.type = data[1]
    frame.flags = data[2]
    frame.operation_id = PyBytes_FromStringAndSize(<const char *>&data[3], 16)
    frame.timestamp = timestamp
    frame.sequence = sequence
    frame.key_id = PyBytes_FromStringAndSize(<const char *>&data[31], 8)
    view = memoryview(buf)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    frame.signed_length = pos + length
    frame.payload = view[pos:pos + length]
    frame.signed_bytes = view[:pos + length]
    frame.signature = view[pos + length:] if data[2] & 0x01 else None
    return frame
