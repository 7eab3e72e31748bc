"""The shared HARCP test vectors (tests/vectors/harcp/) through the Cython codec
(hbroker_ext/harcp.pyx) and the Python receiver (hbroker/control/harcp.py).

Valid vectors: decoded to exactly their fields, re-encoded to exactly their bytes, signed to
exactly their signature, accepted by a receiver in the vector's state. Reject vectors: refused
with exactly the named error, by the codec alone when the error is structural (§5 step 1).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hbroker.control.harcp import (
    HarcpError,
    Message,
    Receiver,
    unpack_payload,
    validate_payload,
)
from hbroker.control.keys import Key
from hbroker_ext import harcp as codec

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "harcp"
KEYS: dict[str, dict[str, str]] = json.loads((VECTORS / "keys.json").read_text())
VALID: list[dict[str, Any]] = json.loads((VECTORS / "valid.json").read_text())["vectors"]
REJECT: list[dict[str, Any]] = json.loads((VECTORS / "reject.json").read_text())["vectors"]
STRUCTURAL = {"malformed", "truncated", "trailing_bytes", "unsupported_version",
              "unknown_type", "reserved_flag", "oversize"}


def key(name: str) -> Key:
    return Key.from_seed(bytes.fromhex(KEYS[name]["seed"]))


def receiver_for(state: dict[str, Any]) -> Receiver:
    r = Receiver(state["role"], state["device_id"], [key(n) for n in state["trusted_keys"]],
                 window_ms=state["window_ms"], max_payload=state["max_payload"],
                 allow_unsigned=state["allow_unsigned"], clock=lambda: state["now_ms"])
    for key_id, sequence in state["last_sequence"].items():
        r.last_sequence[bytes.fromhex(key_id)] = sequence
    for operation_id in state["seen_operations"]:
        r.remember(bytes.fromhex(operation_id), state["now_ms"] + state["window_ms"])
    return r


def render(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$bin": value.hex()}
    if isinstance(value, dict):
        return {k: render(v) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v) for v in value]
    return value


def test_vector_files_are_what_generate_py_writes() -> None:
    result = subprocess.run([sys.executable, str(VECTORS / "generate.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_vectors_cover_the_contract() -> None:
    assert len(VALID) >= 20 and len(REJECT) >= 20
    assert {v["fields"]["type"] for v in VALID} == set(codec.TYPES)
    assert {v["error"] for v in REJECT} >= set(codec.ERROR_CODES) - {"unknown_op"}
    assert {len(v["frame"]) // 2 - 39 - len(v["fields"]["payload_hex"]) // 2
            - (64 if v["signer"] else 0) for v in VALID} == {1, 2, 3}
    for v in VALID + REJECT:
        if v["receiver"]["role"] == "device":
            assert v["receiver"]["max_payload"] <= 1024, v["name"]


def test_keys_json_key_ids_are_sha256_of_the_public_key() -> None:
    for name, entry in KEYS.items():
        k = key(name)
        assert k.public.hex() == entry["public"], name
        assert k.key_id.hex() == entry["key_id"], name


@pytest.mark.parametrize("vector", VALID, ids=lambda v: v["name"])
def test_valid_vector_decodes_to_its_fields(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["frame"])
    fields = vector["fields"]
    frame = codec.decode(raw, vector["receiver"]["max_payload"])
    assert (frame.version, frame.type_name, frame.flags) == \
        (fields["version"], fields["type"], fields["flags"])
    assert frame.operation_id.hex() == fields["operation_id"]
    assert (frame.timestamp, frame.sequence) == (fields["timestamp"], fields["sequence"])
    assert frame.key_id.hex() == fields["key_id"]
    assert bytes(frame.payload).hex() == fields["payload_hex"]
    assert render(unpack_payload(frame.payload)) == fields["payload"]
    assert frame.signed == (vector["signer"] is not None)
    assert bytes(frame.signed_bytes) == raw[:frame.signed_length]
    if frame.signed:
        assert bytes(frame.signature) == raw[-64:]
        assert frame.signed_length == len(raw) - 64
    else:
        assert frame.signature is None and frame.signed_length == len(raw)


@pytest.mark.parametrize("vector", VALID, ids=lambda v: v["name"])
def test_valid_vector_encodes_and_signs_to_its_bytes(vector: dict[str, Any]) -> None:
    fields = vector["fields"]
    raw = bytes.fromhex(vector["frame"])
    signed = codec.encode(codec.TYPES[fields["type"]], fields["flags"],
                          bytes.fromhex(fields["operation_id"]), fields["timestamp"],
                          fields["sequence"], bytes.fromhex(fields["key_id"]),
                          bytes.fromhex(fields["payload_hex"]), fields["version"])
    if vector["signer"] is None:
        assert signed == raw
    else:
        assert signed + key(vector["signer"]).sign(signed) == raw


@pytest.mark.parametrize("vector", VALID, ids=lambda v: v["name"])
def test_valid_vector_is_accepted_by_its_receiver(vector: dict[str, Any]) -> None:
    fields = vector["fields"]
    message = receiver_for(vector["receiver"]).receive(bytes.fromhex(vector["frame"]))
    assert isinstance(message, Message)
    assert message.type_name == fields["type"]
    assert message.operation_id.hex() == fields["operation_id"]
    assert message.sequence == fields["sequence"]
    assert render(message.payload) == fields["payload"]
    assert message.verified == (vector["signer"] is not None)


@pytest.mark.parametrize("vector", VALID, ids=lambda v: v["name"])
def test_valid_vector_replayed_to_the_same_receiver_is_refused(vector: dict[str, Any]) -> None:
    receiver = receiver_for(vector["receiver"])
    raw = bytes.fromhex(vector["frame"])
    receiver.receive(raw)
    with pytest.raises(HarcpError) as refused:
        receiver.receive(raw)
    fresh_id = vector["fields"]["type"] in ("execute", "capability_query", "status")
    assert refused.value.name == ("replayed" if fresh_id else "sequence")


@pytest.mark.parametrize("vector", REJECT, ids=lambda v: v["name"])
def test_reject_vector_is_refused_with_its_error(vector: dict[str, Any]) -> None:
    receiver = receiver_for(vector["receiver"])
    with pytest.raises(HarcpError) as refused:
        receiver.receive(bytes.fromhex(vector["frame"]))
    assert (refused.value.name, refused.value.code) == (vector["error"], vector["code"])
    assert codec.ERROR_CODES[vector["error"]] == vector["code"]
    # a refusal leaves the receiver's state as it was
    assert receiver.last_sequence == {bytes.fromhex(k): n for k, n in
                                      vector["receiver"]["last_sequence"].items()}
    assert len(receiver.seen) == len(vector["receiver"]["seen_operations"])


@pytest.mark.parametrize("vector", REJECT, ids=lambda v: v["name"])
def test_reject_vector_structure_is_judged_by_the_codec(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["frame"])
    if vector["error"] in STRUCTURAL:
        with pytest.raises(codec.HarcpError) as refused:
            codec.decode(raw, vector["receiver"]["max_payload"])
        assert (refused.value.name, refused.value.code) == (vector["error"], vector["code"])
        assert refused.value.frame is None
    else:
        frame = codec.decode(raw, vector["receiver"]["max_payload"])
        assert frame.signed_length + (64 if frame.signed else 0) == len(raw)


ORDER = ["unsigned_refused", "unknown_key", "bad_signature", "bad_payload", "stale",
         "replayed", "sequence", "unexpected_type", "wrong_target"]


def every_failing_check(raw: bytes, state: dict[str, Any]) -> set[str]:
    """All checks of §5 steps 2-9 that the frame fails, each judged on its own (not stopping
    at the first), to show that a reject vector has exactly the fault it names."""
    frame = codec.decode(raw, state["max_payload"])
    failing = set()
    trusted = {key(n).key_id: key(n) for n in state["trusted_keys"]}
    if not frame.signed:
        if not state["allow_unsigned"]:
            failing.add("unsigned_refused")
    else:
        if frame.key_id not in trusted:
            failing.add("unknown_key")
        owner = {key(n).key_id: key(n) for n in KEYS}.get(frame.key_id)
        if owner is None or not owner.verify(frame.signed_bytes, frame.signature):
            failing.add("bad_signature")
    payload = None
    try:
        payload = unpack_payload(frame.payload)
        validate_payload(frame.type, payload)
    except HarcpError:
        failing.add("bad_payload")
        payload = None
    if abs(frame.timestamp - state["now_ms"]) > state["window_ms"]:
        failing.add("stale")
    if frame.type_name in ("execute", "capability_query", "status") and \
            frame.operation_id.hex() in state["seen_operations"]:
        failing.add("replayed")
    if frame.sequence <= state["last_sequence"].get(frame.key_id.hex(), 0):
        failing.add("sequence")
    takes = {"device": {"execute", "capability_query"},
             "controller": {"ack", "status", "capability_response", "error"}}[state["role"]]
    if frame.type_name not in takes:
        failing.add("unexpected_type")
    if payload is not None and frame.type_name in ("execute", "capability_query") and \
            payload["device"] != state["device_id"]:
        failing.add("wrong_target")
    return failing


@pytest.mark.parametrize("vector", [v for v in REJECT if v["error"] not in STRUCTURAL],
                         ids=lambda v: v["name"])
def test_reject_vector_has_exactly_the_fault_it_names(vector: dict[str, Any]) -> None:
    """Step 1 stops at its first fault (test_reject_vector_structure_is_judged_by_the_codec);
    the later checks are judged here all at once."""
    failing = every_failing_check(bytes.fromhex(vector["frame"]), vector["receiver"])
    if "_before_" in vector["name"]:
        assert len(failing) >= 2, failing
        assert min(failing, key=ORDER.index) == vector["error"]
    else:
        assert failing == {vector["error"]}


@pytest.mark.parametrize("vector", VALID, ids=lambda v: v["name"])
def test_valid_vector_has_no_fault(vector: dict[str, Any]) -> None:
    assert every_failing_check(bytes.fromhex(vector["frame"]), vector["receiver"]) == set()
