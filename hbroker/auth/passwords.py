"""The password file: one `user:credentials` line per user, never a plaintext password.

    alice:$scrypt$ln=14,r=8,p=1$<salt>$<hash>
    bob:$scrypt$ln=14,r=8,p=1$<salt>$<hash>;$scram-sha-256$i=4096$<salt>$<StoredKey>$<ServerKey>

Salts and keys are standard base64. `$scrypt$` is the password hash checked for CONNECT's
username/password (hashlib.scrypt; its cost parameters are stored with each hash, so raising the
default later leaves old entries valid). `$scram-sha-256$` is the optional SCRAM credential of
RFC 5802/7677 (what the server stores instead of the password) for MQTT 5.0 enhanced
authentication. A username cannot contain `:`; lines starting with `#` and blank lines are
ignored. The file is written atomically (temporary file, fsync, rename) with mode 0600.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

SCRYPT_LN = 14          # N = 2**14: 16 MiB of memory and ~50 ms per check with r = 8
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_SALT_BYTES = 16
SCRYPT_KEY_BYTES = 32
SCRAM_ITERATIONS = 4096  # the minimum RFC 7677 asks for
SCRAM_SALT_BYTES = 16
MAX_SCRYPT_LN = 20


class PasswordFileError(Exception):
    """A password file that cannot be used; the message names the file and the line."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError(f"not valid base64: {text[:16]!r}") from None


@dataclass(frozen=True, slots=True)
class ScryptHash:
    ln: int
    r: int
    p: int
    salt: bytes
    key: bytes

    def encode(self) -> str:
        return f"$scrypt$ln={self.ln},r={self.r},p={self.p}${_b64(self.salt)}${_b64(self.key)}"

    def matches(self, password: bytes) -> bool:
        """Constant time in the password: the whole key is always computed and compared."""
        return hmac.compare_digest(_scrypt(password, self.salt, self.ln, self.r, self.p,
                                           len(self.key)), self.key)


@dataclass(frozen=True, slots=True)
class ScramCredential:
    """RFC 5802 section 3: StoredKey = H(ClientKey), ServerKey = HMAC(SaltedPassword, ...)."""

    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes

    def encode(self) -> str:
        return (f"$scram-sha-256$i={self.iterations}${_b64(self.salt)}$"
                f"{_b64(self.stored_key)}${_b64(self.server_key)}")


@dataclass(frozen=True, slots=True)
class PasswordEntry:
    username: str
    scrypt: ScryptHash
    scram: ScramCredential | None = None

    def encode(self) -> str:
        line = f"{self.username}:{self.scrypt.encode()}"
        if self.scram is not None:
            line += ";" + self.scram.encode()
        return line


def _scrypt(password: bytes, salt: bytes, ln: int, r: int, p: int, dklen: int) -> bytes:
    n = 1 << ln
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=dklen,
                          maxmem=256 * r * n + 1024 * 1024)


def hash_password(password: bytes, ln: int = SCRYPT_LN) -> ScryptHash:
    salt = secrets.token_bytes(SCRYPT_SALT_BYTES)
    key = _scrypt(password, salt, ln, SCRYPT_R, SCRYPT_P, SCRYPT_KEY_BYTES)
    return ScryptHash(ln, SCRYPT_R, SCRYPT_P, salt, key)


def scram_keys(password: bytes, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """(StoredKey, ServerKey) for SCRAM-SHA-256 (no SASLprep: the password's UTF-8 bytes)."""
    salted = hashlib.pbkdf2_hmac("sha256", password, salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    return hashlib.sha256(client_key).digest(), server_key


def scram_credential(password: bytes, iterations: int = SCRAM_ITERATIONS) -> ScramCredential:
    salt = secrets.token_bytes(SCRAM_SALT_BYTES)
    stored_key, server_key = scram_keys(password, salt, iterations)
    return ScramCredential(iterations, salt, stored_key, server_key)


def make_entry(username: str, password: bytes, *, scram: bool = False, ln: int = SCRYPT_LN,
               scram_iterations: int = SCRAM_ITERATIONS) -> PasswordEntry:
    check_username(username)
    return PasswordEntry(username, hash_password(password, ln),
                         scram_credential(password, scram_iterations) if scram else None)


def check_username(username: str) -> None:
    if not username:
        raise ValueError("a username cannot be empty")
    if ":" in username or "\n" in username or "\r" in username:
        raise ValueError(f"a username cannot contain ':' or a line break: {username!r}")
    if username.startswith("#"):
        raise ValueError(f"a username cannot start with '#': {username!r}")


def _parse_scrypt(fields: list[str]) -> ScryptHash:
    # ["", "scrypt", "ln=14,r=8,p=1", salt, key]
    if len(fields) != 5:
        raise ValueError("expected $scrypt$ln=N,r=R,p=P$SALT$HASH")
    params = dict(item.partition("=")[::2] for item in fields[2].split(","))
    if set(params) != {"ln", "r", "p"}:
        raise ValueError("expected scrypt parameters ln, r and p")
    ln, r, p = int(params["ln"]), int(params["r"]), int(params["p"])
    if not (1 <= ln <= MAX_SCRYPT_LN and 1 <= r <= 64 and 1 <= p <= 16):
        raise ValueError(f"scrypt parameters out of range: ln={ln}, r={r}, p={p}")
    salt, key = _unb64(fields[3]), _unb64(fields[4])
    if len(key) < 16 or not salt:
        raise ValueError("scrypt salt or hash too short")
    return ScryptHash(ln, r, p, salt, key)


def _parse_scram(fields: list[str]) -> ScramCredential:
    # ["", "scram-sha-256", "i=4096", salt, stored_key, server_key]
    if len(fields) != 6 or not fields[2].startswith("i="):
        raise ValueError("expected $scram-sha-256$i=ITERATIONS$SALT$STOREDKEY$SERVERKEY")
    iterations = int(fields[2][2:])
    if iterations < 4096:
        raise ValueError(f"SCRAM iterations below 4096: {iterations}")
    stored_key, server_key = _unb64(fields[4]), _unb64(fields[5])
    if len(stored_key) != 32 or len(server_key) != 32:
        raise ValueError("SCRAM keys must be 32 bytes")
    return ScramCredential(iterations, _unb64(fields[3]), stored_key, server_key)


def parse_entry(line: str) -> PasswordEntry:
    username, sep, rest = line.partition(":")
    if not sep:
        raise ValueError("expected user:hash")
    check_username(username)
    scrypt_hash: ScryptHash | None = None
    scram: ScramCredential | None = None
    for cred in rest.split(";"):
        fields = cred.split("$")
        scheme = fields[1] if len(fields) > 1 and not fields[0] else ""
        try:
            if scheme == "scrypt" and scrypt_hash is None:
                scrypt_hash = _parse_scrypt(fields)
            elif scheme == "scram-sha-256" and scram is None:
                scram = _parse_scram(fields)
            else:
                raise ValueError(f"unknown or repeated hash scheme {scheme or cred[:12]!r} "
                                 "(plaintext passwords are not accepted)")
        except ValueError as exc:
            raise ValueError(f"{scheme or 'hash'}: {exc}") from None
    if scrypt_hash is None:
        raise ValueError("no $scrypt$ hash")
    return PasswordEntry(username, scrypt_hash, scram)


def read_password_file(path: str | os.PathLike) -> dict[str, PasswordEntry]:
    """Every entry of the file, by username; a bad line is an error naming file and line."""
    where = os.fspath(path)
    try:
        text = Path(where).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PasswordFileError(f"{where}: password file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PasswordFileError(f"{where}: cannot read the password file: {exc}") from None
    entries: dict[str, PasswordEntry] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            entry = parse_entry(line)
        except ValueError as exc:
            raise PasswordFileError(f"{where}:{number}: {exc}") from None
        if entry.username in entries:
            raise PasswordFileError(f"{where}:{number}: user {entry.username!r} appears twice")
        entries[entry.username] = entry
    return entries


def write_password_file(path: str | os.PathLike, entries: dict[str, PasswordEntry]) -> None:
    """Replace the file atomically: a reader (the broker on SIGHUP) sees the old file or the
    new one, never half of one. The file is created with mode 0600."""
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=directory)
    try:
        os.fchmod(fd, stat.S_IRUSR | stat.S_IWUSR)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for entry in entries.values():
                fh.write(entry.encode() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class PasswordFile:
    """The loaded file, checked in constant time: an unknown user costs the same scrypt run
    as a known one, so timing does not tell which usernames exist."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self.entries = read_password_file(path)
        self._dummy = hash_password(secrets.token_bytes(16))

    def __len__(self) -> int:
        return len(self.entries)

    def check(self, username: str, password: bytes | None) -> bool:
        entry = self.entries.get(username)
        stored = entry.scrypt if entry is not None else self._dummy
        ok = stored.matches(password or b"")
        return ok and entry is not None and password is not None

    def scram(self, username: str) -> ScramCredential | None:
        entry = self.entries.get(username)
        return entry.scram if entry is not None else None
