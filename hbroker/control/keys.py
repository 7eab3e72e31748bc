"""HARCP Ed25519 keys and their files (docs/harcp.md §7).

A key file is text, one `name = "value"` per line, `#` comments: a TOML subset that a C
program parses line by line. `NAME.key` holds the secret seed and is 0600; `NAME.pub` holds
only the public key. A file with a `secret` that group or others can access is refused.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

ALGORITHM = "ed25519"
KEY_ID_SIZE = 8

_LINE = re.compile(r'^\s*([a-z_]+)\s*=\s*"([^"]*)"\s*(?:#.*)?$')


class KeyFileError(Exception):
    """A key file that cannot be used: unreadable, malformed, inconsistent or too open."""


def key_id_of(public: bytes) -> bytes:
    """The first 8 bytes of SHA-256 of the 32-byte Ed25519 public key (§1)."""
    return hashlib.sha256(public).digest()[:KEY_ID_SIZE]


@dataclass(frozen=True)
class Key:
    """An Ed25519 public key with its key id, and the secret seed when this side signs."""

    public: bytes
    seed: bytes | None = field(default=None, repr=False)

    @property
    def key_id(self) -> bytes:
        return key_id_of(self.public)

    @property
    def can_sign(self) -> bool:
        return self.seed is not None

    @classmethod
    def generate(cls) -> Key:
        signing = SigningKey.generate()
        return cls(bytes(signing.verify_key), bytes(signing))

    @classmethod
    def from_seed(cls, seed: bytes) -> Key:
        return cls(bytes(SigningKey(seed).verify_key), seed)

    def public_only(self) -> Key:
        return Key(self.public)

    @cached_property
    def _signing_key(self) -> SigningKey:
        if self.seed is None:
            raise ValueError(f"key {self.key_id.hex()} has no secret: it cannot sign")
        return SigningKey(self.seed)

    @cached_property
    def _verify_key(self) -> VerifyKey:
        return VerifyKey(self.public)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of `message`."""
        return self._signing_key.sign(message).signature

    def verify(self, message: bytes | memoryview, signature: bytes | memoryview) -> bool:
        try:
            self._verify_key.verify(bytes(message), bytes(signature))
        except BadSignatureError:
            return False
        return True


def key_file_text(key: Key, with_secret: bool) -> str:
    lines = ["# HARCP Ed25519 key" + (" (secret: keep it 0600)" if with_secret else ""),
             f'algorithm = "{ALGORITHM}"',
             f'key_id = "{key.key_id.hex()}"',
             f'public = "{key.public.hex()}"']
    if with_secret:
        assert key.seed is not None
        lines.append(f'secret = "{key.seed.hex()}"')
    return "\n".join(lines) + "\n"


def write_key_files(key: Key, name: str, directory: Path) -> tuple[Path, Path]:
    """Write `NAME.key` (0600, with the secret) and `NAME.pub` (0644); never overwrite."""
    if not name or "/" in name or name.startswith("."):
        raise KeyFileError(f"bad key name {name!r}")
    directory.mkdir(parents=True, exist_ok=True)
    secret_path = directory / f"{name}.key"
    public_path = directory / f"{name}.pub"
    for path in (secret_path, public_path):
        if path.exists():
            raise KeyFileError(f"{path} exists: not overwriting a key")
    _write_new(secret_path, key_file_text(key, True), 0o600)
    _write_new(public_path, key_file_text(key, False), 0o644)
    return secret_path, public_path


def _write_new(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have taken bits away from a 0644 file
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def parse_key_text(text: str, source: str = "<key>") -> Key:
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise KeyFileError(f"{source}:{number}: expected name = \"value\"")
        if match[1] in values:
            raise KeyFileError(f"{source}:{number}: {match[1]} given twice")
        values[match[1]] = match[2]
    if values.get("algorithm") != ALGORITHM:
        raise KeyFileError(f"{source}: algorithm must be \"{ALGORITHM}\"")
    try:
        public = bytes.fromhex(values["public"])
        seed = bytes.fromhex(values["secret"]) if "secret" in values else None
        key_id = bytes.fromhex(values["key_id"]) if "key_id" in values else None
    except KeyError:
        raise KeyFileError(f"{source}: no public key") from None
    except ValueError:
        raise KeyFileError(f"{source}: a value is not hex") from None
    if len(public) != 32 or (seed is not None and len(seed) != 32):
        raise KeyFileError(f"{source}: public and secret are 32 bytes (64 hex digits)")
    if seed is not None and bytes(SigningKey(seed).verify_key) != public:
        raise KeyFileError(f"{source}: the public key does not belong to the secret")
    key = Key(public, seed)
    if key_id is not None and key_id != key.key_id:
        raise KeyFileError(f"{source}: key_id {key_id.hex()} is not the public key's "
                           f"({key.key_id.hex()})")
    return key


def read_key_file(path: Path | str) -> Key:
    """Read a `.key` or `.pub` file. A file holding a secret must be accessible by its owner
    only (no group or other permission bit), as ssh requires of private keys."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            mode = os.fstat(f.fileno()).st_mode
            text = f.read()
    except OSError as exc:
        raise KeyFileError(f"{path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise KeyFileError(f"{path}: not a text file") from None
    key = parse_key_text(text, str(path))
    if key.seed is not None and stat.S_IMODE(mode) & 0o077:
        raise KeyFileError(f"{path}: holds a secret key and is accessible by group or others "
                           f"(mode {stat.S_IMODE(mode):04o}); chmod 600 it")
    return key
