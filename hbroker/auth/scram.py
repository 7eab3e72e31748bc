"""SCRAM-SHA-256 (RFC 5802, RFC 7677) as an MQTT 5.0 enhanced authentication method.

The exchange, carried in Authentication Data (MQTT 5.0 section 4.12):

    CONNECT  client-first-message   n,,n=USER,r=CNONCE
    AUTH 0x18 server-first-message  r=CNONCE+SNONCE,s=SALT,i=ITERATIONS
    AUTH 0x18 client-final-message  c=biws,r=CNONCE+SNONCE,p=PROOF
    CONNACK   server-final-message  v=SERVER-SIGNATURE

The server holds only StoredKey and ServerKey (see hbroker.auth.passwords). Channel binding is
not supported (gs2 flag `n` or `y` only); usernames and passwords are used as UTF-8 without
SASLprep. An unknown user gets a salt derived from the username and a secret, and fails at the
proof, exactly like a wrong password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from hbroker.auth.passwords import ScramCredential

METHOD = "SCRAM-SHA-256"
NONCE_BYTES = 18


class ScramError(ValueError):
    """A malformed or failed exchange: the client is refused."""


def _attributes(message: str) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for part in message.split(","):
        key, sep, value = part.partition("=")
        if not sep or len(key) != 1:
            raise ScramError(f"malformed SCRAM attribute {part[:20]!r}")
        attrs.setdefault(key, value)
    return attrs


def decode_saslname(name: str) -> str:
    """RFC 5802 section 5.1: `=2C` is `,` and `=3D` is `=`; any other `=` is an error."""
    out = []
    i = 0
    while i < len(name):
        if name[i] == "=":
            code = name[i + 1:i + 3]
            if code == "2C":
                out.append(",")
            elif code == "3D":
                out.append("=")
            else:
                raise ScramError("bad escape in SCRAM username")
            i += 3
        else:
            out.append(name[i])
            i += 1
    return "".join(out)


def encode_saslname(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


@dataclass(slots=True)
class ServerFirst:
    """The state kept between the server-first and the client-final message."""

    username: str
    client_first_bare: str
    server_first: str
    gs2_header: str
    nonce: str
    credential: ScramCredential | None


class ScramServer:
    """The server side; `lookup(username)` gives the stored credential or None."""

    def __init__(self, lookup: object, secret: bytes | None = None) -> None:
        self.lookup = lookup
        self.secret = secret or secrets.token_bytes(32)

    def client_first(self, data: bytes) -> tuple[bytes, ServerFirst]:
        try:
            message = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ScramError("client-first-message is not UTF-8") from None
        flag, _, rest = message.partition(",")
        authzid, sep, bare = rest.partition(",")
        if not sep or flag not in ("n", "y"):
            # "p=...": channel binding, which this server does not offer.
            raise ScramError("channel binding is not supported" if flag.startswith("p=")
                             else "malformed client-first-message")
        if authzid:
            raise ScramError("authorization identity is not supported")
        attrs = _attributes(bare)
        if "m" in attrs or "n" not in attrs or "r" not in attrs or not attrs["r"]:
            raise ScramError("client-first-message needs n= and r=")
        username = decode_saslname(attrs["n"])
        lookup = self.lookup
        credential = lookup(username)  # type: ignore[operator]
        if credential is not None:
            salt, iterations = credential.salt, credential.iterations
        else:
            salt = hmac.digest(self.secret, username.encode(), "sha256")[:16]
            iterations = 4096
        nonce = attrs["r"] + base64.b64encode(secrets.token_bytes(NONCE_BYTES)).decode()
        server_first = f"r={nonce},s={base64.b64encode(salt).decode()},i={iterations}"
        state = ServerFirst(username, bare, server_first, f"{flag},{authzid},", nonce,
                            credential)
        return server_first.encode(), state

    def client_final(self, data: bytes, state: ServerFirst) -> bytes:
        """The server-final-message, or ScramError if the proof is wrong."""
        try:
            message = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ScramError("client-final-message is not UTF-8") from None
        without_proof, sep, proof_attr = message.rpartition(",p=")
        if not sep:
            raise ScramError("client-final-message has no proof")
        attrs = _attributes(without_proof)
        expected_binding = base64.b64encode(state.gs2_header.encode()).decode()
        if attrs.get("c") != expected_binding:
            raise ScramError("channel binding data does not match")
        if attrs.get("r") != state.nonce:
            raise ScramError("nonce does not match")
        try:
            proof = base64.b64decode(proof_attr, validate=True)
        except ValueError:
            raise ScramError("proof is not base64") from None
        auth_message = ",".join((state.client_first_bare, state.server_first,
                                 without_proof)).encode()
        credential = state.credential
        stored_key = credential.stored_key if credential else secrets.token_bytes(32)
        signature = hmac.digest(stored_key, auth_message, "sha256")
        if len(proof) != len(signature):
            raise ScramError("authentication failed")
        client_key = _xor(proof, signature)
        if not hmac.compare_digest(hashlib.sha256(client_key).digest(), stored_key) \
                or credential is None:
            raise ScramError("authentication failed")
        server_signature = hmac.digest(credential.server_key, auth_message, "sha256")
        return b"v=" + base64.b64encode(server_signature)


class ScramClient:
    """The client side, for tests and tools: first() → final(server_first) → verify()."""

    def __init__(self, username: str, password: str, nonce: str | None = None) -> None:
        self.username = username
        self.password = password.encode()
        self.nonce = nonce or base64.b64encode(secrets.token_bytes(NONCE_BYTES)).decode()
        self.bare = f"n={encode_saslname(username)},r={self.nonce}"
        self.auth_message = b""
        self.server_key = b""

    def first(self) -> bytes:
        return ("n,," + self.bare).encode()

    def final(self, server_first: bytes) -> bytes:
        text = server_first.decode()
        attrs = _attributes(text)
        if not attrs["r"].startswith(self.nonce):
            raise ScramError("server nonce does not extend the client nonce")
        salted = hashlib.pbkdf2_hmac("sha256", self.password, base64.b64decode(attrs["s"]),
                                     int(attrs["i"]))
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        stored_key = hashlib.sha256(client_key).digest()
        self.server_key = hmac.digest(salted, b"Server Key", "sha256")
        without_proof = f"c=biws,r={attrs['r']}"
        self.auth_message = ",".join((self.bare, text, without_proof)).encode()
        proof = _xor(client_key, hmac.digest(stored_key, self.auth_message, "sha256"))
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> bool:
        expected = b"v=" + base64.b64encode(
            hmac.digest(self.server_key, self.auth_message, "sha256"))
        return hmac.compare_digest(expected, server_final)
