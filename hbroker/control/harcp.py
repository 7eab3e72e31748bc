"""HARCP v1, the signed device control protocol: payloads, signing, the receiver's checks in
their normative order, and a signer whose sequence survives the process (docs/harcp.md).

The frame structure is `hbroker_ext.harcp` (Cython); keys and key files are
`hbroker.control.keys`. Every refusal is a `HarcpError` with the code and name of §4.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
from hbroker_ext.harcp import (
    ACK,
    BAD_PAYLOAD,
    BAD_SIGNATURE,
    CAPABILITY_QUERY,
    CAPABILITY_RESPONSE,
    DEFAULT_MAX_PAYLOAD,
    ERROR,
    ERROR_CODES,
    ERROR_NAMES,
    EXECUTE,
    FLAG_SIGNED,
    REPLAYED,
    SEQUENCE,
    STALE,
    STATUS,
    TYPE_NAMES,
    TYPES,
    UNEXPECTED_TYPE,
    UNKNOWN_KEY,
    UNSIGNED_REFUSED,
    WRONG_TARGET,
    Frame,
    HarcpError,
    decode,
    encode,
)

from hbroker.control.keys import Key

__all__ = [
    "ACK", "CAPABILITY_QUERY", "CAPABILITY_RESPONSE", "ERROR", "ERROR_CODES", "ERROR_NAMES",
    "EXECUTE", "STATUS", "TYPES", "TYPE_NAMES", "Frame", "HarcpError", "Message", "Receiver",
    "Signer", "SequenceStore", "build_frame", "decode", "encode", "error_answer",
    "pack_payload", "topic_down", "topic_up", "unpack_payload", "validate_payload",
]

log = logging.getLogger(__name__)

DEFAULT_WINDOW_MS = 300_000
DEFAULT_SEEN_CAPACITY = 4096
MAX_DEPTH = 32  # containers nested in the payload, the payload map being level 1
MAX_SEQUENCE = 0xFFFF_FFFF
ZERO_KEY_ID = bytes(8)

# The types a receiver of each role takes (§5 step 9).
ROLE_TYPES = {"device": frozenset({EXECUTE, CAPABILITY_QUERY}),
              "controller": frozenset({ACK, STATUS, CAPABILITY_RESPONSE, ERROR})}
# Types that carry a fresh operation id, checked against and recorded in the seen cache
# (§5 steps 7 and 10); ack, capability_response and error repeat the id they answer.
FRESH_ID_TYPES = frozenset({EXECUTE, CAPABILITY_QUERY, STATUS})
# Types whose refusal the receiver answers with an `error` frame (§5).
ANSWERED_TYPES = frozenset({EXECUTE, CAPABILITY_QUERY})

ACK_STATUSES = frozenset({"accepted", "rejected", "done", "failed"})
HEALTH_VALUES = frozenset({"ok", "degraded", "failed"})
TIERS = frozenset({"signed", "open"})


def topic_down(device_id: str) -> str:
    return f"harcp/v1/{device_id}/down"


def topic_up(device_id: str) -> str:
    return f"harcp/v1/{device_id}/up"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- payloads (§3) ------------------------------------------------------------------------
class _PayloadFault(Exception):
    pass


def _map_pairs(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if type(key) is not str:
            raise _PayloadFault(f"map key {key!r} is not a str")
        if key in out:
            raise _PayloadFault(f"map key {key!r} appears twice")
        out[key] = value
    return out


def _no_ext(code: int, data: bytes) -> Any:
    raise _PayloadFault(f"msgpack ext type {code}")


def _check_depth(value: Any, depth: int) -> None:
    if isinstance(value, dict | list):
        if depth > MAX_DEPTH:
            raise _PayloadFault(f"nested deeper than {MAX_DEPTH} levels")
        for item in value.values() if isinstance(value, dict) else value:
            _check_depth(item, depth + 1)
    elif isinstance(value, msgpack.Timestamp | msgpack.ExtType):
        raise _PayloadFault("msgpack ext type")


def unpack_payload(payload: bytes | memoryview) -> dict[str, Any]:
    """One msgpack map and nothing after it; maps with unique str keys; no ext types; str
    valid UTF-8; at most 32 levels of maps and arrays. Else `bad_payload`."""
    try:
        value = msgpack.unpackb(payload, raw=False, strict_map_key=False, use_list=True,
                                object_pairs_hook=_map_pairs, ext_hook=_no_ext)
        if not isinstance(value, dict):
            raise _PayloadFault(f"the payload is a {type(value).__name__}, not a map")
        _check_depth(value, 1)
    except _PayloadFault as exc:
        raise HarcpError(BAD_PAYLOAD, str(exc)) from None
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        raise HarcpError(BAD_PAYLOAD, f"not one msgpack value: {exc}") from None
    return value


def pack_payload(payload: Mapping[str, Any]) -> bytes:
    return msgpack.packb(payload, use_bin_type=True)


def _is_uint(v: Any) -> bool:
    return type(v) is int and v >= 0


def _is_str(v: Any) -> bool:
    return type(v) is str


def _require(payload: dict[str, Any], key: str, check: Callable[[Any], bool], what: str,
             optional: bool = False) -> None:
    if key not in payload:
        if optional:
            return
        raise HarcpError(BAD_PAYLOAD, f"required key {key!r} is missing")
    if not check(payload[key]):
        raise HarcpError(BAD_PAYLOAD, f"{key!r} must be {what}")


def validate_payload(type_: int, payload: dict[str, Any]) -> None:
    """The required keys of §3 and their types; unknown keys are ignored."""
    if type_ in (EXECUTE, CAPABILITY_QUERY):
        _require(payload, "device", _is_str, "a str")
        if type_ == EXECUTE:
            _require(payload, "op", _is_str, "a str")
            _require(payload, "args", lambda v: type(v) is dict, "a map")
            _require(payload, "timeout_ms", _is_uint, "a uint", optional=True)
    elif type_ == ACK:
        _require(payload, "status", lambda v: _is_str(v) and v in ACK_STATUSES,
                 "one of " + ", ".join(sorted(ACK_STATUSES)))
        _require(payload, "error", lambda v: type(v) is dict, "a map", optional=True)
        if "error" in payload:
            _require(payload["error"], "code", _is_uint, "a uint")
            _require(payload["error"], "message", _is_str, "a str")
    elif type_ == STATUS:
        _require(payload, "health", lambda v: _is_str(v) and v in HEALTH_VALUES,
                 "one of " + ", ".join(sorted(HEALTH_VALUES)))
        _require(payload, "uptime_s", _is_uint, "a uint", optional=True)
        _require(payload, "inventory", lambda v: type(v) is dict, "a map", optional=True)
        _require(payload, "deployments",
                 lambda v: type(v) is dict and all(_is_str(x) for x in v.values()),
                 "a map of str", optional=True)
    elif type_ == CAPABILITY_RESPONSE:
        _require(payload, "agent", _is_str, "a str")
        _require(payload, "ops", lambda v: type(v) is list and all(_is_str(x) for x in v),
                 "an array of str")
        _require(payload, "max_payload", _is_uint, "a uint")
        _require(payload, "tier", lambda v: _is_str(v) and v in TIERS, "signed or open")
    elif type_ == ERROR:
        _require(payload, "code", _is_uint, "a uint")
        _require(payload, "reason", _is_str, "a str")
        _require(payload, "detail", _is_str, "a str", optional=True)


# -- frames -------------------------------------------------------------------------------
def build_frame(type_: int, payload: Mapping[str, Any] | bytes, *, key: Key | None,
                operation_id: bytes, timestamp: int, sequence: int) -> bytes:
    """A whole frame: signed by `key` (flags bit 0, its key id, the signature) or unsigned
    (key id zero, no signature) when `key` is None."""
    body = payload if isinstance(payload, bytes) else pack_payload(payload)
    if key is None:
        return encode(type_, 0, operation_id, timestamp, sequence, ZERO_KEY_ID, body)
    signed = encode(type_, FLAG_SIGNED, operation_id, timestamp, sequence, key.key_id, body)
    return signed + key.sign(signed)


@dataclass(frozen=True, slots=True)
class Message:
    """An accepted frame: its header fields and its decoded payload."""

    type: int
    flags: int
    operation_id: bytes
    timestamp: int
    sequence: int
    key_id: bytes
    payload: dict[str, Any]
    verified: bool  # signed and checked against a trusted key

    @property
    def type_name(self) -> str:
        return TYPE_NAMES[self.type]

    @property
    def signed(self) -> bool:
        return bool(self.flags & FLAG_SIGNED)


def error_answer(error: HarcpError) -> dict[str, Any] | None:
    """The payload of the `error` frame that answers a refusal, or None when §5 says not to
    answer (the frame's structure was unreadable, or it is not an execute/capability_query).
    The answer carries the refused frame's operation id."""
    frame = error.frame
    if frame is None or frame.type not in ANSWERED_TYPES:
        return None
    answer: dict[str, Any] = {"code": error.code, "reason": error.name}
    if error.detail:
        answer["detail"] = error.detail
    return answer


class Receiver:
    """The checks of §5 in their order, with the state they need: the trusted keys (two per
    peer during a rotation), the seen operation ids (bounded) and the last sequence per key.

    `verify_signatures=False` skips steps 3 and 4 for signed frames: only for a controller
    that was given no device key, whose answers are then reported as unverified."""

    def __init__(self, role: str, device_id: str, trusted_keys: Iterable[Key] = (), *,
                 window_ms: int = DEFAULT_WINDOW_MS, max_payload: int = DEFAULT_MAX_PAYLOAD,
                 allow_unsigned: bool = False, verify_signatures: bool = True,
                 seen_capacity: int = DEFAULT_SEEN_CAPACITY,
                 clock: Callable[[], int] = now_ms) -> None:
        if role not in ROLE_TYPES:
            raise ValueError(f"role must be device or controller, not {role!r}")
        if seen_capacity < 1:
            raise ValueError("seen_capacity must be at least 1")
        self.role = role
        self.device_id = device_id
        self.takes = ROLE_TYPES[role]
        self.trusted: dict[bytes, Key] = {}
        for key in trusted_keys:
            self.trust(key)
        self.window_ms = window_ms
        self.max_payload = max_payload
        self.allow_unsigned = allow_unsigned
        self.verify_signatures = verify_signatures
        self.seen_capacity = seen_capacity
        self.clock = clock
        self.last_sequence: dict[bytes, int] = {}
        # operation id → the receiver time after which a replay would be stale anyway
        self.seen: OrderedDict[bytes, int] = OrderedDict()

    def trust(self, key: Key) -> None:
        self.trusted[key.key_id] = key.public_only()

    def distrust(self, key_id: bytes) -> None:
        """End of a rotation: the old key's frames are `unknown_key` from now on."""
        self.trusted.pop(key_id, None)

    def remember(self, operation_id: bytes, expires_ms: int) -> None:
        """Record an operation id as seen until `expires_ms` (receiver clock)."""
        self.seen[operation_id] = expires_ms
        self.seen.move_to_end(operation_id)
        while len(self.seen) > self.seen_capacity:
            # the oldest goes; a replay of it is still refused by the sequence rule
            self.seen.popitem(last=False)

    def _forget_expired(self, now: int) -> None:
        while self.seen:
            operation_id, expires = next(iter(self.seen.items()))
            if expires >= now:
                break
            del self.seen[operation_id]

    def receive(self, raw: bytes | bytearray | memoryview, now: int | None = None) -> Message:
        """Check one frame (§5) and, when every check passes, record it (step 10). A refusal
        raises HarcpError and is logged with its name, key id and operation id."""
        try:
            return self._check(raw, self.clock() if now is None else now)
        except HarcpError as exc:
            frame = exc.frame
            log.info("harcp %s refused a frame: %s%s", self.role, exc,
                     f" (type {frame.type}, key id {frame.key_id.hex()}, operation "
                     f"{frame.operation_id.hex()}, sequence {frame.sequence})"
                     if frame is not None else f" ({len(raw)} bytes)")
            raise

    def _check(self, raw: bytes | bytearray | memoryview, now: int) -> Message:
        # 1. structure
        frame = decode(raw, self.max_payload)
        # 2. signed?
        verified = False
        if frame.flags & FLAG_SIGNED:
            if self.verify_signatures:
                # 3. key id among the trusted keys
                key = self.trusted.get(frame.key_id)
                if key is None:
                    raise HarcpError(UNKNOWN_KEY, f"key id {frame.key_id.hex()}", frame)
                # 4. signature; nothing in the payload is read before this point
                if not key.verify(frame.signed_bytes, frame.signature):
                    raise HarcpError(BAD_SIGNATURE, f"key id {frame.key_id.hex()}", frame)
                verified = True
        elif not self.allow_unsigned:
            raise HarcpError(UNSIGNED_REFUSED, "", frame)
        # 5. payload
        try:
            payload = unpack_payload(frame.payload)
            validate_payload(frame.type, payload)
        except HarcpError as exc:
            raise HarcpError(exc.code, exc.detail, frame) from None
        # 6. time window (inclusive)
        if not now - self.window_ms <= frame.timestamp <= now + self.window_ms:
            raise HarcpError(STALE, f"timestamp {frame.timestamp}, now {now}", frame)
        # 7. replay
        fresh_id = frame.type in FRESH_ID_TYPES
        if fresh_id:
            self._forget_expired(now)
            if frame.operation_id in self.seen:
                raise HarcpError(REPLAYED, f"operation {frame.operation_id.hex()}", frame)
        # 8. sequence
        last = self.last_sequence.get(frame.key_id, 0)
        if frame.sequence <= last:
            raise HarcpError(SEQUENCE, f"sequence {frame.sequence} not above {last}", frame)
        # 9. type, then target
        if frame.type not in self.takes:
            raise HarcpError(UNEXPECTED_TYPE, f"a {self.role} does not take "
                             f"{TYPE_NAMES[frame.type]}", frame)
        if frame.type in (EXECUTE, CAPABILITY_QUERY) and payload["device"] != self.device_id:
            raise HarcpError(WRONG_TARGET, f"for {payload['device']!r}, this is "
                             f"{self.device_id!r}", frame)
        # 10. accept
        if fresh_id:
            self.remember(frame.operation_id, frame.timestamp + self.window_ms)
        self.last_sequence[frame.key_id] = frame.sequence
        return Message(frame.type, frame.flags, frame.operation_id, frame.timestamp,
                       frame.sequence, frame.key_id, payload, verified)


# -- the signer's sequence ----------------------------------------------------------------
class SequenceStore:
    """A sequence counter in a file, shared by every process that signs with one key: each
    `next()` takes an exclusive lock (`<state>.lock`), reads, adds one, writes the new value
    to a temporary file, fsyncs and renames it over the state file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")

    def _read(self) -> int:
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return 0
        if not text.isdigit():
            raise ValueError(f"{self.path}: not a sequence number ({text[:20]!r}); "
                             "fix or remove it (removing restarts the sequence at 1, which "
                             "receivers refuse until the key is rotated)")
        return int(text)

    def current(self) -> int:
        return self._read()

    def next(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            value = self._read() + 1
            if value > MAX_SEQUENCE:
                raise ValueError(f"{self.path}: the sequence is exhausted; rotate the key")
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            tmp_fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(tmp_fd, f"{value}\n".encode())
                os.fsync(tmp_fd)
            finally:
                os.close(tmp_fd)
            os.replace(tmp, self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            return value
        finally:
            os.close(fd)  # releases the lock


def sequence_path_for(key_path: Path) -> Path:
    """The signer's state file next to its key: `controller.key` → `controller.key.seq`."""
    return key_path.with_name(key_path.name + ".seq")


class Signer:
    """Builds frames from one sender: signed with `key` (or unsigned when None), with a
    sequence from `sequence` that increases across processes."""

    def __init__(self, key: Key | None, sequence: SequenceStore,
                 clock: Callable[[], int] = now_ms) -> None:
        if key is not None and not key.can_sign:
            raise ValueError(f"key {key.key_id.hex()} has no secret: it cannot sign")
        self.key = key
        self.sequence = sequence
        self.clock = clock

    @classmethod
    def from_key_file(cls, key_path: Path | str) -> Signer:
        from hbroker.control.keys import read_key_file

        path = Path(key_path)
        return cls(read_key_file(path), SequenceStore(sequence_path_for(path)))

    def frame(self, type_: int, payload: Mapping[str, Any],
              operation_id: bytes | None = None) -> bytes:
        return build_frame(type_, payload, key=self.key,
                           operation_id=operation_id or uuid.uuid4().bytes,
                           timestamp=self.clock(), sequence=self.sequence.next())
