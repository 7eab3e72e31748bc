"""Password file, `hbroker passwd`, and the SCRAM-SHA-256 exchange."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hbroker.auth.passwords import (
    PasswordFile,
    PasswordFileError,
    make_entry,
    parse_entry,
    read_password_file,
)
from hbroker.auth.scram import (
    ScramClient,
    ScramError,
    ScramServer,
    decode_saslname,
    encode_saslname,
)
from hbroker.cli import main

FAST = 10  # scrypt cost for the tests: log2(N) = 10


def passwd(*args: str) -> int:
    return main(["passwd", *args])


def test_passwd_add_list_delete_round_trip(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "passwords")
    assert passwd("add", path, "alice", "--password", "wonderland", "--cost", str(FAST)) == 0
    assert passwd("add", path, "bob", "--password", "builder", "--cost", str(FAST),
                  "--scram") == 0
    assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600
    text = Path(path).read_text()
    assert "wonderland" not in text and "builder" not in text
    assert text.startswith("alice:$scrypt$ln=10,r=8,p=1$")
    capsys.readouterr()
    assert passwd("list", path) == 0
    assert capsys.readouterr().out.splitlines() == ["alice", "bob (scram-sha-256)"]
    users = PasswordFile(path)
    assert users.check("alice", b"wonderland")
    assert not users.check("alice", b"builder")
    assert users.check("bob", b"builder")
    assert users.scram("bob") is not None and users.scram("alice") is None
    # add of an existing user changes its password
    assert passwd("add", path, "alice", "--password", "looking-glass", "--cost", str(FAST)) == 0
    assert PasswordFile(path).check("alice", b"looking-glass")
    assert not PasswordFile(path).check("alice", b"wonderland")
    assert passwd("delete", path, "alice") == 0
    assert list(read_password_file(path)) == ["bob"]
    assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600
    assert passwd("delete", path, "alice") == 1
    assert "no user 'alice'" in capsys.readouterr().err


def test_passwd_prompts_twice_and_refuses_a_mismatch(tmp_path: Path) -> None:
    from hbroker.auth.passwd import run
    from hbroker.cli import build_parser

    path = str(tmp_path / "passwords")
    args = build_parser().parse_args(["passwd", "add", path, "carol", "--cost", str(FAST)])
    answers = iter(["one", "two"])
    assert run(args, prompt=lambda _: next(answers)) == 1
    assert not Path(path).exists()
    answers = iter(["same", "same"])
    assert run(args, prompt=lambda _: next(answers)) == 0
    assert PasswordFile(path).check("carol", b"same")


def test_passwd_changes_are_audited_when_the_config_has_an_audit_file(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    config = tmp_path / "hbroker.toml"
    config.write_text(f'[audit]\nfile = "{audit}"\n')
    path = str(tmp_path / "passwords")
    assert passwd("add", path, "dave", "--password", "x", "--cost", str(FAST),
                  "-c", str(config)) == 0
    assert passwd("delete", path, "dave", "-c", str(config)) == 0
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(r["event"], r["username"]) for r in records] == [("passwd_add", "dave"),
                                                              ("passwd_delete", "dave")]


def test_unknown_users_and_missing_passwords_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "passwords"
    path.write_text(make_entry("erin", b"pw", ln=FAST).encode() + "\n")
    users = PasswordFile(path)
    assert users.check("erin", b"pw")
    assert not users.check("erin", None)
    assert not users.check("frank", b"pw")
    assert not users.check("frank", None)


@pytest.mark.parametrize(("line", "message"), [
    ("alice:secret", "plaintext passwords are not accepted"),
    ("alice:$md5$abc", "unknown or repeated hash scheme"),
    ("alice", "expected user:hash"),
    ("alice:$scrypt$ln=40,r=8,p=1$AAAA$AAAA", "out of range"),
    ("alice:$scrypt$ln=10,r=8,p=1$!!$AAAA", "not valid base64"),
])
def test_bad_password_file_lines_name_the_file_and_line(tmp_path: Path, line: str,
                                                        message: str) -> None:
    path = tmp_path / "passwords"
    good = make_entry("zed", b"pw", ln=FAST).encode()
    path.write_text(f"# users\n{good}\n{line}\n")
    with pytest.raises(PasswordFileError) as info:
        read_password_file(path)
    assert f"{path}:3:" in str(info.value)
    assert message.lower() in str(info.value).lower()


@settings(max_examples=25, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=":\r\n"),
               min_size=1, max_size=12).filter(lambda u: not u.startswith("#")),
       st.binary(min_size=1, max_size=20))
def test_entries_survive_encoding(username: str, password: bytes) -> None:
    entry = make_entry(username, password, scram=True, ln=FAST)
    assert parse_entry(entry.encode()) == entry
    assert entry.scrypt.matches(password)
    assert not entry.scrypt.matches(password + b"x")


# -- SCRAM-SHA-256 ---------------------------------------------------------------------


def _server(tmp_path: Path, password: bytes = b"pencil") -> ScramServer:
    path = tmp_path / "passwords"
    path.write_text(make_entry("user", password, scram=True, ln=FAST).encode() + "\n")
    return ScramServer(PasswordFile(path).scram)


def test_scram_exchange_succeeds_and_the_client_verifies_the_server(tmp_path: Path) -> None:
    server = _server(tmp_path)
    client = ScramClient("user", "pencil")
    server_first, state = server.client_first(client.first())
    assert server_first.startswith(b"r=" + client.nonce.encode())
    assert b",s=" in server_first and b",i=4096" in server_first
    server_final = server.client_final(client.final(server_first), state)
    assert client.verify(server_final)
    assert state.username == "user"


def test_scram_refuses_a_wrong_password_and_an_unknown_user(tmp_path: Path) -> None:
    server = _server(tmp_path)
    for username, password in (("user", "wrong"), ("nobody", "pencil")):
        client = ScramClient(username, password)
        server_first, state = server.client_first(client.first())
        with pytest.raises(ScramError):
            server.client_final(client.final(server_first), state)


def test_scram_unknown_user_gets_a_stable_salt(tmp_path: Path) -> None:
    server = _server(tmp_path)
    salts = {server.client_first(ScramClient("nobody", "x").first())[0].split(b",")[1]
             for _ in range(3)}
    assert len(salts) == 1


def test_scram_refuses_a_replayed_proof_with_another_nonce(tmp_path: Path) -> None:
    server = _server(tmp_path)
    client = ScramClient("user", "pencil")
    server_first, _ = server.client_first(client.first())
    final = client.final(server_first)
    _, other_state = server.client_first(client.first())  # a second exchange, new nonce
    with pytest.raises(ScramError, match="nonce"):
        server.client_final(final, other_state)


def test_scram_matches_rfc7677_test_vector() -> None:
    # RFC 7677 section 3: user "user", password "pencil", the given nonces and salt.
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, 4096)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    from hbroker.auth.passwords import ScramCredential, scram_keys

    stored_key, server_key = scram_keys(b"pencil", salt, 4096)
    assert stored_key == hashlib.sha256(client_key).digest()
    credential = ScramCredential(4096, salt, stored_key, server_key)
    server = ScramServer(lambda name: credential if name == "user" else None)
    client = ScramClient("user", "pencil", nonce="rOprNGfwEbeRWgbNEkqO")
    server_first, state = server.client_first(client.first())
    # Put the RFC's server nonce in place of ours to reproduce its messages.
    rfc_first = (b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                 b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    state.server_first = rfc_first.decode()
    state.nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    final = client.final(rfc_first)
    assert final == (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                     b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    assert server.client_final(final, state) == \
        b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def test_sasl_names_escape_commas_and_equals() -> None:
    assert encode_saslname("a,b=c") == "a=2Cb=3Dc"
    assert decode_saslname("a=2Cb=3Dc") == "a,b=c"
    with pytest.raises(ScramError):
        decode_saslname("a=41")
