"""An HTTP webhook that decides CONNECTs (`[auth] webhook_url`).

The broker POSTs `{"username", "password", "client_id", "peer", "listener"}` (the password as
UTF-8 text, or base64 under `password_base64` when it is not UTF-8; absent without one). A 2xx
answer accepts the client, any other refuses it with 0x86 (3.1.1: 0x04); a timeout or a
connection error refuses it with 0x88 Server unavailable (3.1.1: 0x03) and is not cached.
Answers are kept for `webhook_cache_seconds`, keyed by a SHA-256 of the credentials, never the
password itself. The request runs on the event loop (aiohttp); the CONNECT waits for it without
holding up anyone else.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from typing import TYPE_CHECKING, Any

from hbroker.auth.backoff import peer_host
from hbroker.hooks import ClientInfo
from hbroker.reason_codes import ReasonCode

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("hbroker.auth.webhook")

CACHE_LIMIT = 10000


class WebhookAuthenticator:
    def __init__(self, url: str, timeout: float, cache_seconds: float) -> None:
        self.url = url
        self.timeout = timeout
        self.cache_seconds = cache_seconds
        self._cache: dict[bytes, tuple[float, int]] = {}
        self._session: aiohttp.ClientSession | None = None

    def _key(self, client: ClientInfo, password: bytes | None) -> bytes:
        h = hashlib.sha256()
        for part in (client.username or "", client.client_id, client.listener,
                     peer_host(client.peer)):
            h.update(part.encode("utf-8", "surrogatepass") + b"\0")
        h.update(b"\1" + password if password is not None else b"\0")
        return h.digest()

    def cached(self, client: ClientInfo, password: bytes | None) -> int | None:
        if self.cache_seconds <= 0:
            return None
        hit = self._cache.get(self._key(client, password))
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    async def decide(self, client: ClientInfo, password: bytes | None) -> int:
        key = self._key(client, password) if self.cache_seconds > 0 else b""
        body: dict[str, Any] = {"username": client.username, "client_id": client.client_id,
                                "peer": client.peer, "listener": client.listener}
        if password is not None:
            try:
                body["password"] = password.decode("utf-8")
            except UnicodeDecodeError:
                body["password_base64"] = base64.b64encode(password).decode()
        import aiohttp  # only brokers with a webhook pay for the import

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(
                    self.url, json=body,
                    timeout=aiohttp.ClientTimeout(total=self.timeout)) as response:
                status = response.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning("auth webhook unreachable: %s", exc or type(exc).__name__, extra={
                "client_id": client.client_id, "peer": client.peer, "url": self.url})
            return ReasonCode.SERVER_UNAVAILABLE
        code = 0 if 200 <= status < 300 else ReasonCode.BAD_USER_NAME_OR_PASSWORD
        if key:
            cache = self._cache
            if len(cache) >= CACHE_LIMIT:
                now = time.monotonic()
                for k in [k for k, (expires, _) in cache.items() if expires < now]:
                    del cache[k]
                if len(cache) >= CACHE_LIMIT:
                    cache.clear()
            cache[key] = (time.monotonic() + self.cache_seconds, code)
        log.debug("auth webhook answered %d", status, extra={
            "client_id": client.client_id, "peer": client.peer})
        return code

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
