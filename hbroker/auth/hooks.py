"""The authentication, authorisation and audit hooks built from `[auth]`, `[acl]`, `[audit]`."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from hbroker_ext.topics import parse_shared

from hbroker.auth.acl import Acl
from hbroker.auth.audit import AuditLog
from hbroker.auth.passwords import PasswordFile
from hbroker.auth.scram import METHOD, ScramError, ScramServer, ServerFirst
from hbroker.auth.webhook import WebhookAuthenticator
from hbroker.config import ListenerConfig
from hbroker.hooks import READ, SUBSCRIBE, AuthResult, ClientInfo, Hook
from hbroker.reason_codes import ReasonCode

log = logging.getLogger("hbroker.auth")

# Password checks (scrypt: tens of milliseconds, memory-hard) run here, off the event loop;
# two threads bound the CPU and memory a burst of CONNECTs can take.
_executor: ThreadPoolExecutor | None = None


def password_executor() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hbroker-auth")
    return _executor


class AuthHook(Hook):
    """The hooks of this package: replaced as a whole when SIGHUP reloads them."""


def applies(source: str, settings: ListenerConfig | None) -> bool:
    """Whether the authentication source `source` applies to the clients of a listener
    (its `auth` list); a client without listener settings gets every configured source."""
    return settings is None or source in settings.auth


class PasswordFiles:
    """The broker-wide password file and the listeners' own (`listeners.password_file`),
    each loaded once however many listeners name it."""

    def __init__(self, default: PasswordFile | None,
                 by_path: dict[str, PasswordFile] | None = None) -> None:
        self.default = default
        self.by_path = by_path or {}

    def for_listener(self, settings: ListenerConfig | None) -> PasswordFile | None:
        if settings is not None and settings.password_file:
            return self.by_path[settings.password_file]
        return self.default


class PasswordAuth(AuthHook):
    """Username and password from the password file of the client's listener (or the
    broker-wide one); the scrypt check runs in a thread."""

    name = "password_file"

    def __init__(self, files: PasswordFiles) -> None:
        self.files = files

    @property
    def passwords(self) -> PasswordFile | None:
        """The broker-wide password file (`auth.password_file`)."""
        return self.files.default

    def authenticate(self, client: ClientInfo, password: bytes | None) -> Any:
        """0 for a known user with its password, 0x86 otherwise; None where the password file
        has no say (see Hook.authenticate)."""
        username = client.username
        if username is None:
            return None  # anonymous: the listener's allow_anonymous decides (Connection)
        if certificate_authenticated(client):
            # The client certificate, checked in the TLS handshake, names the user: no
            # password is asked for (Mosquitto's use_identity_as_username does the same).
            return None
        settings = client.listener_config
        if not applies("password_file", settings):
            return None  # the listener's `auth` leaves this source out: others decide
        passwords = self.files.for_listener(settings)
        if passwords is None:
            return None  # neither the listener nor [auth] names a password file
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(password_executor(), self._check, passwords, username,
                                    password)

    @staticmethod
    def _check(passwords: PasswordFile, username: str, password: bytes | None) -> int:
        if passwords.check(username, password):
            return 0
        return ReasonCode.BAD_USER_NAME_OR_PASSWORD


def certificate_authenticated(client: ClientInfo) -> bool:
    """Whether the username is the identity of a verified client certificate, on a listener
    with `use_identity_as_username`."""
    settings = client.listener_config
    return (client.certificate_identity is not None and settings is not None
            and settings.use_identity_as_username
            and client.username == client.certificate_identity)


class WebhookAuth(AuthHook):
    name = "webhook"

    def __init__(self, webhook: WebhookAuthenticator) -> None:
        self.webhook = webhook

    def authenticate(self, client: ClientInfo, password: bytes | None) -> Any:
        if not applies("webhook", client.listener_config):
            return None  # the listener's `auth` leaves the webhook out
        cached = self.webhook.cached(client, password)
        if cached is not None:
            return cached
        return self.webhook.decide(client, password)

    def on_stop(self) -> None:
        try:
            asyncio.get_running_loop().create_task(self.webhook.close())
        except RuntimeError:
            pass  # no loop running: nothing was ever opened on it


class ScramAuth(AuthHook):
    """SCRAM-SHA-256 through the AUTH packet, with the keys of the password file of the
    client's listener (or the broker-wide one)."""

    name = "scram"

    def __init__(self, files: PasswordFiles) -> None:
        self.files = files
        self.servers = {id(f): ScramServer(f.scram)
                        for f in (files.default, *files.by_path.values()) if f is not None}

    def auth_methods(self) -> tuple[str, ...]:
        return (METHOD,)

    def enhanced_auth(self, client: ClientInfo, method: str, data: bytes | None,
                      state: Any) -> AuthResult:
        settings = client.listener_config
        passwords = self.files.for_listener(settings)
        if not applies("scram", settings) or passwords is None:
            log.info("SCRAM-SHA-256 not offered on listener %s", client.listener, extra={
                "client_id": client.client_id, "peer": client.peer})
            return AuthResult(ReasonCode.BAD_AUTHENTICATION_METHOD)
        if data is None:
            return AuthResult(ReasonCode.BAD_USER_NAME_OR_PASSWORD)
        server = self.servers[id(passwords)]
        try:
            if not isinstance(state, ServerFirst):
                # CONNECT, or the first AUTH of a re-authentication.
                server_first, first = server.client_first(data)
                if client.username is not None and client.username != first.username:
                    raise ScramError("SCRAM username differs from CONNECT's username")
                return AuthResult(ReasonCode.CONTINUE_AUTHENTICATION, server_first, first)
            server_final = server.client_final(data, state)
        except ScramError as exc:
            log.info("SCRAM-SHA-256 failed: %s", exc, extra={
                "client_id": client.client_id, "peer": client.peer})
            return AuthResult(ReasonCode.BAD_USER_NAME_OR_PASSWORD)
        return AuthResult(ReasonCode.SUCCESS, server_final, None, username=state.username)


class AclHook(AuthHook):
    """The ACL file. Denied publishes and subscribes are audited (at most AUDIT_PER_SECOND
    records a second; the rest are counted in the next record's `suppressed`)."""

    name = "acl"
    AUDIT_PER_SECOND = 100

    def __init__(self, acl: Acl, audit: AuditLog | None) -> None:
        self.acl = acl
        self.audit = audit
        self._second = 0
        self._in_second = 0
        self._suppressed = 0
        # Denials by action (publish, subscribe), for the admin listener's metrics; carried
        # over to the hook a SIGHUP reload builds (hbroker.auth.reload_hooks).
        self.denied: dict[str, int] = {}

    def check_acl(self, client: ClientInfo, topic: str, action: str) -> bool:
        if action == SUBSCRIBE:
            group, inner = parse_shared(topic)
            if group is not None:
                topic = inner
        if self.acl.check(client.username, client.client_id, topic, action):
            return True
        if action != READ:
            self._denied(client, topic, action)
        return False

    def _denied(self, client: ClientInfo, topic: str, action: str) -> None:
        self.denied[action] = self.denied.get(action, 0) + 1
        log.info("%s denied by the ACL", action, extra={
            "client_id": client.client_id, "username": client.username, "peer": client.peer,
            "topic": topic})
        if self.audit is None:
            return
        second = int(time.monotonic())
        if second != self._second:
            self._second, self._in_second = second, 0
        if self._in_second >= self.AUDIT_PER_SECOND:
            self._suppressed += 1
            return
        self._in_second += 1
        suppressed, self._suppressed = self._suppressed, 0
        self.audit.record("acl_denied", action=action, topic=topic,
                          client_id=client.client_id, username=client.username,
                          peer=client.peer, listener=client.listener,
                          suppressed=suppressed or None)


# The close reason hbroker.broker gives a connection whose session another one took over.
TAKEN_OVER = "session taken over"


class AuditHook(AuthHook):
    name = "audit"

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    def on_auth_failed(self, client: ClientInfo, reason_code: int, reason: str) -> None:
        self.audit.record("auth_failure", client_id=client.client_id,
                          username=client.username, peer=client.peer,
                          listener=client.listener, reason_code=reason_code, reason=reason)

    def on_disconnected(self, client: ClientInfo, reason: str) -> None:
        if reason == TAKEN_OVER:
            self.audit.record("session_taken_over", client_id=client.client_id,
                              username=client.username, peer=client.peer,
                              listener=client.listener)

    def on_stop(self) -> None:
        self.audit.close()
