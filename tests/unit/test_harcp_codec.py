"""Properties of the HARCP frame codec (hbroker_ext/harcp.pyx): encode/decode round trip, and
a decoder that answers any bytes with a Frame or a HarcpError, never anything else. The shared
vectors are in test_harcp_vectors.py."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hbroker.control.harcp import Receiver, build_frame, unpack_payload, validate_payload
from hbroker.control.keys import Key
from hbroker_ext import harcp as codec

KEY = Key.from_seed(bytes(range(32)))
OPERATION_ID = bytes(range(16))

frame_fields = st.fixed_dictionaries({
    "type": st.integers(1, 6),
    "flags": st.sampled_from([0, codec.FLAG_SIGNED]),
    "operation_id": st.binary(min_size=16, max_size=16),
    "timestamp": st.integers(0, 2**64 - 1),
    "sequence": st.integers(0, 2**32 - 1),
    "key_id": st.binary(min_size=8, max_size=8),
    "payload": st.binary(max_size=20_000),
})


@given(frame_fields, st.binary(min_size=64, max_size=64))
@example({"type": 1, "flags": 0, "operation_id": bytes(16), "timestamp": 0, "sequence": 0,
          "key_id": bytes(8), "payload": b""}, bytes(64))
@example({"type": 6, "flags": 1, "operation_id": b"\xff" * 16, "timestamp": 2**64 - 1,
          "sequence": 2**32 - 1, "key_id": b"\xff" * 8, "payload": b"\x80" * 16384},
         b"\xff" * 64)
def test_encode_then_decode_gives_back_every_field(fields: dict, signature: bytes) -> None:
    if not fields["flags"]:
        fields = {**fields, "key_id": bytes(8)}  # an unsigned frame names no key (§1)
    signed = codec.encode(fields["type"], fields["flags"], fields["operation_id"],
                          fields["timestamp"], fields["sequence"], fields["key_id"],
                          fields["payload"])
    raw = signed + (signature if fields["flags"] else b"")
    frame = codec.decode(raw, 1 << 20)
    assert (frame.version, frame.type, frame.flags) == (1, fields["type"], fields["flags"])
    assert frame.operation_id == fields["operation_id"]
    assert (frame.timestamp, frame.sequence) == (fields["timestamp"], fields["sequence"])
    assert frame.key_id == fields["key_id"]
    assert bytes(frame.payload) == fields["payload"]
    assert bytes(frame.signed_bytes) == signed and frame.signed_length == len(signed)
    assert (bytes(frame.signature) if frame.signature is not None else None) == \
        (signature if fields["flags"] else None)
    n = len(fields["payload"])
    assert len(signed) == 39 + (1 if n < 128 else 2 if n < 16384 else 3) + n


@settings(max_examples=500)
@given(st.binary(max_size=300), st.integers(0, 2048))
@example(b"\x01\x01\x00" + bytes(36) + b"\x80\x80\x80\x80", 4096)
@example(b"\x01\x01\x01" + bytes(36) + b"\xff\xff\xff\x7f", 2**30)
def test_decoder_answers_any_bytes_with_a_frame_or_a_harcp_error(raw: bytes,
                                                                 max_payload: int) -> None:
    try:
        frame = codec.decode(raw, max_payload)
    except codec.HarcpError as exc:
        assert exc.code in codec.ERROR_NAMES and exc.name == codec.ERROR_NAMES[exc.code]
        return
    assert frame.signed_length + (64 if frame.signed else 0) == len(raw)
    assert len(frame.payload) <= max_payload


def _valid_frame() -> bytes:
    return build_frame(codec.EXECUTE, {"device": "dev-1", "op": "led.set", "args": {"on": 1}},
                       key=KEY, operation_id=OPERATION_ID, timestamp=1_000_000, sequence=5)


@settings(max_examples=500)
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1,
                max_size=8),
       st.integers(0, 140), st.binary(max_size=70))
def test_mutated_valid_frames_are_refused_with_a_harcp_error_only(
        changes: list[tuple[int, int]], cut: int, tail: bytes) -> None:
    """Random byte changes, a cut and appended bytes: the codec and the whole receiver
    answer with a Frame/Message or a HarcpError; no other exception, ever."""
    raw = bytearray(_valid_frame())
    for index, value in changes:
        raw[index % len(raw)] = value
    mutated = bytes(raw[:len(raw) - cut % len(raw)]) + tail
    receiver = Receiver("device", "dev-1", [KEY], clock=lambda: 1_000_000,
                        allow_unsigned=True)
    for attempt in (lambda: codec.decode(mutated, 4096), lambda: receiver.receive(mutated)):
        try:
            attempt()
        except codec.HarcpError as exc:
            assert exc.name == codec.ERROR_NAMES[exc.code]


def test_decode_takes_bytes_bytearray_and_memoryview_without_copying_the_payload() -> None:
    raw = bytearray(_valid_frame())
    for buf in (bytes(raw), raw, memoryview(raw)):
        frame = codec.decode(buf)
        assert isinstance(frame.payload, memoryview) and frame.payload.obj is not None
        assert bytes(frame.payload) == bytes(raw[40:40 + len(frame.payload)])
    frame = codec.decode(raw)
    raw[40] ^= 0xFF  # the view sees the buffer: no copy was made
    assert frame.payload[0] == raw[40]


def test_decode_accepts_a_non_minimal_payload_length() -> None:
    signed = codec.encode(codec.STATUS, 0, OPERATION_ID, 1, 1, bytes(8), b"\x81\xa1a\x01")
    non_minimal = signed[:39] + b"\x84\x80\x00" + signed[40:]
    frame = codec.decode(non_minimal)
    assert bytes(frame.payload) == b"\x81\xa1a\x01" and frame.signed_length == 46


@pytest.mark.parametrize("operation_id, key_id", [(bytes(15), bytes(8)), (bytes(16), bytes(9))])
def test_encode_refuses_fields_that_do_not_fit_the_layout(operation_id: bytes,
                                                          key_id: bytes) -> None:
    with pytest.raises(ValueError):
        codec.encode(1, 0, operation_id, 0, 0, key_id, b"")


def test_encode_refuses_a_sequence_above_32_bits() -> None:
    with pytest.raises(OverflowError):
        codec.encode(1, 0, OPERATION_ID, 0, 2**32, bytes(8), b"")


def test_harcp_error_names_its_code_and_survives_pickling() -> None:
    error = codec.HarcpError(codec.OVERSIZE, "payload length 5000")
    assert (error.code, error.name, str(error)) == (7, "oversize",
                                                    "oversize: payload length 5000")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.code, copy.name, copy.detail) == (7, "oversize", "payload length 5000")


def test_error_table_is_the_one_of_the_spec() -> None:
    assert codec.ERROR_CODES == {
        "malformed": 1, "truncated": 2, "trailing_bytes": 3, "unsupported_version": 4,
        "unknown_type": 5, "reserved_flag": 6, "oversize": 7, "unsigned_refused": 8,
        "unknown_key": 9, "bad_signature": 10, "bad_payload": 11, "stale": 12,
        "replayed": 13, "sequence": 14, "wrong_target": 15, "unknown_op": 16,
        "unexpected_type": 17}
    assert codec.TYPES == {"execute": 1, "ack": 2, "status": 3, "capability_query": 4,
                           "capability_response": 5, "error": 6}


@settings(max_examples=300)
@given(st.binary(max_size=200), st.integers(1, 6))
def test_payload_checks_answer_any_bytes_with_a_map_or_bad_payload(payload: bytes,
                                                                   type_: int) -> None:
    try:
        value = unpack_payload(payload)
        validate_payload(type_, value)
    except codec.HarcpError as exc:
        assert exc.name == "bad_payload"
        return
    assert isinstance(value, dict) and all(type(k) is str for k in value)
