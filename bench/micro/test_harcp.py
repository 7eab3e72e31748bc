"""Micro-benchmarks of HARCP frames (hbroker_ext/harcp.pyx, hbroker/control/harcp.py):
encode + sign and verify + decode of one signed execute, and the Ed25519 operations alone, so
that the report can give the share of time spent in Ed25519 (`part_of` in `extra_info`).

The frame is the shared vector `execute_signed` (tests/vectors/harcp/valid.json): 35-byte
payload `{"device": "dev-1", "op": "led.set", "args": {"on": true}}`, 139 bytes signed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hbroker_ext.harcp import EXECUTE, decode, encode
from pytest_benchmark.fixture import BenchmarkFixture

from hbroker.control.harcp import FLAG_SIGNED, build_frame, unpack_payload, validate_payload
from hbroker.control.keys import Key

Describe = Callable[..., None]  # the `describe` fixture of conftest.py

VECTORS = Path(__file__).resolve().parents[2] / "tests" / "vectors" / "harcp"
KEYS = json.loads((VECTORS / "keys.json").read_text())
VECTOR = next(v for v in json.loads((VECTORS / "valid.json").read_text())["vectors"]
              if v["name"] == "execute_signed")
RAW = bytes.fromhex(VECTOR["frame"])
FIELDS = VECTOR["fields"]
KEY = Key.from_seed(bytes.fromhex(KEYS["controller"]["seed"]))
PUBLIC = KEY.public_only()
PAYLOAD: dict[str, Any] = {"device": "dev-1", "op": "led.set", "args": {"on": True}}
OPERATION_ID = bytes.fromhex(FIELDS["operation_id"])
SIGNED = RAW[:-64]
SIGN_LABEL = "encode + sign (`build_frame`: msgpack, header, Ed25519)"
VERIFY_LABEL = "verify + decode (`decode`, Ed25519, msgpack, §3 checks)"


def encode_and_sign() -> bytes:
    return build_frame(EXECUTE, PAYLOAD, key=KEY, operation_id=OPERATION_ID,
                       timestamp=FIELDS["timestamp"], sequence=FIELDS["sequence"])


def verify_and_decode() -> dict[str, Any]:
    frame = decode(RAW, 1024)
    if not PUBLIC.verify(frame.signed_bytes, frame.signature):
        raise AssertionError("bad signature")
    payload = unpack_payload(frame.payload)
    validate_payload(frame.type, payload)
    return payload


@pytest.mark.benchmark(group="harcp")
def test_harcp_encode_and_sign(benchmark: BenchmarkFixture, describe: Describe) -> None:
    describe(SIGN_LABEL, 1, "frame")
    assert benchmark(encode_and_sign) == RAW


@pytest.mark.benchmark(group="harcp")
def test_harcp_ed25519_sign(benchmark: BenchmarkFixture, describe: Describe) -> None:
    describe("Ed25519 sign alone (pynacl, 100 bytes)")
    benchmark.extra_info["part_of"] = SIGN_LABEL
    assert benchmark(KEY.sign, SIGNED) == RAW[-64:]


@pytest.mark.benchmark(group="harcp")
def test_harcp_encode_only(benchmark: BenchmarkFixture, describe: Describe) -> None:
    describe("encode alone (`encode`, payload already packed)")
    body = bytes.fromhex(FIELDS["payload_hex"])
    assert benchmark(encode, EXECUTE, FLAG_SIGNED, OPERATION_ID, FIELDS["timestamp"],
                     FIELDS["sequence"], KEY.key_id, body) == SIGNED


@pytest.mark.benchmark(group="harcp")
def test_harcp_verify_and_decode(benchmark: BenchmarkFixture, describe: Describe) -> None:
    describe(VERIFY_LABEL, 1, "frame")
    assert benchmark(verify_and_decode) == PAYLOAD


@pytest.mark.benchmark(group="harcp")
def test_harcp_ed25519_verify(benchmark: BenchmarkFixture, describe: Describe) -> None:
    describe("Ed25519 verify alone (pynacl, 100 bytes)")
    benchmark.extra_info["part_of"] = VERIFY_LABEL
    assert benchmark(PUBLIC.verify, SIGNED, RAW[-64:]) is True


@pytest.mark.benchmark(group="harcp")
def test_harcp_decode_only(benchmark: BenchmarkFixture, describe: Describe) -> None:
    describe("decode alone (`decode`, structure only)")
    frame = benchmark(decode, RAW, 1024)
    assert frame.signed_length == len(RAW) - 64
