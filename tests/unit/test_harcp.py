"""The HARCP library (hbroker/control/): key files, the signer's persistent sequence, and the
receiver's state (rotation, seen cache, answers to refusals). The checks' order is pinned by
the shared vectors (test_harcp_vectors.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from hbroker.control.harcp import (
    ACK,
    CAPABILITY_QUERY,
    ERROR,
    EXECUTE,
    STATUS,
    HarcpError,
    Receiver,
    SequenceStore,
    Signer,
    build_frame,
    error_answer,
    sequence_path_for,
    unpack_payload,
)
from hbroker.control.keys import (
    Key,
    KeyFileError,
    parse_key_text,
    read_key_file,
    write_key_files,
)

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_764_000_000_000
CONTROLLER = Key.from_seed(b"c" * 32)
CONTROLLER_NEXT = Key.from_seed(b"n" * 32)
DEVICE = Key.from_seed(b"d" * 32)


def execute(key: Key | None, sequence: int, device: str = "dev-1",
            operation_id: bytes | None = None, timestamp: int = NOW) -> bytes:
    return build_frame(EXECUTE, {"device": device, "op": "led.set", "args": {"on": True}},
                       key=key, operation_id=operation_id or uuid.uuid4().bytes,
                       timestamp=timestamp, sequence=sequence)


def device_receiver(*keys: Key, **kw: object) -> Receiver:
    return Receiver("device", "dev-1", keys or [CONTROLLER], clock=lambda: NOW, **kw)


def refusal(receiver: Receiver, raw: bytes) -> HarcpError:
    with pytest.raises(HarcpError) as refused:
        receiver.receive(raw)
    return refused.value


# -- key files ----------------------------------------------------------------------------
def test_generated_key_files_are_0600_secret_and_0644_public(tmp_path: Path) -> None:
    key = Key.generate()
    secret, public = write_key_files(key, "controller", tmp_path / "keys")
    assert (secret.stat().st_mode & 0o777, public.stat().st_mode & 0o777) == (0o600, 0o644)
    assert read_key_file(secret) == key
    assert read_key_file(public) == key.public_only() and not read_key_file(public).can_sign
    assert "secret" not in public.read_text()


def test_generating_never_overwrites_a_key(tmp_path: Path) -> None:
    write_key_files(Key.generate(), "k", tmp_path)
    before = (tmp_path / "k.key").read_text()
    with pytest.raises(KeyFileError, match="exists"):
        write_key_files(Key.generate(), "k", tmp_path)
    assert (tmp_path / "k.key").read_text() == before


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o601, 0o610])
def test_secret_key_file_accessible_by_group_or_others_is_refused(tmp_path: Path,
                                                                  mode: int) -> None:
    secret, public = write_key_files(Key.generate(), "k", tmp_path)
    secret.chmod(mode)
    with pytest.raises(KeyFileError, match="accessible by group or others"):
        read_key_file(secret)
    public.chmod(0o644)
    assert read_key_file(public).public


@pytest.mark.parametrize("text, message", [
    ('algorithm = "rsa"\npublic = "00"\n', "algorithm"),
    ('algorithm = "ed25519"\n', "no public key"),
    ('algorithm = "ed25519"\npublic = "zz"\n', "not hex"),
    ('algorithm = "ed25519"\npublic = "00"\n', "32 bytes"),
    ('algorithm = "ed25519"\npublic: "00"\n', "expected name"),
    (f'algorithm = "ed25519"\npublic = "{CONTROLLER.public.hex()}"\nkey_id = "0011223344556677"'
     "\n", "key_id"),
    (f'algorithm = "ed25519"\npublic = "{CONTROLLER.public.hex()}"\n'
     f'secret = "{DEVICE.seed.hex()}"\n', "does not belong"),
    (f'algorithm = "ed25519"\npublic = "{CONTROLLER.public.hex()}"\n'
     f'public = "{CONTROLLER.public.hex()}"\n', "twice"),
])
def test_bad_key_file_text_is_refused_with_its_reason(text: str, message: str) -> None:
    with pytest.raises(KeyFileError, match=message):
        parse_key_text(text)


def test_key_file_takes_comments_and_blank_lines() -> None:
    text = (f'# a key\n\nalgorithm = "ed25519"   # the only one\n'
            f'key_id = "{CONTROLLER.key_id.hex()}"\npublic = "{CONTROLLER.public.hex()}"\n')
    assert parse_key_text(text) == CONTROLLER.public_only()


# -- the signer's sequence ----------------------------------------------------------------
def test_sequence_persists_across_signer_instances(tmp_path: Path) -> None:
    secret, _ = write_key_files(CONTROLLER, "controller", tmp_path)
    first = Signer.from_key_file(secret)
    sequences = [codec_sequence(first.frame(STATUS, {"health": "ok"})) for _ in range(3)]
    second = Signer.from_key_file(secret)
    sequences.append(codec_sequence(second.frame(STATUS, {"health": "ok"})))
    assert sequences == [1, 2, 3, 4]
    assert sequence_path_for(secret).read_text() == "4\n"


def codec_sequence(raw: bytes) -> int:
    return int.from_bytes(raw[27:31], "big")


def test_concurrent_processes_never_share_a_sequence(tmp_path: Path) -> None:
    store = tmp_path / "k.key.seq"
    script = ("import sys; from pathlib import Path; from hbroker.control.harcp import "
              "SequenceStore; s = SequenceStore(Path(sys.argv[1])); "
              "print(' '.join(str(s.next()) for _ in range(25)))")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(store)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}) for _ in range(4)]
    taken = [int(n) for p in procs for n in p.communicate(timeout=60)[0].split()]
    assert sorted(taken) == list(range(1, 101))
    assert SequenceStore(store).current() == 100


def test_corrupt_sequence_state_stops_the_signer(tmp_path: Path) -> None:
    store = SequenceStore(tmp_path / "k.key.seq")
    store.path.write_text("garbage\n")
    with pytest.raises(ValueError, match="not a sequence number"):
        store.next()


def test_exhausted_sequence_asks_for_a_rotation(tmp_path: Path) -> None:
    store = SequenceStore(tmp_path / "k.key.seq")
    store.path.write_text(f"{2**32 - 1}\n")
    with pytest.raises(ValueError, match="rotate the key"):
        store.next()


def test_signer_refuses_a_public_only_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot sign"):
        Signer(CONTROLLER.public_only(), SequenceStore(tmp_path / "s"))


# -- the receiver -------------------------------------------------------------------------
def test_rotation_accepts_both_keys_with_their_own_sequences_then_only_the_new() -> None:
    receiver = device_receiver(CONTROLLER, CONTROLLER_NEXT)
    assert receiver.receive(execute(CONTROLLER, 500)).verified
    assert receiver.receive(execute(CONTROLLER_NEXT, 1)).sequence == 1
    receiver.distrust(CONTROLLER.key_id)
    assert refusal(receiver, execute(CONTROLLER, 501)).name == "unknown_key"
    assert receiver.receive(execute(CONTROLLER_NEXT, 2)).sequence == 2


def test_seen_cache_stays_within_its_capacity_and_the_sequence_still_holds() -> None:
    receiver = device_receiver(seen_capacity=3)
    frames = [execute(CONTROLLER, n) for n in range(1, 6)]
    for raw in frames:
        receiver.receive(raw)
    assert len(receiver.seen) == 3
    assert refusal(receiver, frames[0]).name == "sequence"  # its id was dropped
    assert refusal(receiver, frames[-1]).name == "replayed"


def test_seen_entries_expire_once_a_replay_would_be_stale() -> None:
    clock = [NOW]
    receiver = Receiver("device", "dev-1", [CONTROLLER], clock=lambda: clock[0])
    receiver.receive(execute(CONTROLLER, 1))
    clock[0] = NOW + 300_001
    receiver.receive(execute(CONTROLLER, 2, timestamp=clock[0]))
    assert len(receiver.seen) == 1


def test_unsigned_frames_only_where_allowed() -> None:
    assert refusal(device_receiver(), execute(None, 1)).name == "unsigned_refused"
    message = device_receiver(allow_unsigned=True).receive(execute(None, 1))
    assert not message.verified and not message.signed


def test_controller_without_device_keys_reads_answers_unverified() -> None:
    receiver = Receiver("controller", "dev-1", verify_signatures=False, allow_unsigned=True,
                        clock=lambda: NOW)
    raw = build_frame(ACK, {"status": "done"}, key=DEVICE, operation_id=bytes(16),
                      timestamp=NOW, sequence=1)
    message = receiver.receive(raw)
    assert message.signed and not message.verified


def test_refused_execute_is_answered_with_an_error_carrying_its_operation_id() -> None:
    operation_id = uuid.uuid4().bytes
    error = refusal(device_receiver(), execute(CONTROLLER, 1, device="dev-2",
                                               operation_id=operation_id))
    assert error.name == "wrong_target" and error.frame.operation_id == operation_id
    assert error_answer(error) == {"code": 15, "reason": "wrong_target",
                                   "detail": "for 'dev-2', this is 'dev-1'"}


def test_structural_refusals_and_refused_answers_get_no_error_frame() -> None:
    assert error_answer(refusal(device_receiver(), execute(CONTROLLER, 1)[:30])) is None
    ack = build_frame(ACK, {"status": "done"}, key=CONTROLLER, operation_id=bytes(16),
                      timestamp=NOW, sequence=1)
    error = refusal(device_receiver(), ack)
    assert error.name == "unexpected_type" and error_answer(error) is None


def test_capability_query_and_error_frames_round_trip_through_the_receiver() -> None:
    query = build_frame(CAPABILITY_QUERY, {"device": "dev-1"}, key=CONTROLLER,
                        operation_id=bytes(16), timestamp=NOW, sequence=1)
    assert device_receiver().receive(query).payload == {"device": "dev-1"}
    answer = build_frame(ERROR, {"code": 9, "reason": "unknown_key"}, key=DEVICE,
                         operation_id=bytes(16), timestamp=NOW, sequence=1)
    controller = Receiver("controller", "dev-1", [DEVICE], clock=lambda: NOW)
    assert controller.receive(answer).payload["reason"] == "unknown_key"


@pytest.mark.parametrize("payload", [b"\x81\xa1a\xd4\x01\x00",   # fixext 1
                                     b"\x81\xa1a\xd6\xff\x00\x00\x00\x00",  # timestamp ext
                                     b"\x81\xa1a\xc7\x05\xff\x00\x00\x00\x00\x00",  # bad ts
                                     b"\x81\x91\x01\x01",  # array key
                                     b"\x82\xa1a\x01\xa1a\x02",
                                     b"\xdf\xff\xff\xff\xff"])
def test_payload_rules_refuse_what_two_parsers_could_read_differently(payload: bytes) -> None:
    with pytest.raises(HarcpError) as refused:
        unpack_payload(payload)
    assert refused.value.name == "bad_payload"


def test_refusal_is_logged_with_its_name_key_id_and_operation_id(
        caplog: pytest.LogCaptureFixture) -> None:
    operation_id = uuid.uuid4().bytes
    with caplog.at_level("INFO", logger="hbroker.control.harcp"):
        refusal(device_receiver(), execute(DEVICE, 1, operation_id=operation_id))
    (record,) = caplog.records
    assert "unknown_key" in record.getMessage()
    assert DEVICE.key_id.hex() in record.getMessage()
    assert operation_id.hex() in record.getMessage()


def test_cli_keys_generate_then_show(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from hbroker.cli import main

    assert main(["keys", "generate", "gw-7", "--dir", str(tmp_path)]) == 0
    key = read_key_file(tmp_path / "gw-7.key")
    assert f"key id: {key.key_id.hex()}" in capsys.readouterr().out
    assert main(["keys", "show", str(tmp_path / "gw-7.pub")]) == 0
    assert capsys.readouterr().out == (f"key id: {key.key_id.hex()}\npublic: "
                                       f"{key.public.hex()}\nsecret: no\n")
    assert main(["keys", "generate", "gw-7", "--dir", str(tmp_path)]) == 2
    assert "not overwriting" in capsys.readouterr().err
    (tmp_path / "gw-7.key").chmod(0o644)
    assert main(["keys", "show", str(tmp_path / "gw-7.key")]) == 2
    assert "chmod 600" in capsys.readouterr().err
