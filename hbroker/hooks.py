"""The extension interface of the broker: every extension is a `Hook`.

A hook overrides the events it implements; overriding an event is how a hook says it
*provides* it (as a Mochi MQTT hook's `Provides`). The broker asks once which hooks provide
which events, when its hooks are set (at start, and again when SIGHUP reloads the auth
hooks): `Hooks` keeps, per event, the tuple of the bound methods that implement it, and the
broker calls only those. With no hook providing an event, the check costs one truth test of
an empty tuple; for the events on the per-message path (`on_message_published`,
`on_message_dropped`) the compiled core reads a typed flag (`BrokerCore.publish_hooks`,
`drop_hooks`) instead.

What is a hook today: authentication (password file, SCRAM, webhook), the ACL and the audit
log (`hbroker.auth`), and whatever a deployment adds (`hbroker serve --hook module:Class`,
or `Broker(config, Hooks([...]))`). Bridges, rules, metrics, the control plane and the
cluster layer are to be built as hooks, with the in-process client (`hbroker.inprocess`) to
publish and subscribe like any client.

Durable storage (`hbroker.storage.journal`) is not a hook and stays on the side: it keeps
per-delivery state (every queued and inflight delivery of a durable session, its packet
ids) and gates the broker's output behind its commits, neither of which an event says. It
shares with hooks the one way of holding a publisher's acknowledgement: a `HeldAck`
(`hbroker.acknowledgement`), which a hook providing `on_message_published` holds until its
own work is durable, as the journal holds it until its commit.

docs/extensions.md describes the events, when each fires, and what each costs.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hbroker_ext.routing import Message

    from hbroker.acknowledgement import HeldAck
    from hbroker.config import ListenerConfig

# Actions for check_acl.
PUBLISH = "publish"
SUBSCRIBE = "subscribe"
READ = "read"

# Why a message (or one delivery of it) was dropped: the `reason` of on_message_dropped.
QUEUE_FULL = "queue_full"  # a session's queue was at max_queued_messages / _bytes
EXPIRED = "expired"  # its Message Expiry Interval ran out before it was sent [MQTT-3.3.2-5]
TOO_LARGE = "too_large"  # above the client's Maximum Packet Size [MQTT-3.1.2-25]
SLOW_SUBSCRIBER = "slow_subscriber"  # QoS 0 to a client not reading its socket
QUOTA = "quota"  # the publisher was over its publish rate ([quotas])
NOT_AUTHORIZED = "not_authorized"  # the ACL (or $SYS) refused the PUBLISH
TOPIC_INVALID = "topic_invalid"  # over max_topic_levels / max_topic_length
PAYLOAD_FORMAT_INVALID = "payload_format_invalid"  # not UTF-8 as its indicator says
STORAGE_UNAVAILABLE = "storage_unavailable"  # storage failing: refused, never acknowledged
NO_SUBSCRIBERS = "no_subscribers"  # routed, but no subscription matched
REFUSED = "refused"  # a hook refused it (on_message_published, HeldAck.refuse)
DROP_REASONS = (QUEUE_FULL, EXPIRED, TOO_LARGE, SLOW_SUBSCRIBER, QUOTA, NOT_AUTHORIZED,
                TOPIC_INVALID, PAYLOAD_FORMAT_INVALID, STORAGE_UNAVAILABLE, NO_SUBSCRIBERS,
                REFUSED)

# Why a session ended: the `reason` of on_session_ended.
SESSION_CLEAN_START = "clean_start"  # a CONNECT with Clean Start 1 discarded it
SESSION_DISCONNECTED = "disconnected"  # its connection closed and it had no expiry
SESSION_EXPIRED = "expired"  # its Session Expiry Interval elapsed while disconnected
SESSION_MOVED = "moved"  # handed over to another instance of the cluster (hbroker.cluster)
SESSION_DISCARDED = "discarded"  # an operator discarded it (the admin API, hbroker ctl)

# Why a retained message went: the `reason` of on_retained_cleared.
RETAINED_EMPTY_PAYLOAD = "empty_payload"  # a retained PUBLISH with no payload [MQTT-3.3.1-6]
RETAINED_EXPIRED = "expired"  # its Message Expiry Interval ran out


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
    """Base class for broker extensions. Override only the events you implement: the events a
    hook overrides are the ones it provides (`provides`), and only those are called.

    The events run on the broker's event loop, in the order the hooks were given, and must
    not block it: a hook with slow work to do (a network call, a disk write) starts it and
    returns; one providing `on_message_published` holds the publisher's acknowledgement
    (`HeldAck.hold`) until that work is done."""

    name = "hook"

    @classmethod
    def provides(cls) -> frozenset[str]:
        """The events this hook implements: those its class overrides."""
        return frozenset(e for e in EVENTS if getattr(cls, e) is not getattr(Hook, e))

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

    # -- sessions (section 4.1) ----------------------------------------------------------

    def claim_session(self, client: ClientInfo,
                      clean_start: bool) -> None | Awaitable[int | None]:
        """A CONNECT passed authentication and its session is about to be opened (not called
        for a client id the broker assigns: it is new everywhere). A hook that must first
        make the client id its own (the cluster layer takes the session over from the
        instance that held it, and may install it in the broker) returns an awaitable: the
        CONNECT waits for it, reading nothing more from the client meanwhile. Its answer is
        None to go on, or a CONNACK reason code (>= 0x80) to refuse the CONNECT. Returning
        None keeps the synchronous path."""
        return None

    def on_session_created(self, client: ClientInfo) -> None:
        """A CONNECT was accepted with a new session (none existed for the client id, or
        Clean Start discarded it): before the CONNACK and `on_connected`."""

    def on_session_resumed(self, client: ClientInfo) -> None:
        """A CONNECT was accepted and continues the client id's session (Session Present 1):
        before the CONNACK and `on_connected`."""

    def on_session_taken_over(self, client: ClientInfo) -> None:
        """A CONNECT came for a client id whose session had a connection: that connection is
        closed [MQTT-3.1.4-3] (its `on_disconnected` follows when it is gone). `client` is the
        newcomer; `on_session_created` or `on_session_resumed` follows."""

    def on_session_ended(self, client_id: str, reason: str) -> None:
        """A session ended (`SESSION_CLEAN_START`, `SESSION_DISCONNECTED`, `SESSION_EXPIRED`,
        `SESSION_MOVED`, `SESSION_DISCARDED`):
        its subscriptions went with it (no `on_unsubscribed` for them)."""

    # -- subscriptions ---------------------------------------------------------------------

    def on_subscribed(self, client: ClientInfo, topic_filter: str, options: Any,
                      new: bool) -> None:
        """A subscription was granted (`options`: its SubscriptionOptions); `new` is False
        when it replaced one with the same filter [MQTT-3.8.4-3]."""

    def on_unsubscribed(self, client: ClientInfo, topic_filter: str) -> None:
        """An UNSUBSCRIBE removed a subscription that existed."""

    def delivers_shared(self, group: str) -> bool:
        """Whether this hook chooses the member of shared subscription group `group` (its
        filter, `$share/<name>/<filter>`) itself, among members beyond this broker too (the
        cluster layer: one member cluster-wide). The broker then gives the group's messages
        to no local member when it routes them; the hook hands a message to a local member
        with `Broker.deliver_shared`. Asked for each matching group of each message routed,
        when some hook provides it."""
        return False

    # -- messages --------------------------------------------------------------------------

    def on_message_published(self, client: ClientInfo, msg: Message,
                             ack: HeldAck | None) -> int | None:
        """A client published `msg` and the broker accepted it (topic, $SYS, ACL, QoS 2
        duplicate and quota checks passed): called before it is routed. A will is published
        through here too, with `ack` None.

        `ack` is the publisher's acknowledgement (None for QoS 0): call `ack.hold()` to keep
        the PUBACK/PUBREC back until `ack.release()` (or `ack.refuse(code)`), e.g. once the
        message is durable elsewhere. Acknowledgements leave in PUBLISH order per
        connection [MQTT-4.6.0-2]. Return a reason code (>= 0x80) to refuse the message
        instead: it is not routed and a 5.0 QoS 1/2 publisher gets the code in its ack."""
        return None

    def on_message_dropped(self, client_id: str | None, msg: Message, reason: str) -> None:
        """A message, or one delivery of it, was dropped (`reason`: one of DROP_REASONS).
        `client_id`: the session the delivery was for, or the publisher of a refused
        PUBLISH."""

    def on_retained_set(self, msg: Message) -> None:
        """A retained message was stored for its topic [MQTT-3.3.1-5] ($SYS topics, which the
        broker rewrites on its own, are not reported)."""

    def on_retained_cleared(self, topic: str, reason: str) -> None:
        """The retained message of `topic` went (`RETAINED_EMPTY_PAYLOAD`,
        `RETAINED_EXPIRED`)."""


EVENTS = ("on_start", "on_stop", "authenticate", "enhanced_auth", "check_acl", "claim_session",
          "on_connected", "on_disconnected", "on_auth_failed", "on_session_created",
          "on_session_resumed",
          "on_session_taken_over", "on_session_ended", "on_subscribed", "on_unsubscribed",
          "delivers_shared",
          "on_message_published", "on_message_dropped", "on_retained_set",
          "on_retained_cleared")


class Hooks:
    """The hooks in order, with, per event, the tuple of bound methods that implement it."""

    __slots__ = ("hooks", "auth_method_hooks") + EVENTS

    def __init__(self, hooks: list[Hook] | tuple[Hook, ...] = ()) -> None:
        self.hooks = tuple(hooks)
        provided_by = [h.provides() for h in self.hooks]
        for event in EVENTS:
            setattr(self, event, tuple(getattr(h, event) for h, provided
                                       in zip(self.hooks, provided_by, strict=True)
                                       if event in provided))
        self.auth_method_hooks: dict[str, Hook] = {}
        for h in self.hooks:
            for method in h.auth_methods():
                self.auth_method_hooks.setdefault(method, h)

    def provides(self, event: str) -> bool:
        """Whether some hook provides `event`."""
        return bool(getattr(self, event))

    def allowed(self, client: ClientInfo, topic: str, action: str) -> bool:
        """Every ACL hook must allow; none configured allows all."""
        return all(check(client, topic, action) for check in self.check_acl)


def load_hook(spec: str) -> Hook:
    """The hook `spec` names: `module:Name` (an importable module) or `path/to/file.py:Name`;
    `Name` is a Hook subclass (made with no arguments) or a Hook instance. Raises ValueError
    with what is wrong."""
    import importlib
    import importlib.util
    from pathlib import Path

    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name:
        raise ValueError(f"hook {spec!r}: expected module:Name or path/to/file.py:Name")
    try:
        if where.endswith(".py"):
            path = Path(where)
            module_spec = importlib.util.spec_from_file_location(
                f"hbroker_hook_{path.stem}", path)
            if module_spec is None or module_spec.loader is None or not path.is_file():
                raise ValueError(f"hook {spec!r}: no such file {where}")
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except ImportError as exc:
        raise ValueError(f"hook {spec!r}: cannot import {where}: {exc}") from exc
    found = getattr(module, name, None)
    if isinstance(found, type) and issubclass(found, Hook):
        return found()
    if isinstance(found, Hook):
        return found
    raise ValueError(f"hook {spec!r}: {name} is not a Hook subclass or instance in {where}")
