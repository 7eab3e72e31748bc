"""Bearer tokens of the admin listener: made by `hbroker token`, stored in `[[admin.tokens]]`
only as a salted scrypt hash, checked in constant time.

A hash is the self-describing string `scrypt$N$r$p$SALT$KEY` (salt and key in unpadded
base64url), so the work factor can grow without breaking the tokens already issued.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

SCHEME = "scrypt"
# scrypt's interactive-login parameters (N = 2^14, r = 8, p = 1: 16 MiB, about 50 ms). A token
# is 256 random bits, so the work factor guards no guessable secret; it makes a leaked
# configuration file cost an attacker as much as any password store would.
N, R, P = 1 << 14, 8, 1
SALT_BYTES = 16
KEY_BYTES = 32
TOKEN_BYTES = 32
MAXMEM = 64 * 1024 * 1024


class TokenHashError(ValueError):
    """A `hash` value that is not `scrypt$N$r$p$SALT$KEY`."""


@dataclass(frozen=True, slots=True)
class TokenHash:
    n: int
    r: int
    p: int
    salt: bytes
    key: bytes

    def matches(self, token: str) -> bool:
        """Whether `token` is the one hashed (compared in constant time)."""
        derived = _derive(token, self.salt, self.n, self.r, self.p, len(self.key))
        return hmac.compare_digest(derived, self.key)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _derive(token: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(token.encode(), salt=salt, n=n, r=r, p=p, maxmem=MAXMEM,
                          dklen=length)


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    key = _derive(token, salt, N, R, P, KEY_BYTES)
    return f"{SCHEME}${N}${R}${P}${_b64(salt)}${_b64(key)}"


def parse_hash(text: str) -> TokenHash:
    parts = text.split("$")
    expected = "expected scrypt$N$r$p$SALT$KEY as `hbroker token` prints it"
    if len(parts) != 6 or parts[0] != SCHEME:
        raise TokenHashError(f'{expected}, got "{text}"')
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt, key = _unb64(parts[4]), _unb64(parts[5])
    except ValueError:
        raise TokenHashError(f'{expected}, got "{text}"') from None
    if n < 2 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16 \
            or 128 * r * n > MAXMEM // 2 or len(salt) < 8 or len(key) < 16:
        raise TokenHashError(f'{expected} (N a power of 2, salt of 8 bytes or more, key of '
                             f'16 or more), got "{text}"')
    return TokenHash(n, r, p, salt, key)
