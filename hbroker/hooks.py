"""The one extension interface of the broker.

Auth, ACL, storage, cluster forwarding, metrics, bridges and the control plane are hooks. A hook
overrides the events it implements; the broker asks once, at start, which hooks provide which
events (`Hooks`), and the hot path calls only those. With no hook providing an event, the check
costs one truth test of an empty tuple.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hbroker.config import ListenerConfig

# Actions for check_acl.
PUBLISH = "publish"
SUBSCRIBE = "subscribe"
READ = "read"


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """What a hook may know about a client when it decides."""

    client_id: str
    username: str | None
    peer: str
    protocol_version: int
    listener: str
    # The identity of the client's verified TLS certificate (the listener's
    # `certificate_identity`: CN or a subject alternative name), None without one. With the
    # listener's `use_identity_as_username` it is also `username`.
    certificate_identity: str | None = None
    # The settings of the listener the client connected through (`hbroker.config.
    # ListenerConfig`), for hooks whose decision depends on it (e.g. per-listener auth).
    listener_config: ListenerConfig | None = None


@dataclass(slots=True)
class AuthResult:
    """The answer of an enhanced-authentication step (MQTT 5.0 section 4.12).

    `reason_code` 0x00 ends authentication with success, 0x18 (Continue authentication) sends
    `data` back in an AUTH packet, any code ≥ 0x80 refuses the client. `state` is kept by the
    broker between steps and handed back to the hook. `username`, on success, is the identity
    the method authenticated (it replaces CONNECT's username for ACLs and logs).
    """

    reason_code: int
    data: bytes | None = None
    state: Any = None
    username: str | None = None


class Hook:
    """Base class for broker extensions. Override only the events you implement."""

    name = "hook"

    def on_start(self, broker: Any) -> None:
        """Called once when the broker starts, before listeners accept connections."""

    def on_stop(self) -> None:
        """Called once when the broker stops."""

    def authenticate(self, client: ClientInfo,
                     password: bytes | None) -> int | None | Awaitable[int | None]:
        """Decide a CONNECT: return 0x00 when this source accepts the client's credentials, a
        CONNACK reason code (0x86, 0x87…) to refuse it, or None when it has no say about this
        client (its source does not apply to the client's listener, or the client gave no
        username). A client is admitted when no hook refused it and one accepted it, or when
        its listener allows anonymous clients (or its certificate names it).

        A hook that must wait (a slow hash in a thread, an HTTP call) returns an awaitable of
        that answer instead: the connection stops reading until it completes, other clients
        are served meanwhile. Returning an int or None keeps the synchronous path. Not called
        for clients that authenticated through an enhanced authentication method."""
        return None

    def auth_methods(self) -> tuple[str, ...]:
        """Enhanced authentication methods (AUTH packet) this hook implements."""
        return ()

    def enhanced_auth(self, client: ClientInfo, method: str, data: bytes | None,
                      state: Any) -> AuthResult:
        """One step of enhanced authentication for `method`."""
        return AuthResult(0x8C)

    def check_acl(self, client: ClientInfo, topic: str, action: str) -> bool:
        """May this client publish to, subscribe to, or read (receive) this topic?"""
        return True

    def on_connected(self, client: ClientInfo) -> None:
        """A client's CONNECT was accepted."""

    def on_disconnected(self, client: ClientInfo, reason: str) -> None:
        """A client's connection closed, for whatever reason."""

    def on_auth_failed(self, client: ClientInfo, reason_code: int, reason: str) -> None:
        """A CONNECT (or re-authentication) was refused for its credentials."""


EVENTS = ("on_start", "on_stop", "authenticate", "enhanced_auth", "check_acl", "on_connected",
          "on_disconnected", "on_auth_failed")


class Hooks:
    """The hooks in order, with, per event, the tuple of bound methods that implement it."""

    __slots__ = ("hooks", "auth_method_hooks") + EVENTS

    def __init__(self, hooks: list[Hook] | tuple[Hook, ...] = ()) -> None:
        self.hooks = tuple(hooks)
        for event in EVENTS:
            base = getattr(Hook, event)
            provided = tuple(getattr(h, event) for h in self.hooks
                             if getattr(type(h), event) is not base)
            setattr(self, event, provided)
        self.auth_method_hooks: dict[str, Hook] = {}
        for h in self.hooks:
            for method in h.auth_methods():
                self.auth_method_hooks.setdefault(method, h)

    def provides(self, event: str) -> bool:
        return bool(getattr(self, event))

    def allowed(self, client: ClientInfo, topic: str, action: str) -> bool:
        """Every ACL hook must allow; none configured allows all."""
        return all(check(client, topic, action) for check in self.check_acl)
