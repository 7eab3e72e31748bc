"""The HTTP webhook authenticator against a real aiohttp server in the test process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web

from hbroker.auth.webhook import WebhookAuthenticator
from hbroker.hooks import ClientInfo
from hbroker.reason_codes import ReasonCode


def client(username: str | None = "alice", client_id: str = "c1") -> ClientInfo:
    return ClientInfo(client_id, username, "127.0.0.1:40000", 5, "tcp://127.0.0.1:1883")


class Webhook:
    """A webhook allowing alice/wonderland; `slow` makes it answer after `delay` seconds."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.delay = 0.0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        if self.delay:
            await asyncio.sleep(self.delay)
        ok = body.get("username") == "alice" and body.get("password") == "wonderland"
        return web.Response(status=200 if ok else 403)


async def start(hook: Webhook) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/auth", hook.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/auth"


def run(coro_fn: Callable[..., Any]) -> None:
    asyncio.run(coro_fn())


def test_webhook_allows_on_2xx_and_refuses_otherwise() -> None:
    async def go() -> None:
        hook = Webhook()
        runner, url = await start(hook)
        auth = WebhookAuthenticator(url, timeout=5.0, cache_seconds=0)
        try:
            assert await auth.decide(client(), b"wonderland") == 0
            assert await auth.decide(client(), b"guess") == ReasonCode.BAD_USER_NAME_OR_PASSWORD
            assert await auth.decide(client(None), None) == \
                ReasonCode.BAD_USER_NAME_OR_PASSWORD
        finally:
            await auth.close()
            await runner.cleanup()
        assert hook.requests[0] == {"username": "alice", "password": "wonderland",
                                    "client_id": "c1", "peer": "127.0.0.1:40000",
                                    "listener": "tcp://127.0.0.1:1883"}
        assert "password" not in hook.requests[2] and hook.requests[2]["username"] is None

    run(go)


def test_webhook_answers_are_cached_for_the_same_credentials() -> None:
    async def go() -> None:
        hook = Webhook()
        runner, url = await start(hook)
        auth = WebhookAuthenticator(url, timeout=5.0, cache_seconds=60)
        try:
            assert auth.cached(client(), b"wonderland") is None
            assert await auth.decide(client(), b"wonderland") == 0
            assert auth.cached(client(), b"wonderland") == 0
            assert auth.cached(client(), b"other") is None  # another password: not cached
            assert auth.cached(client(client_id="c2"), b"wonderland") is None
            assert await auth.decide(client(), b"guess") != 0
            assert auth.cached(client(), b"guess") == ReasonCode.BAD_USER_NAME_OR_PASSWORD
        finally:
            await auth.close()
            await runner.cleanup()
        assert len(hook.requests) == 2

    run(go)


def test_webhook_timeout_refuses_with_server_unavailable_and_is_not_cached() -> None:
    async def go() -> None:
        hook = Webhook()
        hook.delay = 3.0
        runner, url = await start(hook)
        auth = WebhookAuthenticator(url, timeout=0.3, cache_seconds=60)
        try:
            assert await auth.decide(client(), b"wonderland") == ReasonCode.SERVER_UNAVAILABLE
            assert auth.cached(client(), b"wonderland") is None
        finally:
            await auth.close()
            await runner.cleanup()

    run(go)


def test_webhook_unreachable_refuses() -> None:
    async def go() -> None:
        auth = WebhookAuthenticator("http://127.0.0.1:9/auth", timeout=2.0, cache_seconds=60)
        try:
            assert await auth.decide(client(), b"x") == ReasonCode.SERVER_UNAVAILABLE
        finally:
            await auth.close()

    run(go)


