#!/usr/bin/env python3
"""Writes the HARCP v1 test vectors (keys.json, valid.json, reject.json) beside this file.

Deterministic: fixed key seeds, fixed operation ids (UUIDv5 of the vector name), fixed
timestamps and sequences; Ed25519 signatures are deterministic (RFC 8032). Running it again
rewrites the three files byte for byte. It depends on pynacl and msgpack only, not on hbroker:
the frames are built here from docs/harcp.md, so that the codec, the Python library and the C
agent are checked against an independent encoder.

    .venv/bin/python tests/vectors/harcp/generate.py [--check]

`--check` writes nothing and exits 1 when a file differs from what would be written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import msgpack
from nacl.signing import SigningKey

HERE = Path(__file__).resolve().parent

VERSION = 1
TYPES = {"execute": 1, "ack": 2, "status": 3, "capability_query": 4,
         "capability_response": 5, "error": 6}
ERRORS = {
    "malformed": 1, "truncated": 2, "trailing_bytes": 3, "unsupported_version": 4,
    "unknown_type": 5, "reserved_flag": 6, "oversize": 7, "unsigned_refused": 8,
    "unknown_key": 9, "bad_signature": 10, "bad_payload": 11, "stale": 12, "replayed": 13,
    "sequence": 14, "wrong_target": 15, "unknown_op": 16, "unexpected_type": 17,
}
FLAG_SIGNED = 0x01
HEADER_SIZE = 39
SIGNATURE_SIZE = 64

NOW_MS = 1_764_000_000_000  # 2025-11-24T16:00:00Z, the receivers' clock
WINDOW_MS = 300_000
DEVICE_ID = "dev-1"
NAMESPACE = uuid.UUID("6f1c1f0e-5a3b-4c8e-9d2a-0b7e4a1c9f00")

# -- keys ---------------------------------------------------------------------------------
KEY_NAMES = ("controller", "controller_next", "device", "stranger")
SIGNING_KEYS = {name: SigningKey(hashlib.sha256(f"harcp-test-vector-{name}".encode()).digest())
                for name in KEY_NAMES}


def public_of(name: str) -> bytes:
    return bytes(SIGNING_KEYS[name].verify_key)


def key_id_of(name: str) -> bytes:
    return hashlib.sha256(public_of(name)).digest()[:8]


def keys_json() -> dict[str, Any]:
    return {name: {"seed": bytes(SIGNING_KEYS[name]).hex(), "public": public_of(name).hex(),
                   "key_id": key_id_of(name).hex()} for name in KEY_NAMES}


# -- frame building -----------------------------------------------------------------------
def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def op_id(name: str) -> bytes:
    return uuid.uuid5(NAMESPACE, name).bytes


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def header(type_: int, flags: int, operation_id: bytes, timestamp: int, sequence: int,
           key_id: bytes, version: int = VERSION) -> bytes:
    return (bytes([version, type_, flags]) + operation_id + timestamp.to_bytes(8, "big")
            + sequence.to_bytes(4, "big") + key_id)


def frame(type_name: str, payload: bytes, *, name: str, signer: str | None,
          timestamp: int = NOW_MS - 1_500, sequence: int = 42, flags: int | None = None,
          version: int = VERSION, type_value: int | None = None, key_id: bytes | None = None,
          operation_id: bytes | None = None, length: bytes | None = None,
          sign_with: str | None = None) -> bytes:
    """One frame. Overrides (`flags`, `version`, `type_value`, `key_id`, `length`, `sign_with`)
    build the reject vectors; the signature always covers the bytes as sent, so that a frame
    fails only at the check its vector names."""
    if flags is None:
        flags = FLAG_SIGNED if signer else 0
    if key_id is None:
        key_id = key_id_of(signer) if signer else bytes(8)
    signed = header(TYPES[type_name] if type_value is None else type_value, flags,
                    op_id(name) if operation_id is None else operation_id, timestamp,
                    sequence, key_id, version)
    signed += (varint(len(payload)) if length is None else length) + payload
    if flags & FLAG_SIGNED:
        signed += SIGNING_KEYS[sign_with or signer or "controller"].sign(signed).signature
    return signed


# -- receivers ----------------------------------------------------------------------------
def device_receiver(**changes: Any) -> dict[str, Any]:
    r = {"role": "device", "device_id": DEVICE_ID, "now_ms": NOW_MS, "window_ms": WINDOW_MS,
         "max_payload": 1024, "trusted_keys": ["controller"], "allow_unsigned": False,
         "last_sequence": {key_id_of("controller").hex(): 41},
         "seen_operations": [op_id("seen-operation").hex()]}
    r.update(changes)
    return r


def controller_receiver(**changes: Any) -> dict[str, Any]:
    r = {"role": "controller", "device_id": DEVICE_ID, "now_ms": NOW_MS,
         "window_ms": WINDOW_MS, "max_payload": 4096, "trusted_keys": ["device"],
         "allow_unsigned": False, "last_sequence": {key_id_of("device").hex(): 7},
         "seen_operations": []}
    r.update(changes)
    return r


# -- JSON rendering -----------------------------------------------------------------------
def render(value: Any) -> Any:
    """msgpack value → JSON: bytes as {"$bin": hex}, maps and arrays recursively."""
    if isinstance(value, bytes):
        return {"$bin": value.hex()}
    if isinstance(value, dict):
        return {k: render(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [render(v) for v in value]
    return value


def fields_of(raw: bytes) -> dict[str, Any]:
    """The fields of a well-formed frame, read back with the layout of docs/harcp.md §1."""
    length = pos = 0
    shift = 0
    pos = HEADER_SIZE
    while True:
        byte = raw[pos]
        length |= (byte & 0x7F) << shift
        shift += 7
        pos += 1
        if not byte & 0x80:
            break
    payload = raw[pos:pos + length]
    type_name = {v: k for k, v in TYPES.items()}[raw[1]]
    return {
        "version": raw[0], "type": type_name, "flags": raw[2],
        "operation_id": raw[3:19].hex(), "timestamp": int.from_bytes(raw[19:27], "big"),
        "sequence": int.from_bytes(raw[27:31], "big"), "key_id": raw[31:39].hex(),
        "payload_hex": payload.hex(),
        "payload": render(msgpack.unpackb(payload, raw=False, strict_map_key=False)),
    }


# -- valid vectors ------------------------------------------------------------------------
def execute(name: str, args: Any = None, *, op: str = "led.set", device: str = DEVICE_ID,
            **extra: Any) -> bytes:
    payload = {"device": device, "op": op, "args": {} if args is None else args}
    payload.update(extra)
    return pack(payload)


def max_size_execute(size: int) -> bytes:
    """An execute whose payload is exactly `size` bytes (a bin argument filled up)."""
    for n in range(size, 0, -1):
        payload = execute("", {"blob": bytes(range(256)) * (n // 256) + bytes(n % 256)},
                          op="fw.chunk")
        if len(payload) == size:
            return payload
    raise AssertionError(size)


def valid_vectors() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(name: str, description: str, type_name: str, payload: bytes,
            signer: str | None, receiver: dict[str, Any], **kw: Any) -> None:
        raw = frame(type_name, payload, name=name, signer=signer, **kw)
        out.append({"name": name, "description": description, "frame": raw.hex(),
                    "signer": signer, "fields": fields_of(raw), "receiver": receiver})

    dev = device_receiver()
    ctl = controller_receiver()
    add("execute_signed", "An execute signed by the controller key: led.set with one bool.",
        "execute", execute("execute_signed", {"on": True}), "controller", dev)
    add("execute_empty_args", "An execute whose args map is empty.",
        "execute", execute("", {}, op="device.reboot"), "controller", dev)
    add("execute_nested_args", "Args with nested maps and arrays, negative and large integers, "
        "a float, nil, bin and a UTF-8 string.",
        "execute", execute("", {
            "color": {"r": 255, "g": 128, "b": 0},
            "pattern": [1, 2, [3, 4], {"repeat": 3}],
            "offset": -40, "big": 2**63 - 1, "gain": 21.5, "label": "Küche ☕",
            "reset": None, "token": bytes.fromhex("deadbeef")}, op="led.pattern"),
        "controller", dev)
    add("execute_nesting_32_levels", "Args nested so that the deepest map is at level 32 "
        "(the payload map is level 1): the deepest nesting a receiver takes.",
        "execute", execute("", _nested(30), op="config.apply"), "controller", dev)
    add("execute_timeout_ms", "An execute with the optional timeout_ms.",
        "execute", execute("", {"position": 40}, op="valve.move", timeout_ms=30_000),
        "controller", dev)
    # timeout_ms = 5 as msgpack int8 (0xd0 0x05): a uint is any non-negative integer,
    # whatever its msgpack encoding.
    add("execute_uint_as_signed_encoding", "timeout_ms 5 encoded as msgpack int8 (0xd0 0x05): "
        "a non-negative integer is a uint whatever its encoding.",
        "execute", _execute_int8_timeout(), "controller", dev)
    add("execute_unknown_key_ignored", "An execute with a key §3 does not define: ignored.",
        "execute", execute("", {"on": False}, note="from the night shift"), "controller", dev)
    add("execute_rotation_key", "An execute signed by the next controller key while the "
        "receiver trusts both keys (rotation); the new key's sequence starts at 1.",
        "execute", execute("", {"on": True}), "controller_next",
        device_receiver(trusted_keys=["controller", "controller_next"]), sequence=1)
    add("execute_unsigned_allowed", "An unsigned execute (flags 0, key id zero) at a device "
        "whose tier allows unsigned frames.",
        "execute", execute("", {"on": True}), None,
        device_receiver(allow_unsigned=True, last_sequence={}), sequence=1)
    add("execute_signed_where_unsigned_allowed", "A signed execute at a device that also "
        "allows unsigned frames: the signature is still checked.",
        "execute", execute("", {"on": True}), "controller", device_receiver(allow_unsigned=True))
    add("execute_window_past_edge", "Timestamp exactly now - window: inside (the window is "
        "inclusive).", "execute", execute("", {"on": True}), "controller", dev,
        timestamp=NOW_MS - WINDOW_MS)
    add("execute_window_future_edge", "Timestamp exactly now + window: inside.",
        "execute", execute("", {"on": True}), "controller", dev, timestamp=NOW_MS + WINDOW_MS)
    add("execute_varint_2_bytes", "A 200-byte payload: payload length as a 2-byte varint "
        "(0xc8 0x01).", "execute", _sized_execute(200), "controller", dev)
    add("execute_max_payload", "A payload of exactly max_payload (1024) bytes: the largest "
        "a device with the default buffer takes.", "execute", max_size_execute(1024),
        "controller", dev)
    add("capability_query_signed", "A signed capability_query.",
        "capability_query", pack({"device": DEVICE_ID}), "controller", dev)
    add("capability_query_unsigned_allowed", "An unsigned capability_query at an open device.",
        "capability_query", pack({"device": DEVICE_ID}), None,
        device_receiver(allow_unsigned=True), sequence=3)
    add("ack_accepted", "An ack accepted (the device will answer done/failed later).",
        "ack", pack({"status": "accepted"}), "device", ctl, sequence=8)
    add("ack_done_with_result", "An ack done with a result map. Its operation id is in the "
        "seen list (the accepted ack before it): answers are not checked against the seen "
        "operations (§5 step 7).",
        "ack", pack({"status": "done", "result": {"on": True, "brightness": 80}}), "device",
        controller_receiver(seen_operations=[op_id("ack_done_with_result").hex()],
                            last_sequence={key_id_of("device").hex(): 8}), sequence=9)
    add("ack_failed_with_error", "An ack failed with an error map and no result.",
        "ack", pack({"status": "failed", "error": {"code": 3, "message": "valve stuck"}}),
        "device", ctl, sequence=8)
    add("ack_rejected_unknown_op", "An ack rejected for an op the device does not have "
        "(error code 16, unknown_op).",
        "ack", pack({"status": "rejected",
                     "error": {"code": ERRORS["unknown_op"], "message": "no op fan.set"}}),
        "device", ctl, sequence=8)
    add("status_minimal", "A status with health only.",
        "status", pack({"health": "ok"}), "device", ctl, sequence=8)
    add("status_full", "A status with uptime, inventory and deployment phases.",
        "status", pack({"health": "degraded", "uptime_s": 86_400,
                        "inventory": {"fw": "1.4.2", "sensors": ["t1", "t2"], "ram_kb": 64},
                        "deployments": {"d-2025-11": "applied", "d-2025-12": "pending"}}),
        "device", ctl, sequence=8)
    add("status_varint_3_bytes", "A status with a 20000-byte inventory at a controller with "
        "max_payload 65536: payload length as a 3-byte varint.",
        "status", _sized_status(20_000), "device", controller_receiver(max_payload=65_536),
        sequence=8)
    add("capability_response", "A capability_response.",
        "capability_response", pack({"agent": "har-agent/0.1.0",
                                     "ops": ["led.set", "device.reboot"], "max_payload": 1024,
                                     "tier": "signed"}), "device", ctl, sequence=8)
    add("error_sequence", "An error frame: the device refused a frame with `sequence`.",
        "error", pack({"code": ERRORS["sequence"], "reason": "sequence",
                       "detail": "sequence 41 not above 41"}), "device", ctl, sequence=8)
    add("error_zero_operation_id", "An error frame for a frame whose operation id could not "
        "be read (operation id all zero).",
        "error", pack({"code": ERRORS["truncated"], "reason": "truncated"}), "device", ctl,
        sequence=8, operation_id=bytes(16))
    return out


def _execute_int8_timeout() -> bytes:
    body = pack({"device": DEVICE_ID, "op": "device.ping", "args": {}})
    # fixmap of 3 → fixmap of 4, then "timeout_ms": int8 5
    assert body[0] == 0x83
    return b"\x84" + body[1:] + pack("timeout_ms") + b"\xd0\x05"


def _sized_execute(size: int) -> bytes:
    for n in range(size, 0, -1):
        payload = execute("", {"text": "x" * n}, op="display.write")
        if len(payload) == size:
            return payload
    raise AssertionError(size)


def _sized_status(size: int) -> bytes:
    for n in range(size, 0, -1):
        payload = pack({"health": "ok", "inventory": {"log": bytes(n)}})
        if len(payload) == size:
            return payload
    raise AssertionError(size)


# -- reject vectors -----------------------------------------------------------------------
def flip(raw: bytes, index: int, bit: int = 0x01) -> bytes:
    b = bytearray(raw)
    b[index] ^= bit
    return bytes(b)


def reject_vectors() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    dev = device_receiver()
    ctl = controller_receiver()

    def add(name: str, description: str, raw: bytes, receiver: dict[str, Any],
            error: str) -> None:
        out.append({"name": name, "description": description, "frame": raw.hex(),
                    "receiver": receiver, "error": error, "code": ERRORS[error]})

    def good(name: str, **kw: Any) -> bytes:
        return frame("execute", execute(name, {"on": True}), name=name, signer="controller",
                     **kw)

    # 1. structure
    add("truncated_header", "38 bytes: shorter than the fixed header.",
        good("truncated_header")[:38], dev, "truncated")
    add("truncated_empty", "An empty frame.", b"", dev, "truncated")
    add("truncated_varint", "The fixed header and a payload length byte with the "
        "continuation bit set, then nothing.", good("truncated_varint")[:39] + b"\x81",
        dev, "truncated")
    add("truncated_payload", "The length announces 20 payload bytes, 10 are there.",
        good("truncated_payload")[:39] + b"\x14" + bytes(10), dev, "truncated")
    add("truncated_signature", "A signed frame missing the last byte of its signature.",
        good("truncated_signature")[:-1], dev, "truncated")
    add("trailing_bytes", "A valid signed frame followed by one zero byte.",
        good("trailing_bytes") + b"\x00", dev, "trailing_bytes")
    unsigned = frame("execute", execute("", {"on": True}), name="trailing_signature_on_unsigned",
                     signer=None, sequence=1)
    add("trailing_signature_on_unsigned", "An unsigned frame (flags 0) followed by 64 bytes: "
        "an unsigned frame has no signature, so they are trailing bytes.",
        unsigned + SIGNING_KEYS["controller"].sign(unsigned).signature,
        device_receiver(allow_unsigned=True), "trailing_bytes")
    add("unsupported_version_2", "Version 2, otherwise valid and signed over as sent.",
        good("unsupported_version_2", version=2), dev, "unsupported_version")
    add("unsupported_version_0", "Version 0.", good("unsupported_version_0", version=0), dev,
        "unsupported_version")
    add("unknown_type_0", "Type 0.", good("unknown_type_0", type_value=0), dev, "unknown_type")
    add("unknown_type_7", "Type 7.", good("unknown_type_7", type_value=7), dev, "unknown_type")
    add("reserved_flag_bit_1", "Flags 0x03: signed and reserved bit 1.",
        good("reserved_flag_bit_1", flags=0x03), dev, "reserved_flag")
    add("reserved_flag_bit_7", "Flags 0x81: signed and reserved bit 7.",
        good("reserved_flag_bit_7", flags=0x81), dev, "reserved_flag")
    add("varint_too_long", "A payload length of five bytes (0x80 0x80 0x80 0x80 0x01): the "
        "fourth byte still has the continuation bit.",
        good("varint_too_long")[:39] + b"\x80\x80\x80\x80\x01" + bytes(80), dev, "malformed")
    add("oversize", "The length says 1025 (0x81 0x08) at a receiver whose maximum is 1024; "
        "decided from the length alone, before the payload (which is absent).",
        good("oversize")[:39] + b"\x81\x08", dev, "oversize")
    add("oversize_4_byte_length", "The largest 4-byte length (0xff 0xff 0xff 0x7f).",
        good("oversize_4_byte_length")[:39] + b"\xff\xff\xff\x7f", dev, "oversize")
    add("unsigned_with_key_id", "An unsigned frame (flags 0) carrying the controller's key id "
        "at a device that allows unsigned frames: an unsigned frame's key id must be zero, "
        "otherwise anyone could advance a real key's sequence with unsigned frames.",
        frame("execute", execute("", {"on": True}), name="unsigned_with_key_id", signer=None,
              key_id=key_id_of("controller"), sequence=4_000_000_000),
        device_receiver(allow_unsigned=True), "malformed")
    # 2. signed?
    add("unsigned_refused", "An unsigned execute at a device that requires signatures.",
        frame("execute", execute("", {"on": True}), name="unsigned_refused", signer=None),
        dev, "unsigned_refused")
    add("unsigned_refused_at_controller", "An unsigned ack at a controller that requires "
        "signatures.", frame("ack", pack({"status": "done"}), name="unsigned_ack", signer=None,
                             sequence=8), ctl, "unsigned_refused")
    # 3. key
    add("unknown_key_stranger", "Signed by the stranger key, a valid signature with its own "
        "key id.", frame("execute", execute("", {"on": True}), name="unknown_key_stranger",
                         signer="stranger"), dev, "unknown_key")
    add("unknown_key_after_rotation", "Signed by the old controller key at a device that "
        "trusts only the next key (rotation finished).",
        good("unknown_key_after_rotation"),
        device_receiver(trusted_keys=["controller_next"], last_sequence={}), "unknown_key")
    add("unknown_key_device_key_at_device", "Signed by the device key at a device that "
        "trusts only the controller key.",
        frame("execute", execute("", {"on": True}), name="device_key_at_device",
              signer="device"), dev, "unknown_key")
    # 4. signature
    payload = execute("", {"on": True})
    raw = frame("execute", payload, name="bad_signature_payload_bit", signer="controller")
    index = 39 + 1 + payload.index(b"led.set") + 2   # 'd' → 'e': still valid msgpack
    add("bad_signature_payload_bit_flipped", "A bit of the payload flipped after signing "
        "(op \"led.set\" becomes \"lee.set\").", flip(raw, index), dev, "bad_signature")
    raw = good("bad_signature_signature_bit")
    add("bad_signature_signature_bit_flipped", "Bit 0 of the signature's first byte flipped.",
        flip(raw, len(raw) - 64), dev, "bad_signature")
    raw = good("bad_signature_timestamp_bit")
    add("bad_signature_timestamp_bit_flipped", "Bit 0 of the timestamp flipped after signing "
        "(the timestamp stays inside the window).", flip(raw, 26), dev, "bad_signature")
    add("bad_signature_wrong_signer", "Carries the controller's key id but is signed by the "
        "stranger key.", good("bad_signature_wrong_signer", sign_with="stranger"), dev,
        "bad_signature")
    add("bad_signature_before_stale", "Stale and with a flipped signature bit: the signature "
        "is checked first (§5 order).",
        flip(good("bad_signature_before_stale", timestamp=NOW_MS - 10 * WINDOW_MS), -1, 0x02),
        dev, "bad_signature")
    # 5. payload
    def signed_execute(name: str, payload: bytes, **kw: Any) -> bytes:
        return frame("execute", payload, name=name, signer="controller", **kw)

    add("bad_payload_empty", "Payload length 0: no map.",
        signed_execute("bad_payload_empty", b""), dev, "bad_payload")
    add("bad_payload_bad_msgpack", "Payload 0xc1, a byte msgpack never uses.",
        signed_execute("bad_payload_bad_msgpack", b"\xc1"), dev, "bad_payload")
    add("bad_payload_incomplete_msgpack", "A map announcing 3 entries with only 1.",
        signed_execute("bad_payload_incomplete", b"\x83" + pack("op") + pack("led.set")),
        dev, "bad_payload")
    add("bad_payload_not_a_map", "The payload is an array.",
        signed_execute("bad_payload_not_a_map", pack([DEVICE_ID, "led.set", {}])), dev,
        "bad_payload")
    add("bad_payload_extra_after_map", "A valid map followed by one more msgpack value (nil).",
        signed_execute("bad_payload_extra", execute("", {}) + b"\xc0"), dev, "bad_payload")
    add("bad_payload_missing_op", "An execute without `op`.",
        signed_execute("bad_payload_missing_op", pack({"device": DEVICE_ID, "args": {}})),
        dev, "bad_payload")
    add("bad_payload_missing_device", "A capability_query without `device`.",
        frame("capability_query", pack({}), name="bad_payload_missing_device",
              signer="controller"), dev, "bad_payload")
    add("bad_payload_op_not_str", "`op` is an integer.",
        signed_execute("bad_payload_op_int", pack({"device": DEVICE_ID, "op": 7, "args": {}})),
        dev, "bad_payload")
    add("bad_payload_op_bin", "`op` is msgpack bin, not str.",
        signed_execute("bad_payload_op_bin",
                       pack({"device": DEVICE_ID, "op": b"led.set", "args": {}})),
        dev, "bad_payload")
    add("bad_payload_args_not_map", "`args` is an array.",
        signed_execute("bad_payload_args_array",
                       pack({"device": DEVICE_ID, "op": "led.set", "args": [1]})),
        dev, "bad_payload")
    add("bad_payload_timeout_negative", "`timeout_ms` is -1: not a uint.",
        signed_execute("bad_payload_timeout_negative", execute("", {}, timeout_ms=-1)), dev,
        "bad_payload")
    add("bad_payload_timeout_nil", "`timeout_ms` is nil: an optional key that is present "
        "must have its type.",
        signed_execute("bad_payload_timeout_nil", execute("", {}, timeout_ms=None)), dev,
        "bad_payload")
    add("bad_payload_timeout_bool", "`timeout_ms` is true: a bool is not a uint.",
        signed_execute("bad_payload_timeout_bool", execute("", {}, timeout_ms=True)), dev,
        "bad_payload")
    add("bad_payload_duplicate_key", "The map holds `op` twice.",
        signed_execute("bad_payload_duplicate_key",
                       b"\x84" + pack("device") + pack(DEVICE_ID) + pack("op")
                       + pack("led.set") + pack("args") + b"\x80" + pack("op")
                       + pack("device.reboot")), dev, "bad_payload")
    add("bad_payload_key_not_str", "A map key in args is an integer.",
        signed_execute("bad_payload_key_int",
                       pack({"device": DEVICE_ID, "op": "led.set", "args": {1: True}})),
        dev, "bad_payload")
    add("bad_payload_invalid_utf8", "`op` is a msgpack str holding invalid UTF-8 (0xff).",
        signed_execute("bad_payload_invalid_utf8",
                       b"\x83" + pack("device") + pack(DEVICE_ID) + pack("op")
                       + b"\xa3l\xffd" + pack("args") + b"\x80"), dev, "bad_payload")
    add("bad_payload_ext_type", "An args value of msgpack ext type 1.",
        signed_execute("bad_payload_ext",
                       pack({"device": DEVICE_ID, "op": "led.set",
                             "args": {"x": msgpack.ExtType(1, b"\x00")}})),
        dev, "bad_payload")
    add("bad_payload_too_deep", "Args nested 33 levels deep (the top-level map is level 1, "
        "the limit is 32).",
        signed_execute("bad_payload_too_deep",
                       pack({"device": DEVICE_ID, "op": "led.set", "args": _nested(31)})),
        dev, "bad_payload")
    add("bad_payload_ack_status_unknown", "An ack whose status is not one of the four.",
        frame("ack", pack({"status": "maybe"}), name="bad_payload_ack_status", signer="device",
              sequence=8), ctl, "bad_payload")
    add("bad_payload_ack_error_code_negative", "An ack whose error.code is negative.",
        frame("ack", pack({"status": "failed", "error": {"code": -1, "message": "x"}}),
              name="bad_payload_ack_error", signer="device", sequence=8), ctl, "bad_payload")
    add("bad_payload_capability_response_ops_not_str", "A capability_response whose ops "
        "holds an integer.",
        frame("capability_response", pack({"agent": "a", "ops": ["led.set", 2],
                                           "max_payload": 1024, "tier": "open"}),
              name="bad_payload_ops", signer="device", sequence=8), ctl, "bad_payload")
    add("bad_payload_before_stale", "A stale frame whose payload is not a map: the payload "
        "is checked first.",
        signed_execute("bad_payload_before_stale", pack([1]), timestamp=NOW_MS - 2 * WINDOW_MS),
        dev, "bad_payload")
    # 6. time
    add("stale_past", "Timestamp now - window - 1 ms.",
        good("stale_past", timestamp=NOW_MS - WINDOW_MS - 1), dev, "stale")
    add("stale_future", "Timestamp now + window + 1 ms.",
        good("stale_future", timestamp=NOW_MS + WINDOW_MS + 1), dev, "stale")
    add("stale_before_replayed", "Stale, and its operation id is in the seen list: the "
        "time is checked first.",
        good("stale_before_replayed", timestamp=0, operation_id=op_id("seen-operation")), dev,
        "stale")
    # 7. replay
    add("replayed", "Operation id in the seen list, everything else valid (sequence 42 > 41).",
        good("replayed", operation_id=op_id("seen-operation")), dev, "replayed")
    add("replayed_before_sequence", "Operation id in the seen list and sequence 41: the seen "
        "list is checked first.",
        good("replayed_before_sequence", operation_id=op_id("seen-operation"), sequence=41),
        dev, "replayed")
    add("replayed_status_at_controller", "A status (a type that carries a fresh operation "
        "id) whose id the controller has seen.",
        frame("status", pack({"health": "ok"}), name="replayed_status", signer="device",
              sequence=8),
        controller_receiver(seen_operations=[op_id("replayed_status").hex()]), "replayed")
    # 8. sequence
    add("sequence_equal", "Sequence 41, equal to the last accepted.",
        good("sequence_equal", sequence=41), dev, "sequence")
    add("sequence_lower", "Sequence 40, below the last accepted (41).",
        good("sequence_lower", sequence=40), dev, "sequence")
    add("sequence_zero", "Sequence 0 from a key with nothing accepted yet (last = 0).",
        frame("execute", execute("", {"on": True}), name="sequence_zero",
              signer="controller_next", sequence=0),
        device_receiver(trusted_keys=["controller", "controller_next"]), "sequence")
    add("sequence_before_wrong_target", "Sequence 40 and device dev-2: the sequence is "
        "checked first.",
        signed_execute("sequence_before_wrong_target", execute("", {}, device="dev-2"),
                       sequence=40), dev, "sequence")
    # 9. type and target
    add("wrong_target_execute", "An execute for device dev-2 at device dev-1.",
        signed_execute("wrong_target_execute", execute("", {"on": True}, device="dev-2")), dev,
        "wrong_target")
    add("wrong_target_capability_query", "A capability_query for device dev-10 at dev-1.",
        frame("capability_query", pack({"device": "dev-10"}), name="wrong_target_query",
              signer="controller"), dev, "wrong_target")
    add("unexpected_type_ack_at_device", "A valid ack, signed by a trusted key, at a device.",
        frame("ack", pack({"status": "done"}), name="ack_at_device", signer="controller"),
        dev, "unexpected_type")
    add("unexpected_type_execute_at_controller", "A valid execute, signed by a trusted key, "
        "at a controller.",
        frame("execute", execute("", {"on": True}), name="execute_at_controller",
              signer="device", sequence=8), ctl, "unexpected_type")
    add("unexpected_type_before_wrong_target", "An execute for dev-2 at a controller: the "
        "type is checked before the target.",
        frame("execute", execute("", {}, device="dev-2"), name="execute_dev2_at_controller",
              signer="device", sequence=8), ctl, "unexpected_type")
    return out


def _nested(depth: int) -> Any:
    value: Any = {}
    for _ in range(depth):
        value = {"a": value}
    return value


# -- output -------------------------------------------------------------------------------
def documents() -> dict[str, str]:
    def dump(obj: Any) -> str:
        return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"

    return {
        "keys.json": dump(keys_json()),
        "valid.json": dump({"vectors": valid_vectors()}),
        "reject.json": dump({"vectors": reject_vectors()}),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the files on disk, write nothing")
    args = parser.parse_args()
    stale = []
    for name, text in documents().items():
        path = HERE / name
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print("out of date: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
