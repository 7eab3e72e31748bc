"""Shared subscriptions across the instances of a cluster (MQTT 5.0 section 4.8.2): each
message of a `$share/<name>/<filter>` group goes to one member cluster-wide.

The choice is made once, by NATS, for every message, wherever it was published: the broker
gives a group's messages to no local member when it routes them (`ClusterRouting.
delivers_shared` answers True for every group whose filter NATS carries), neither those its
own clients publish nor those the cluster's in-process client brings from NATS for the
topic's other subscribers. A message reaches a group only through this module, which hands
it to one local member with `Broker.deliver_shared` (the broker's round robin among the
local members, read ACL included). Why not let the publisher's instance choose a local member
when it has one: it would then have to tell every other instance "not this one", which is a
second message per message and per group, and its member would still need the stored copy to
move elsewhere when its instance dies; going through NATS costs a local member one NATS round
trip (measured in docs/clustering.md) and keeps one rule for every message.

Per group, on every instance with local members (the group's NATS resources are O(groups),
not O(members)):

- QoS 0: a NATS queue subscription on the filter's live subjects, queue `hbs_<hash>` (the
  hash of the group's whole filter): NATS gives each message to one subscription of the queue
  cluster-wide. Taken only while the instance has a connected member (an instance whose
  members are all offline would otherwise take its share of messages to queue them, or drop
  them). At most once, as QoS 0 is.
- QoS 1 and 2: one durable JetStream consumer per group, `hbs_<hash>`, on the stored copies
  (`$HB.msgs.<subjects>`), made by the first instance with a member (starting at the time of
  that member's SUBSCRIBE, so what is published after its SUBACK reaches the group) and bound
  by every other; pulled only by instances with a connected member, so the pulls share the
  messages out. Acknowledgement to JetStream, one message at a time:
  - QoS 1: once the member acknowledged it (PUBACK; or it left the member's session for good:
    expired, dropped). Meanwhile the instance tells JetStream it is still working on it
    (`in_progress`, every ACK_WAIT / 3). An instance that dies (kill -9) sends no more of
    those: after ACK_WAIT, JetStream delivers its unacknowledged messages to another
    instance's member [MQTT-4.8.2-3 allows any member]. A member that disconnects gives its
    unacknowledged QoS 1 messages to another local member (the broker's own rule); when none
    is connected here they are handed back to JetStream (`nak`), for another instance.
  - QoS 2: acknowledged (and the acknowledgement confirmed by JetStream) before it is handed
    to the member: a QoS 2 message goes to one member once, and stays with it
    [MQTT-4.8.2-4, -5]. The price: a QoS 2 message an instance has taken and not yet sent
    when it dies is lost with that instance's sessions (as for its other sessions with
    memory storage), never delivered twice.
- Retained messages are not sent to a new member (section 4.8.2), as on one instance; a
  retained PUBLISH reaches the group as any message (RETAIN by its member's Retain As
  Published).

A group's durable consumer outlives the instances' members for INACTIVE hours without a pull
(then JetStream deletes it): a group whose members are all offline keeps its messages for
them until then.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from hbroker_ext.codec import MESSAGE_EXPIRY_INTERVAL

from hbroker.cluster import headers as hdr
from hbroker.cluster.retained import remaining_expiry
from hbroker.cluster.subjects import SubjectError, filter_to_subjects, subject_to_topic
from hbroker.session import Message

if TYPE_CHECKING:
    from hbroker.cluster.routing import ClusterRouting

log = logging.getLogger("hbroker.cluster")

SHARE = "$share/"
ACK_WAIT = 6.0  # seconds before JetStream gives a group's unacknowledged message to another
PROGRESS = ACK_WAIT / 3  # how often an instance says it still holds a message
INACTIVE = 24 * 3600.0  # seconds without a pull before JetStream deletes a group's consumer
TICK = 0.2  # seconds between looks at the members' sessions
BATCH = 64  # messages fetched at once
HELD = 1000  # a group's QoS 1 messages an instance holds unacknowledged at most
MAX_ACK_PENDING = 10000


def group_token(group_key: str) -> str:
    """The name of a group's consumer and queue: a hash of its whole filter (names and
    filters may hold characters NATS names cannot)."""
    return "hbs_" + hashlib.sha256(group_key.encode()).hexdigest()[:24]


class _Held:
    """A QoS 1 message from the group's consumer, given to a local member and not yet
    acknowledged by it."""

    __slots__ = ("msg", "stored", "progress_at")

    def __init__(self, msg: Message, stored: Any, now: float) -> None:
        self.msg = msg
        self.stored = stored  # the JetStream message, acknowledged once the member has
        self.progress_at = now


class _Group:
    """One shared group on this instance: its local members and NATS resources."""

    __slots__ = ("key", "token", "subjects", "members", "active", "queue_subs", "pull",
                 "task", "ready", "held", "seqs", "wake", "stopped", "since")

    def __init__(self, key: str, subjects: tuple[str, ...]) -> None:
        self.key = key
        self.token = group_token(key)
        self.subjects = subjects  # live subjects, with the prefix
        self.members: set[str] = set()
        self.active = False  # a member is connected here: take messages
        self.queue_subs: list[Any] = []
        self.pull: Any = None
        self.task: asyncio.Future | None = None
        self.ready = asyncio.Event()
        self.held: dict[int, _Held] = {}  # id(message) -> held
        self.seqs: set[int] = set()  # the stream sequences held
        self.wake = asyncio.Event()
        self.stopped = False
        self.since = datetime.now(UTC)


class SharedGroups:
    """The instance's shared groups (see the module docstring); owned by `ClusterRouting`,
    which tells it of members joining and leaving (`joined`, `left`, `ended`)."""

    def __init__(self, routing: ClusterRouting) -> None:
        self.routing = routing
        self.groups: dict[str, _Group] = {}
        self._carried: dict[str, bool] = {}  # group key -> whether NATS carries its filter
        self._tick: asyncio.Future | None = None
        self.delivered = 0  # messages given to local members
        self.released = 0  # QoS 1 messages handed back to JetStream for another instance

    # -- members ---------------------------------------------------------------------------

    def delivers(self, group_key: str) -> bool:
        """Whether the cluster chooses this group's member (its filter is carried by NATS;
        `$share/g/$SYS/#` stays on its instance)."""
        carried = self._carried.get(group_key)
        if carried is None:
            carried = self._carried[group_key] = bool(self._subjects(group_key))
            if len(self._carried) > 4 * len(self.groups) + 1024:
                self._carried = {k: v for k, v in self._carried.items() if k in self.groups}
        return carried

    def _subjects(self, group_key: str) -> tuple[str, ...]:
        parts = group_key.split("/", 2)
        if len(parts) < 3 or parts[2].startswith("$"):
            return ()
        try:
            return filter_to_subjects(parts[2], self.routing.prefix)
        except SubjectError as exc:
            log.warning("cluster: shared filter %r is not carried by NATS: %s", group_key, exc)
            return ()

    def joined(self, client_id: str, group_key: str) -> None:
        """A local session holds `$share/<name>/<filter>` (a SUBSCRIBE, a restored or moved
        session)."""
        if not self.delivers(group_key):
            return
        group = self.groups.get(group_key)
        if group is None:
            group = self.groups[group_key] = _Group(group_key, self._subjects(group_key))
            group.task = self.routing.spawn(self._run(group))
        group.members.add(client_id)
        self._refresh(group)

    def left(self, client_id: str, group_key: str) -> None:
        group = self.groups.get(group_key)
        if group is None or client_id not in group.members:
            return
        group.members.discard(client_id)
        if not group.members:
            self._stop(group)
        else:
            self._refresh(group)

    def ended(self, client_id: str) -> None:
        """A local session ended: it is a member of no group here any more."""
        for group in [g for g in self.groups.values() if client_id in g.members]:
            self.left(client_id, group.key)

    async def ready(self, group_key: str) -> None:
        """Return once the group's consumer is bound here (tests, status)."""
        group = self.groups.get(group_key)
        if group is not None:
            await group.ready.wait()

    def status(self) -> dict[str, dict[str, Any]]:
        return {g.key: {"members": len(g.members), "active": g.active, "held": len(g.held)}
                for g in self.groups.values()}

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._tick is None:
            self._tick = self.routing.spawn(self._ticking())

    async def stop(self) -> None:
        """The instance leaves: what it holds unacknowledged goes back to JetStream."""
        if self._tick is not None:
            self._tick.cancel()
        for group in list(self.groups.values()):
            for held in list(group.held.values()):
                await _quietly(held.stored.nak())
            self._stop(group)

    def _stop(self, group: _Group) -> None:
        """The group's last local member left: its NATS resources here go. What the members
        still hold is acknowledged (an unsubscribed member's session may still send it; the
        group gets it no more)."""
        group.stopped = True
        group.wake.set()
        if self.groups.get(group.key) is group:
            del self.groups[group.key]
        for held in group.held.values():
            self.routing.spawn(_quietly(held.stored.ack()))
        group.held.clear()
        group.seqs.clear()
        for sub in group.queue_subs:
            self.routing.spawn(_quietly(sub.unsubscribe()))
        group.queue_subs = []
        if group.pull is not None:
            self.routing.spawn(_quietly(group.pull.unsubscribe()))
            group.pull = None

    def _refresh(self, group: _Group) -> None:
        """Take messages for the group while one of its members here is connected."""
        sessions = self.routing.broker.sessions
        active = False
        for client_id in group.members:
            session = sessions.get(client_id)
            conn = session.connection if session is not None else None
            if conn is not None and not conn.closing:
                active = True
                break
        if active == group.active:
            return
        group.active = active
        if active:
            group.wake.set()
            if group.ready.is_set():
                self.routing.spawn(self._take_live(group))
        else:
            subs, group.queue_subs = group.queue_subs, []
            for sub in subs:
                self.routing.spawn(_quietly(sub.unsubscribe()))

    async def _run(self, group: _Group) -> None:
        """Make (or find) the group's consumer, bind to it, then pull while active."""
        from nats.errors import TimeoutError as NatsTimeoutError

        routing = self.routing
        try:
            await routing.retry_jetstream(lambda: self._ensure_consumer(group))
            group.pull = await routing.js.pull_subscribe_bind(durable=group.token,
                                                              stream=routing.stream)
        except Exception as exc:
            log.warning("cluster: shared group %r has no consumer: %s", group.key, exc,
                        extra={"node": routing.node})
            return
        if group.stopped:
            await _quietly(group.pull.unsubscribe())
            return
        if group.active:
            await self._take_live(group)
        group.ready.set()
        log.info("cluster: shared group ready", extra={
            "node": routing.node, "group": group.key, "consumer": group.token})
        while not group.stopped and not routing.leaving:
            room = HELD - len(group.held)
            if not group.active or room <= 0:
                group.wake.clear()
                try:
                    await asyncio.wait_for(group.wake.wait(), 1.0)
                except TimeoutError:
                    pass
                continue
            try:
                batch = await group.pull.fetch(min(BATCH, room), timeout=1.0)
            except (TimeoutError, NatsTimeoutError):
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # no connection, or unsubscribed: tried again
                if group.stopped:
                    return
                log.debug("cluster: shared fetch failed: %s", exc)
                await asyncio.sleep(0.2)
                continue
            for m in batch:
                await self._take_stored(group, m)

    async def _ensure_consumer(self, group: _Group) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError

        routing = self.routing
        try:
            await routing.js.consumer_info(routing.stream, group.token)
            return
        except NotFoundError:
            pass
        cut = len(routing.live_ns)
        config = ConsumerConfig(
            durable_name=group.token, description=group.key[:256],
            ack_policy=AckPolicy.EXPLICIT, ack_wait=ACK_WAIT,
            deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=group.since,
            max_ack_pending=MAX_ACK_PENDING, inactive_threshold=INACTIVE,
            filter_subjects=sorted(routing.stored_ns + s[cut:] for s in group.subjects),
            num_replicas=routing.config.stream_replicas)
        try:
            await routing.js.add_consumer(routing.stream, config)
        except Exception:
            # another instance made it meanwhile (with its own start time): that one
            await routing.js.consumer_info(routing.stream, group.token)

    async def _take_live(self, group: _Group) -> None:
        """The queue subscriptions of an active group (QoS 0)."""
        if group.queue_subs or group.stopped:
            return

        async def received(m: Any) -> None:
            self._live(group, m)

        subs = []
        for subject in group.subjects:
            subs.append(await self.routing.nc.subscribe(subject, queue=group.token,
                                                        cb=received))
        if group.stopped or not group.active or group.queue_subs:
            for sub in subs:
                await _quietly(sub.unsubscribe())
            return
        group.queue_subs = subs
        await _quietly(self.routing.nc.flush(timeout=self.routing.config.publish_timeout))

    # -- messages --------------------------------------------------------------------------

    def _live(self, group: _Group, m: Any) -> None:
        """A live message of the group's queue: QoS 0 (QoS 1/2 ones come from the stream)."""
        routing = self.routing
        subject = m.subject
        if subject.startswith("$", len(routing.live_ns)) or subject.startswith("_INBOX."):
            return  # NATS's own traffic, which a `>` subject matches too
        try:
            _, qos, retain, props = hdr.message_flags(m.headers)
            if qos and m.headers and m.headers.get(hdr.MESSAGE_ID) is not None:
                return  # an instance's QoS 1/2 PUBLISH: from the group's consumer
            topic = subject_to_topic(subject, routing.prefix)
        except (hdr.HeaderError, SubjectError) as exc:
            log.warning("cluster: shared message on %r dropped: %s", subject, exc)
            return
        self._deliver(group, topic, m.data, qos, retain, props, None)

    async def _take_stored(self, group: _Group, m: Any) -> None:
        """A QoS 1/2 message from the group's consumer: to one local member."""
        routing = self.routing
        seq = m.metadata.sequence.stream
        if seq in group.seqs:  # delivered again while a member here holds it
            await _quietly(m.in_progress())
            return
        try:
            _, qos, retain, props = hdr.message_flags(m.headers)
            topic = subject_to_topic(m.subject[len(routing.stored_ns):])
        except (hdr.HeaderError, SubjectError, ValueError) as exc:
            log.warning("cluster: stored shared message on %r dropped: %s", m.subject, exc)
            await _quietly(m.term())
            return
        left = remaining_expiry(m.headers, m.metadata.timestamp)
        if left is not None:
            if left <= 0:
                await _quietly(m.ack())
                return
            props = dict(props or {})
            props[MESSAGE_EXPIRY_INTERVAL] = max(1, int(left + 0.999))
        if not group.active:  # its last member here went meanwhile: for another instance
            await _quietly(m.nak())
            return
        if qos == 2:
            # Never to two members [MQTT-4.8.2-4]: JetStream forgets it before a member has it.
            try:
                await m.ack_sync(timeout=routing.config.publish_timeout)
            except Exception as exc:
                log.debug("cluster: shared QoS 2 ack failed (delivered again): %s", exc)
                return
            if group.stopped or not self._deliver(group, topic, m.data, qos, retain, props,
                                                  None):
                log.warning("cluster: shared QoS 2 message lost: its member here went",
                            extra={"node": routing.node, "group": group.key})
            return
        if not self._deliver(group, topic, m.data, qos, retain, props, m):
            await _quietly(m.nak())

    def _deliver(self, group: _Group, topic: str, payload: bytes, qos: int, retain: bool,
                 props: dict | None, stored: Any) -> bool:
        now = time.monotonic()
        expires_at = 0.0
        if props and MESSAGE_EXPIRY_INTERVAL in props:
            props = dict(props)
            expires_at = now + props.pop(MESSAGE_EXPIRY_INTERVAL)
        msg = Message(topic, payload, qos, retain, props or None, expires_at,
                      self.routing.client_id)
        if not self.routing.broker.deliver_shared(msg, group.key, now):
            return False
        self.delivered += 1
        if stored is not None and qos == 1:
            group.held[id(msg)] = _Held(msg, stored, now)
            group.seqs.add(stored.metadata.sequence.stream)
        elif stored is not None:
            self.routing.spawn(_quietly(stored.ack()))
        return True

    # -- the members' acknowledgements -----------------------------------------------------

    async def _ticking(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                self.tick(time.monotonic())
            except Exception:
                log.exception("cluster: shared groups tick failed")

    def tick(self, now: float) -> None:
        """Which members are connected; which held QoS 1 messages their members acknowledged
        (acknowledged to JetStream), which ones wait for a member that is gone (back to
        JetStream), which ones still wait (JetStream told so)."""
        sessions = self.routing.broker.sessions
        for group in list(self.groups.values()):
            self._refresh(group)
            if not group.held:
                continue
            holder: dict[int, Any] = {}
            for client_id in group.members:
                session = sessions.get(client_id)
                if session is None:
                    continue
                for d in session.inflight.values():
                    holder[id(d.message)] = session
                for d in session.queue:
                    holder[id(d.message)] = session
            offline = set()
            for key, held in list(group.held.items()):
                session = holder.get(key)
                if session is None:  # acknowledged by its member (or expired, dropped)
                    self._done(group, key)
                    self.routing.spawn(_quietly(held.stored.ack()))
                elif session.connection is None:
                    offline.add(session)
                elif now - held.progress_at >= PROGRESS:
                    held.progress_at = now
                    self.routing.spawn(_quietly(held.stored.in_progress()))
            for session in offline:
                self._release(group, session, now)

    def _done(self, group: _Group, key: int) -> _Held | None:
        held = group.held.pop(key, None)
        if held is not None:
            group.seqs.discard(held.stored.metadata.sequence.stream)
        return held

    def _release(self, group: _Group, session: Any, now: float) -> None:
        """`session`'s member is offline and no other member here took its unacknowledged
        QoS 1 messages of the group (the broker offered them when it disconnected): they go
        back to JetStream, for a member of another instance. Everything else it holds stays."""
        taken = session.take_shared_deliveries()
        for d in taken:
            held = self._done(group, id(d.message)) if d.group == group.key else None
            if held is None:
                session.deliver(d, now)  # not this group's, or QoS 0: it stays
            else:
                self.released += 1
                self.routing.spawn(_quietly(held.stored.nak()))
        if self.released:
            log.debug("cluster: shared messages of an offline member handed back",
                      extra={"node": self.routing.node, "group": group.key,
                             "client_id": session.client_id})


async def _quietly(awaitable: Any) -> None:
    """A NATS call whose failure changes nothing (no connection: JetStream delivers again)."""
    try:
        await awaitable
    except Exception as exc:
        log.debug("cluster: %s", exc)
