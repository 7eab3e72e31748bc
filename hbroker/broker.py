"""Routing decisions: sessions, subscriptions, retained messages, wills and expiry.

The broker never touches sockets: it hands bytes to connections (`Connection.write*`), which
coalesce them and flush once per loop iteration.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from hbroker_ext.codec import MESSAGE_EXPIRY_INTERVAL
from hbroker_ext.routing import BrokerCore, ConnectionCore, Targets
from hbroker_ext.topics import RetainedTree, SubscriptionTree

from hbroker import hooks as events
from hbroker.acknowledgement import HeldAck
from hbroker.auth.backoff import FailureBackoff
from hbroker.config import Config
from hbroker.hooks import READ, ClientInfo, Hooks
from hbroker.quotas import ConnectionRate, new_publish_quota, topic_limits
from hbroker.reason_codes import ReasonCode
from hbroker.session import NEVER, Delivery, Message, Session
from hbroker.stats import Stats
from hbroker.subscription import SubscriptionOptions
from hbroker.sys_topics import SysPublisher

if TYPE_CHECKING:
    from hbroker_ext.routing import PublishQuota

    from hbroker.storage.journal import Journal

log = logging.getLogger("hbroker.broker")

SWEEP_INTERVAL = 0.5
# The compiled base's `hooks` field, behind Broker.hooks (which also sets the hook flags).
_CORE_HOOKS = BrokerCore.hooks


class Broker(BrokerCore):
    """Sessions, subscriptions, retained messages, wills and expiry. What the per-message path
    reads (stats, sessions, subscriptions, the match cache, hooks, journal, limits, topic
    limits, the connections to flush, the loop) is typed in the compiled base,
    hbroker_ext.routing.BrokerCore, with `publish` and the output coalescing (`schedule_flush`,
    `flush`). The hook events of the per-message path are upcalls of that base
    (`message_published`, `message_dropped`), made only when a hook provides
    them (`publish_hooks`, `drop_hooks`)."""

    def __init__(self, config: Config, hooks: Hooks | None = None) -> None:
        self.config = config
        self.limits = config.limits
        self.hooks = hooks or Hooks()
        self.sessions: dict[str, Session] = {}
        self.subscriptions = SubscriptionTree()
        self.retained = RetainedTree()
        self.connections: set[ConnectionCore] = set()
        self.stats = Stats()
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.shutting_down = False
        self._match_cache: dict[str, Targets] = {}
        self._match_generation = -1
        # Who each session's client is, for `read` ACL checks while it is offline (the
        # connection's ClientInfo while it is online). Moving acl_generation rebuilds the
        # topic -> subscribers cache, which holds only subscribers allowed to read the topic.
        self.identities: dict[str, ClientInfo] = {}
        self.acl_generation = 0
        # CONNECTs (and re-authentications) refused for their credentials, by reason code.
        self.auth_failures: dict[int, int] = {}
        self.auth_backoff = FailureBackoff(config.auth.failure_delay,
                                           config.auth.failure_delay_max)
        self._shared_next: dict[str, int] = {}
        # [quotas]: per-address connection rate, topic limits, and the connections whose
        # reading is paused for their publish rate -> when to resume (by the sweep).
        self.connection_rate = ConnectionRate(config.quotas)
        self.topic_limits = topic_limits(config.quotas)
        self.throttled: dict[ConnectionCore, float] = {}
        # Connections closing gracefully after a DISCONNECT or a refusing CONNACK -> (when the
        # sweep aborts them, their transport): see Connection._linger.
        self.lingering: dict[ConnectionCore, tuple[float, asyncio.BaseTransport]] = {}
        self._dirty: list[ConnectionCore] = []
        self.flush_scheduled = False
        # Durable state (None with the memory backend): see hbroker.storage.journal.
        self.journal: Journal | None = None
        # Disconnected sessions with a deadline (session expiry or a delayed will).
        self._offline: set[Session] = set()
        self._sweep_handle: asyncio.TimerHandle | None = None
        self.sys = SysPublisher(self)

    # -- hooks -------------------------------------------------------------------------

    @property
    def hooks(self) -> Hooks:
        return _CORE_HOOKS.__get__(self)

    @hooks.setter
    def hooks(self, hooks: Hooks) -> None:
        """Which hooks provide which events is decided here, once per configuration (at
        start and when SIGHUP reloads the auth hooks): the compiled path tests a flag."""
        _CORE_HOOKS.__set__(self, hooks)
        self._on_message_published = hooks.on_message_published
        self.publish_hooks = bool(hooks.on_message_published)
        self.drop_hooks = bool(hooks.on_message_dropped)

    def message_published(self, conn: ConnectionCore, msg: Message, packet_id: int
                          ) -> HeldAck | int | None:
        """A client's PUBLISH passed every check and is about to be routed (called only when
        a hook provides on_message_published). Returns None to go on as usual, a reason code
        (>= 0x80) when a hook refused the message (the handler refuses it as it refuses an
        ACL denial), or the HeldAck some hook holds (the handler routes the message, then
        calls `ack.routed`, and writes no acknowledgement itself)."""
        client = conn.client_info
        if not msg.qos:
            for hook in self._on_message_published:
                code = _ask(hook, client, msg, None)
                if code:
                    return code
            return None
        ack = HeldAck(conn, msg, packet_id, deciding=True)
        code = 0
        for hook in self._on_message_published:
            code = _ask(hook, client, msg, ack)
            if code or ack.state:  # refused, or ack.refuse() called: no more hooks asked
                break
        if ack.state and not code:
            code = ack.code  # a hook called ack.refuse() while it was asked
        if code or ack.holders == 1:
            ack.discard()
            ack.deciding = False
            return code or None
        ack.deciding = False
        return ack

    def message_dropped(self, msg: Message, client_id: str | None, reason: str) -> None:
        """A message or one delivery of it was dropped (called only when a hook provides
        on_message_dropped): `reason` is one of hbroker.hooks.DROP_REASONS."""
        for hook in self.hooks.on_message_dropped:
            try:
                hook(client_id, msg, reason)
            except Exception:
                log.exception("on_message_dropped hook failed")

    def _hook_client(self, session: Session) -> ClientInfo:
        conn = session.connection
        if conn is not None and conn.client_info is not None:
            return conn.client_info
        return self.client_identity(session.client_id)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        for hook in self.hooks.on_start:
            hook(self)
        if self.config.sys.enabled:
            self.sys.publish_static()
            self.sys.publish_periodic(time.monotonic())
        self._sweep_handle = loop.call_later(SWEEP_INTERVAL, self._sweep)

    def stop(self) -> None:
        """Stop the sweep and say goodbye to every client: DISCONNECT 0x8B to 5.0 clients,
        no wills published (the clients did nothing wrong)."""
        self.shutting_down = True
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
        if self.journal is not None:
            self.journal.stopping = True  # goodbyes go out at once
        for conn in list(self.connections):
            conn.shutdown()
        self.flush()
        for hook in self.hooks.on_stop:
            hook()

    def apply_config(self, config: Config) -> None:
        """SIGHUP: take the values that can change at run time."""
        self.config = config
        self.limits = config.limits
        self.auth_backoff.configure(config.auth.failure_delay, config.auth.failure_delay_max)
        self.connection_rate.configure(config.quotas)
        self.topic_limits = topic_limits(config.quotas)

    # -- connections and sessions ------------------------------------------------------

    def new_session(self, client_id: str, protocol_version: int) -> Session:
        return Session(client_id, protocol_version,
                       max_queued_messages=self.limits.max_queued_messages,
                       max_queued_bytes=self.limits.max_queued_bytes,
                       queue_qos0=self.config.sessions.queue_qos0_messages,
                       stats=self.stats, journal=self.journal, broker=self)

    def new_publish_quota(self, protocol_version: int, now: float) -> PublishQuota | None:
        return new_publish_quota(self.config.quotas, protocol_version, now)

    def assign_client_id(self) -> str:
        return f"auto-{uuid.uuid4()}"

    def open_session(self, conn: ConnectionCore, client_id: str, clean_start: bool,
                     protocol_version: int, now: float) -> tuple[Session, bool]:
        """Attach a session to a connection whose CONNECT was accepted; returns (session,
        session_present). An existing connection with the same client id is taken over."""
        session = self.sessions.get(client_id)
        if session is not None and session.connection is not None:
            # [MQTT-3.1.4-3] the existing connection is closed. Its will follows the usual
            # rules with the takeover as the new Network Connection: not published when the
            # session continues (it has an expiry and Clean Start is 0); when the session ends
            # (no expiry, or Clean Start 1), published unless a Will Delay Interval is still
            # running [MQTT-3.1.2-8] (below).
            continues = session.expiry_interval != 0 and not clean_start
            if self.hooks.on_session_taken_over:
                client = self._newcomer(client_id, protocol_version)
                for hook in self.hooks.on_session_taken_over:
                    hook(client)
            session.connection.disconnect(ReasonCode.SESSION_TAKEN_OVER, "session taken over",
                                          publish_will=not continues)
            self.stats.takeovers += 1
            session = self.sessions.get(client_id)  # ended if it had no expiry
        if session is not None and clean_start:
            if session.will is not None and now < session.will_due:
                # [MQTT-3.1.2-8] a new Network Connection for the client id opened before the
                # Will Delay Interval elapsed: the will is not published, though the session
                # ends.
                log.info("will not published: the client connected again within its will "
                         "delay", extra={"client_id": client_id})
                session.will = None
            self.end_session(session, publish_will=True, now=now,
                             reason=events.SESSION_CLEAN_START)
            session = None
        present = session is not None
        if session is None:
            session = self.new_session(client_id, protocol_version)
            self.sessions[client_id] = session
        else:
            # A new connection for the session before the will delay elapsed: no will
            # [MQTT-3.1.2-8, MQTT-3.1.3-9].
            if session.will is not None:
                log.info("will not published: the client connected again within its will "
                         "delay", extra={"client_id": client_id})
            session.will = None
            session.will_due = 0
            self._offline.discard(session)
        session.protocol_version = protocol_version
        session.connection = conn
        session.expires_at = NEVER
        self.stats.clients_connected += 1
        self.stats.clients_maximum = max(self.stats.clients_maximum,
                                         self.stats.clients_connected)
        opened = self.hooks.on_session_resumed if present else self.hooks.on_session_created
        if opened:
            client = self._newcomer(client_id, protocol_version)
            for hook in opened:
                hook(client)
        return session, present

    def _newcomer(self, client_id: str, protocol_version: int) -> ClientInfo:
        """The client whose CONNECT opens a session: `remember_identity` recorded it just
        before `open_session`."""
        info = self.identities.get(client_id)
        if info is None:
            info = ClientInfo(client_id, None, "", protocol_version, "")
        return info

    def client_gone(self, conn: ConnectionCore, publish_will: bool, now: float) -> None:
        """The connection of a session closed (any reason). Decides the will and expiry."""
        session = conn.session
        conn.session = None
        if session is None or session.connection is not conn:
            return
        session.connection = None
        self.stats.clients_connected -= 1
        if session.will is not None and not publish_will:
            session.will = None  # [MQTT-3.1.2-10] removed on normal disconnect
        self._redistribute_shared(session, now)
        if self.shutting_down:
            # The clients did nothing wrong: no wills. Sessions that outlive their
            # connection are kept (and stored) for after the restart.
            session.will = None
        if session.expiry_interval == 0:
            self.end_session(session, publish_will=True, now=now,
                             reason=events.SESSION_DISCONNECTED)
            return
        session.expires_at = now + session.expiry_interval
        if session.will is not None:
            if session.will_delay <= 0:
                self._publish_will(session, now)
            else:
                session.will_due = now + min(session.will_delay, session.expiry_interval)
        if session.expires_at != NEVER or session.will is not None:
            self._offline.add(session)
        if self.journal is not None:
            self.journal.session_changed(session)

    def end_session(self, session: Session, publish_will: bool, now: float,
                    reason: str = events.SESSION_DISCONNECTED) -> None:
        """The session ends: its subscriptions go, and a pending will is published now
        (the will is sent when the will delay elapses or the session ends, whichever first).
        `reason`: why, for on_session_ended (hbroker.hooks.SESSION_*)."""
        if publish_will and session.will is not None:
            self._publish_will(session, now)
        session.will = None
        tree = self.subscriptions
        shared_next = self._shared_next
        for topic_filter in session.subscriptions:
            tree.unsubscribe(topic_filter, session.client_id)
            if topic_filter in shared_next:
                self._forget_empty_group(topic_filter)
        session.subscriptions.clear()
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]
        self._offline.discard(session)
        if session.queue or session.inflight:
            self._redistribute_shared(session, now)
        session.ended = True
        if self.journal is not None:
            self.journal.session_ended(session)
        for hook in self.hooks.on_session_ended:
            hook(session.client_id, reason)

    def _publish_will(self, session: Session, now: float) -> None:
        will = session.will
        session.will = None
        session.will_due = 0
        if will is None:
            return
        if self.journal is not None and not session.ended:
            self.journal.session_changed(session)
        if will.properties and MESSAGE_EXPIRY_INTERVAL in will.properties:
            # The will's expiry runs from when it is published.
            props = dict(will.properties)
            will.expires_at = now + props.pop(MESSAGE_EXPIRY_INTERVAL)
            will.properties = props or None
        if self.publish_hooks:
            # Hooks see a will as a message its client published, without acknowledgement.
            client = self._hook_client(session)
            for hook in self.hooks.on_message_published:
                if _ask(hook, client, will, None):
                    self.stats.publish_dropped += 1
                    if self.drop_hooks:
                        self.message_dropped(will, session.client_id, events.REFUSED)
                    return
        self.stats.wills_published += 1
        self.publish(will, now)

    def restore_session(self, session: Session) -> None:
        """A session read from storage at start (`hbroker.storage.restore`): known by its
        client id, disconnected, with its deadlines (session expiry, a delayed will) watched
        by the sweep."""
        self.sessions[session.client_id] = session
        if session.expires_at != NEVER or session.will is not None:
            self._offline.add(session)

    def restore_subscription(self, session: Session, topic_filter: str,
                             opts: SubscriptionOptions) -> None:
        """A subscription of a restored session, read from storage: in the tree and the
        session, recorded nowhere (its row is where it came from)."""
        self.subscriptions.subscribe(topic_filter, session.client_id, opts)
        session.subscriptions[topic_filter] = opts

    def publish_will(self, session: Session, now: float) -> None:
        """Publish the session's will now (and take it off the session), as when its will
        delay elapses: for a restored session whose client was connected at a crash."""
        self._publish_will(session, now)

    # -- publish ---------------------------------------------------------------------

    # publish(msg, now, skip=None) -> int: compiled, BrokerCore.publish.

    def _publish_shared(self, msg: Message, shared: tuple | list, now: float,
                        skip: set[str] | None) -> int:
        """One member of each shared subscription group that matches the topic gets it. A
        group whose member a hook chooses (`Hook.delivers_shared`: the cluster's, one member
        cluster-wide) counts as reached and gets it from that hook (`deliver_shared`)."""
        reached = 0
        delivers = self.hooks.delivers_shared
        for group_key, members in shared:
            if skip is not None and any(member[0] in skip for member in members):
                continue
            if delivers and any(chooses(group_key) for chooses in delivers):
                reached += 1
                continue
            if self._deliver_shared(msg, group_key, members, now):
                reached += 1
        return reached

    def deliver_shared(self, msg: Message, group_key: str, now: float) -> bool:
        """Give `msg` to one local member of shared group `group_key` (`$share/<name>/<filter>`)
        and to nobody else, as routing would give it to that group: for a hook that chooses
        the group's member itself (`Hook.delivers_shared`). The read ACL applies, as in the
        match cache. Returns False when no local member can take it."""
        for key, members in self._targets(msg.topic).shared:
            if key == group_key:
                return self._deliver_shared(msg, group_key, members, now)
        return False

    # _targets(topic) -> Targets: compiled, BrokerCore._targets (the match cache).

    # -- read ACL ----------------------------------------------------------------------

    def bump_acl_generation(self) -> None:
        """The ACL (or who a client is) changed: rebuild the topic -> subscribers cache."""
        self.acl_generation += 1
        self._match_generation = -1

    def client_identity(self, client_id: str) -> ClientInfo:
        """Who reads for a session: its connection's client, else the last one that
        connected with this client id; a session restored from storage whose client has not
        come back is checked as an anonymous client."""
        session = self.sessions.get(client_id)
        conn = session.connection if session is not None else None
        if conn is not None and conn.client_info is not None:
            return conn.client_info
        info = self.identities.get(client_id)
        if info is None:
            info = ClientInfo(client_id, None, "", 0, "")
        return info

    def remember_identity(self, info: ClientInfo, had_subscriptions: bool) -> None:
        identities = self.identities
        old = identities.get(info.client_id)
        identities[info.client_id] = info
        if had_subscriptions and self.hooks.check_acl and (
                old is None or old.username != info.username):
            self.bump_acl_generation()
        if len(identities) > 2 * len(self.sessions) + 1024:
            sessions = self.sessions
            self.identities = {c: i for c, i in identities.items() if c in sessions}

    def _readers(self, topic: str, normal: list, shared: list) -> tuple[list, list]:
        hooks = self.hooks
        identity = self.client_identity
        normal = [t for t in normal if hooks.allowed(identity(t[0]), topic, READ)]
        readable_shared = []
        for group_key, members in shared:
            members = [m for m in members if hooks.allowed(identity(m[0]), topic, READ)]
            if members:
                readable_shared.append((group_key, members))
        return normal, readable_shared

    def _deliver_shared(self, msg: Message, group_key: str, members: list, now: float,
                        exclude: Session | None = None) -> bool:
        """Round robin across the group's members, preferring connected ones."""
        count = len(members)
        if not count:
            return False
        start = self._shared_next.get(group_key, 0) % count
        chosen = None
        fallback = None
        for i in range(count):
            client_id, opts = members[(start + i) % count]
            session = self.sessions.get(client_id)
            if session is None or session is exclude:
                continue
            if session.connection is not None and not session.connection.closing:
                chosen = (session, opts, (start + i) % count)
                break
            if fallback is None:
                fallback = (session, opts, (start + i) % count)
        if chosen is None:
            chosen = fallback
        if chosen is None:
            return False
        session, opts, index = chosen
        self._shared_next[group_key] = index + 1
        qos = min(opts.qos, msg.qos)
        sub_ids = (opts.sub_id,) if opts.sub_id else ()
        retain = msg.retain and opts.retain_as_published
        session.deliver(Delivery(msg, qos, retain, sub_ids, group_key), now)
        return True

    def _redistribute_shared(self, session: Session, now: float) -> None:
        """Offer the shared-subscription messages a departed member may give up to the rest
        of its group (MQTT 5.0 section 4.8.2): QoS 1 messages it has not acknowledged and
        messages still queued for it. QoS 2 messages in flight stay with it
        (`Session.take_shared_deliveries`)."""
        taken = session.take_shared_deliveries()
        members_of: dict[str, list] = {}
        for delivery in taken:
            members = members_of.get(delivery.group)
            if members is None:
                members = members_of[delivery.group] = self._group_members(delivery.group)
            if not self._deliver_shared(delivery.message, delivery.group, members, now,
                                        exclude=session):
                # Nobody else in the group: keep it for the member that had it.
                session.deliver(delivery, now)

    def _group_members(self, group_key: str) -> list:
        """The members of a shared group, from the sessions (a rare path: a member left
        while messages were on their way to it)."""
        return [(cid, s.subscriptions[group_key]) for cid, s in self.sessions.items()
                if group_key in s.subscriptions]

    def _forget_empty_group(self, group_key: str) -> None:
        """A member left the shared group `group_key`: once the group has no member, its
        round-robin position goes too (groups come and go; their positions must not stay)."""
        if not self.subscriptions.has_shared_group(group_key):
            self._shared_next.pop(group_key, None)

    def _retain(self, msg: Message) -> None:
        """[MQTT-3.3.1-5] store, [MQTT-3.3.1-6/7] an empty payload clears the topic."""
        if not msg.payload:
            if self.retained.pop(msg.topic) is not None:
                self.stats.retained_changes += 1
                if self.journal is not None:
                    self.journal.retained_changed(msg.topic)
                for hook in self.hooks.on_retained_cleared:
                    hook(msg.topic, events.RETAINED_EMPTY_PAYLOAD)
            return
        stored = Message(msg.topic, msg.payload, msg.qos, True, msg.properties, msg.expires_at,
                         None)
        self.retained.set(msg.topic, stored)
        self.stats.retained_changes += 1
        if not msg.topic.startswith("$SYS/"):
            # $SYS values are the broker's own, published anew after a start (and
            # rewritten every sys.interval): neither stored nor reported to hooks.
            if self.journal is not None:
                self.journal.retained_changed(msg.topic)
            for hook in self.hooks.on_retained_set:
                hook(stored)

    def send_retained(self, session: Session, topic_filter: str, opts: SubscriptionOptions,
                      now: float) -> None:
        """Retained messages matching a new subscription, with the retain flag set
        [MQTT-3.3.1-8]."""
        sub_ids = (opts.sub_id,) if opts.sub_id else ()
        hooks = self.hooks
        reader = self.client_identity(session.client_id) if hooks.check_acl else None
        for msg in self.retained.match(topic_filter):
            if msg.expired(now):
                self.retained.pop(msg.topic)
                if self.journal is not None:
                    self.journal.retained_changed(msg.topic)
                for hook in hooks.on_retained_cleared:
                    hook(msg.topic, events.RETAINED_EXPIRED)
                continue
            if reader is not None and not hooks.allowed(reader, msg.topic, READ):
                continue
            qos = opts.qos if opts.qos < msg.qos else msg.qos
            if qos == 0:
                session.deliver_qos0(msg, True, sub_ids, now)
            else:
                session.deliver(Delivery(msg, qos, True, sub_ids, None), now)

    # -- subscriptions ---------------------------------------------------------------

    def subscribe(self, session: Session, topic_filter: str,
                  opts: SubscriptionOptions) -> bool:
        new = self.subscriptions.subscribe(topic_filter, session.client_id, opts)
        session.subscriptions[topic_filter] = opts
        if self.journal is not None and session.expiry_interval:
            self.journal.subscription_changed(session, topic_filter)
        if self.hooks.on_subscribed:
            client = self._hook_client(session)
            for hook in self.hooks.on_subscribed:
                hook(client, topic_filter, opts, new)
        return new

    def unsubscribe(self, session: Session, topic_filter: str) -> bool:
        if session.subscriptions.pop(topic_filter, None) is not None \
                and self.journal is not None and session.expiry_interval:
            self.journal.subscription_changed(session, topic_filter)
        existed = self.subscriptions.unsubscribe(topic_filter, session.client_id)
        if existed and topic_filter in self._shared_next:
            self._forget_empty_group(topic_filter)
        if existed and self.hooks.on_unsubscribed:
            client = self._hook_client(session)
            for hook in self.hooks.on_unsubscribed:
                hook(client, topic_filter)
        return existed

    # has_durable_target(topic) -> bool: compiled, BrokerCore.has_durable_target.

    # -- the periodic sweep ----------------------------------------------------------

    def _sweep(self) -> None:
        """One timer for the whole broker: connect timeouts, keepalive, the end of graceful
        closes, delayed wills, session expiry and $SYS. No task or timer per connection."""
        now = time.monotonic()
        try:
            self.sweep(now)
        except Exception:  # the sweep must survive anything one client caused
            log.exception("sweep failed")
        assert self.loop is not None
        self._sweep_handle = self.loop.call_later(SWEEP_INTERVAL, self._sweep)

    def sweep(self, now: float) -> None:
        connect_timeout = self.limits.connect_timeout
        throttled = self.throttled
        if throttled:
            for conn, resume_at in list(throttled.items()):
                if now >= resume_at:
                    del throttled[conn]
                    conn.end_throttle(now)
        lingering = self.lingering
        if lingering:
            for conn, (until, transport) in list(lingering.items()):
                if now >= until:
                    # The client neither closed nor went quiet after its DISCONNECT/CONNACK.
                    del lingering[conn]
                    transport.abort()
        for conn in list(self.connections):
            if conn.closing:
                continue
            if not conn.connected:
                if now - conn.opened_at > connect_timeout:
                    conn.abort("no CONNECT within connect_timeout")
            elif conn.keepalive and now - conn.last_received > conn.keepalive * 1.5 \
                    and conn not in throttled:  # a throttled client's PINGREQs wait unread
                # [MQTT-3.1.2-22] one and a half times the keep alive without a packet.
                conn.disconnect(ReasonCode.KEEP_ALIVE_TIMEOUT, "keepalive timeout",
                                publish_will=True)
        for session in list(self._offline):
            if session.will is not None and session.will_due and now >= session.will_due:
                self._publish_will(session, now)
            if now >= session.expires_at:
                log.debug("session expired", extra={"client_id": session.client_id})
                self.stats.sessions_expired += 1
                self.end_session(session, publish_will=True, now=now,
                                 reason=events.SESSION_EXPIRED)
            elif session.will is None and session.expires_at == NEVER:
                self._offline.discard(session)
        if self.config.sys.enabled:
            self.sys.maybe_publish(now)
        self.flush()


def _ask(hook: Any, client: ClientInfo | None, msg: Message, ack: HeldAck | None) -> int:
    """One hook's on_message_published: the reason code it refuses with (>= 0x80), else 0. A
    hook that fails is logged and does not stop the message."""
    try:
        code = hook(client, msg, ack)
    except Exception:
        log.exception("on_message_published hook failed", extra={"topic": msg.topic})
        return 0
    return code if code is not None and code >= 0x80 else 0
