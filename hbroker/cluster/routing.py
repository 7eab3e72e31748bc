"""Live routing between the instances of a cluster, over NATS: a hook and an in-process client.

Outgoing: every message a local client publishes (`on_message_published`) leaves for NATS
once, on the subject its topic maps to (`hbroker.cluster.subjects`, nats-server's mapping),
with its flags and properties as headers (`hbroker.cluster.headers`). The broker routes it to
its own local subscribers as usual, so an instance never waits for NATS to deliver locally.

- QoS 0: one core NATS publish.
- QoS 1 and 2: first stored in the cluster's JetStream stream (subject `$HB.msgs.<subject>`,
  replicated, de-duplicated by `Nats-Msg-Id`); the publisher's PUBACK/PUBREC is held
  (`HeldAck.hold`) until JetStream acknowledged the store, and refused if it did not (0x83
  Implementation specific error when the instance has no NATS connection, 0x80 Unspecified
  error when JetStream answered with an error or not within `[cluster] publish_timeout`): an
  acknowledged message is in JetStream. Then it is published on the live subject, so that a
  QoS 2 message refused by JetStream (and so sent again by its publisher as a new message)
  was never delivered elsewhere. The other instances take it from the stream, not from the
  live subject (`hbroker.cluster.consumer`: one durable consumer per instance), so a message
  acknowledged to its publisher reaches them even if the publisher's instance or its NATS
  server dies right after; NATS-native clients read the live copy.
- Order: what a connection publishes leaves for the live subjects in PUBLISH order, whatever
  its QoS: the outgoing queue is one FIFO and a message waits behind an earlier one whose
  JetStream store is not acknowledged yet.

A stream cannot capture every subject (nats-server refuses a stream on `>`), so the stored
copy lives under `$HB.msgs.` (`<prefix>.$HB.msgs.` with a subject prefix); the live copy
keeps the plain mapped subject, which is what NATS-native clients and nats-server's own MQTT
see. A retained PUBLISH is also stored as its topic's record in the retained stream
(`hbroker.cluster.retained`), from which every other instance takes it.

Incoming: the instance subscribes on NATS to the distinct filters its sessions hold (two
subjects for `a/#`: `a.>` and `a`), one NATS subscription per distinct subject however many
sessions share it, kept while any session holds the filter (also while the session is
offline: its messages are queued for it) and dropped when the last one goes. A message from
NATS whose `Hb-Origin` is this instance is its own echo and is dropped; any other is
published into the broker by the cluster's in-process client, whose own publishes are not
sent back to NATS. The broker then routes it as any message: ACL, No Local, Retain As
Published, subscription identifiers, the sessions' queues.

`$share` groups are not part of that: the broker gives their messages to no local member
(`delivers_shared`), and `hbroker.cluster.shared` hands each one to one member cluster-wide
(a NATS queue for QoS 0, one durable consumer per group for QoS 1/2).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from hbroker.cluster import headers as hdr
from hbroker.cluster import retained
from hbroker.cluster.consumer import InstanceConsumer, consumer_name
from hbroker.cluster.leases import InstanceLeases
from hbroker.cluster.sessions import ClusterSessions, node_token
from hbroker.cluster.shared import SharedGroups
from hbroker.cluster.subjects import (
    SubjectError,
    filter_to_subjects,
    subject_to_topic,
    topic_to_subject,
)
from hbroker.cluster.sys_topics import ClusterSysPublisher
from hbroker.cluster.wills import ClusterWills
from hbroker.config import default_node_name
from hbroker.hooks import REFUSED, Hook
from hbroker.inprocess import InProcessClient
from hbroker.reason_codes import ReasonCode

if TYPE_CHECKING:
    from hbroker.acknowledgement import HeldAck
    from hbroker.config import ClusterConfig
    from hbroker.hooks import ClientInfo
    from hbroker.session import Message

log = logging.getLogger("hbroker.cluster")

STREAM_SUBJECT = "$HB.msgs."  # the stored copy of a QoS 1/2 message: STREAM_SUBJECT + subject


def namespace(prefix: str, name: str) -> str:
    """The start of the subjects of one of the cluster's streams (`$HB.msgs.`, or with a
    subject prefix `hb.$HB.msgs.`): clusters with different prefixes on one NATS system have
    streams whose subjects do not overlap, as NATS requires."""
    return f"{prefix}.{name}" if prefix else name
JOIN_TIMEOUT = 30.0  # seconds JetStream has to accept the stream when an instance starts
_SHARE = "$share/"


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether NATS subscription subject `pattern` (`*`, `>`) matches `subject`."""
    ptoks = pattern.split(".")
    stoks = subject.split(".")
    for i, tok in enumerate(ptoks):
        if tok == ">":
            return len(stoks) > i
        if i >= len(stoks) or (tok != "*" and tok != stoks[i]):
            return False
    return len(ptoks) == len(stoks)


def _settled(future: asyncio.Future) -> None:
    """A local delivery's acknowledgement: nothing waits for it (a closing client fails it)."""
    if not future.cancelled():
        future.exception()


def _chain(acknowledged: asyncio.Future, done: asyncio.Future) -> None:
    if done.done():
        return
    if acknowledged.cancelled():
        done.cancel()
    elif acknowledged.exception() is not None:
        done.set_exception(acknowledged.exception())
    else:
        done.set_result(acknowledged.result())


class ClusterError(Exception):
    """The instance cannot join its cluster (no NATS server answers, the stream is refused)."""


def stream_name(prefix: str) -> str:
    """The JetStream stream of a cluster (one per subject prefix)."""
    return "HBROKER_MSGS" + ("_" + prefix.replace(".", "_").upper() if prefix else "")


class _Seen:
    """The message numbers of one sender's run seen lately: within WINDOW of the highest,
    each is taken once; one further behind is a late copy."""

    WINDOW = 1 << 16

    __slots__ = ("high", "numbers")

    def __init__(self) -> None:
        self.high = 0
        self.numbers: set[int] = set()

    def first(self, n: int) -> bool:
        if n > self.high:
            self.high = n
            if len(self.numbers) >= 2 * self.WINDOW:
                floor = n - self.WINDOW
                self.numbers = {x for x in self.numbers if x > floor}
        elif n <= self.high - self.WINDOW or n in self.numbers:
            return False
        self.numbers.add(n)
        return True

    def mark(self, n: int) -> None:
        """`n` was taken (by an earlier run of this instance, in its stored sessions)."""
        self.high = max(self.high, n)
        self.numbers.add(n)


class _Outgoing:
    """A message on its way to NATS: stored first when `ack` (QoS 1/2), then live."""

    __slots__ = ("subject", "payload", "headers", "ack", "stores", "pending", "failed",
                 "deadline", "done")

    def __init__(self, subject: str, payload: bytes, headers: dict[str, str],
                 ack: HeldAck | None) -> None:
        self.subject = subject
        self.payload = payload
        self.headers = headers
        self.ack = ack
        # (subject, stream, headers) of each JetStream store to make before it goes live:
        # the message (QoS 1/2), the topic's retained record (RETAIN)
        self.stores: list[tuple[str, str, dict[str, str]]] = []
        self.pending = 0  # stores not acknowledged yet: live once none is left
        self.failed = False
        self.deadline = 0.0
        self.done: asyncio.Future | None = None  # True once stored, False if not (wills)


class ClusterRouting(Hook):
    """The cluster's live routing (see the module docstring). `join` connects to NATS and
    makes the stream and the in-process client; the server awaits it before its listeners
    accept connections."""

    name = "cluster"

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.node = config.name or default_node_name()
        self.prefix = config.subject_prefix
        self.stream = stream_name(self.prefix)
        self.retained_stream = retained.stream_name(self.prefix)
        self.stored_ns = namespace(self.prefix, STREAM_SUBJECT)
        self.retained_ns = namespace(self.prefix, retained.SUBJECT)
        self.live_ns = self.prefix + "." if self.prefix else ""
        self.client_id = f"$cluster/{self.node}"
        self.broker: Any = None
        self.nc: Any = None
        self.js: Any = None
        self.client: InProcessClient | None = None
        self.connected = False
        self.joined = False  # the consumer runs, the retained messages are in
        self.leaving = False
        # subject -> [NATS subscription or None while subscribing, sessions holding it,
        # the task subscribing]
        self._interest: dict[str, list[Any]] = {}
        self._filters: dict[str, set[str]] = {}  # client id -> its non-$share filters
        self._outgoing: deque[_Outgoing] = deque()  # in PUBLISH order
        self._unstarted: deque[_Outgoing] = deque()  # QoS 1/2 whose store is not sent yet
        self._progress = asyncio.Event()  # a store was acknowledged or refused
        self._sending = False
        self._ids = itertools.count(1)
        self._run = f"{self.node}-{int(time.time() * 1000):x}"  # unique per process
        self._seen: dict[str, _Seen] = {}  # sender's run -> the numbers seen lately
        # (topic, payload, QoS, RETAIN, properties, Hb-Id) from NATS, to publish in order
        self._incoming: deque[tuple[str, bytes, int, bool, dict | None, str | None]] = deque()
        self._delivering = False
        # (topic, Hb-Id or None) of each message the in-process client is publishing, in order
        self._stamps: deque[tuple[str, str | None]] = deque()
        self._tasks: set[asyncio.Task] = set()
        self._retained_sub: Any = None
        self.forwarded = 0  # messages sent to NATS
        self.received = 0  # messages from NATS published locally
        self.refused = 0  # QoS 1/2 publishes JetStream did not store
        self.sessions = ClusterSessions(self)
        self.moving_in: dict[str, int] = {}  # live subjects of sessions moving in -> count
        self.consumer = InstanceConsumer(self, consumer_name(node_token(self.node)))
        self.groups = SharedGroups(self)  # $share groups cluster-wide (hbroker.cluster.shared)
        token = node_token(self.node)
        self.wills = ClusterWills(self, token)  # wills cluster-wide (hbroker.cluster.wills)
        self.leases = InstanceLeases(self, token, on_fence=self._fence,
                                     on_dead=self.wills.instance_dead,
                                     on_declared_dead=self._declared_dead)
        self.sys: ClusterSysPublisher | None = None

    @property
    def run(self) -> str:
        """This process's run of the instance: its node name and start time."""
        return self._run

    # -- joining -----------------------------------------------------------------------

    async def join(self, broker: Any) -> None:
        """Connect to NATS, make sure the stream exists, connect the in-process client."""
        from nats.js.api import StorageType, StreamConfig

        from hbroker.cluster.nats_connection import connect

        self.broker = broker
        self.nc = await connect(self.config, name=self.node,
                                on_disconnected=self._on_disconnected,
                                on_reconnected=self._on_reconnected,
                                on_error=self._on_error)
        self.connected = True
        self.js = self.nc.jetstream(timeout=self.config.publish_timeout)
        messages = StreamConfig(name=self.stream,
                                subjects=[self.stored_ns + ">"],
                                num_replicas=self.config.stream_replicas,
                                storage=StorageType.FILE, duplicate_window=120.0)
        await self._ensure_stream(messages)
        kept = await self._ensure_stream(retained.stream_config(
            self.prefix, self.config.stream_replicas))
        await self.sessions.start()
        await self.wills.start()
        # The previous run's lease (an instance killed and started again within its lease:
        # nobody declared it dead, so its clients' wills are its own to publish).
        previous = await self.leases.start()
        await self.sessions.reconcile()
        await self.wills.previous_run(previous)
        # The sessions storage restored hold their filters without a SUBSCRIBE: their
        # interest is taken now, before any client connects.
        for client_id, session in list(broker.sessions.items()):
            for topic_filter in session.subscriptions:
                self._subscribed(client_id, topic_filter)
        recognised = self.recognise_restored()
        if recognised:
            log.info("cluster: restored sessions hold messages from the stream", extra={
                "node": self.node, "messages": recognised})
        # The in-process client first: what the consumer takes goes through it.
        client = InProcessClient(broker, self.client_id)
        await client.connect()
        self.client = client
        if self._incoming and not self._delivering:  # live messages that came meanwhile
            self._delivering = True
            self._spawn(self._deliver())
        await self.consumer.start()
        self.groups.start()
        await self._follow_retained(kept.state.messages)
        self.joined = True
        if broker.config.sys.enabled:
            self.sys = ClusterSysPublisher(broker, self)
            self._spawn(self.sys.publishing())
        log.info("cluster joined", extra={"node": self.node, "stream": self.stream,
                                          "servers": self.nc.connected_url.netloc
                                          if self.nc.connected_url else None})

    async def _follow_retained(self, records: int) -> None:
        """Start the ordered consumer of the retained stream (holding `records` messages);
        returns once every topic's record it held at the start is in the broker."""
        from nats.js.api import DeliverPolicy
        from nats.js.errors import NotFoundError, ServiceUnavailableError

        loaded = asyncio.get_running_loop().create_future()
        if not records:
            loaded.set_result(0)
        count = 0

        async def record(m: Any) -> None:
            nonlocal count
            meta = m.metadata
            self._retained_record(m, meta)
            count += 1
            if not loaded.done() and not meta.num_pending:
                loaded.set_result(count)

        deadline = time.monotonic() + JOIN_TIMEOUT
        while True:  # a stream just made may not be known to every server yet
            try:
                self._retained_sub = await self.js.subscribe(
                    self.retained_ns + ">",
                    stream=self.retained_stream, cb=record, ordered_consumer=True,
                    deliver_policy=DeliverPolicy.LAST_PER_SUBJECT)
                break
            except (TimeoutError, NotFoundError, ServiceUnavailableError):
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.1)
        count = await asyncio.wait_for(loaded, JOIN_TIMEOUT)
        while self._incoming or self._delivering:  # published into the broker
            await asyncio.sleep(0)
        if count:
            log.info("cluster: retained messages loaded", extra={
                "node": self.node, "records": count})

    def _retained_record(self, m: Any, meta: Any) -> None:
        """A topic's retained record from the stream: into the broker (RETAIN 1), unless this
        instance published it in this run (it set it itself) or it has expired."""
        try:
            message_id = m.headers.get(hdr.MESSAGE_ID) if m.headers else None
            if message_id is not None and message_id.rpartition(".")[0] == self._run:
                return
            _, qos, _, props = hdr.message_flags(m.headers)
            if m.data and not retained.expiry_left(m.headers, meta.timestamp, props):
                return
            topic = subject_to_topic(m.subject[len(self.retained_ns):])
        except (hdr.HeaderError, SubjectError, ValueError) as exc:
            log.warning("cluster: retained record on %r dropped: %s", m.subject, exc)
            return
        self._queue_incoming(topic, m.data, qos, True, props, None, None)

    def unready(self) -> str | None:
        """Why this instance is not ready to serve as part of the cluster (`/readyz`), or
        None: joined, and connected to NATS."""
        if self.client is None:
            return "not joined yet"
        if not self.connected:
            return "no NATS connection: QoS 1/2 publishes are refused"
        if self.leases.fenced:
            return "fenced: the instance's lease is not renewed (cut off from the cluster)"
        return None

    @property
    def state(self) -> str:
        """`joining`, `joined`, `fenced` (lease not renewed: clients sent elsewhere) or
        `disconnected` (no NATS connection)."""
        if self.client is None:
            return "joining"
        if self.leases.fenced:
            return "fenced"
        return "joined" if self.connected else "disconnected"

    def _fence(self, fenced: bool) -> None:
        """The lease was not renewed for `FENCE` seconds (True): every client is sent
        elsewhere (DISCONNECT 0x9C Use another server; 3.1.1: closed) without its will, which
        stays in the cluster's bucket for whoever wins: a survivor that declares this
        instance dead, or this instance if its lease is renewed again (False)."""
        self.wills.fence(fenced)
        if not fenced:
            log.info("cluster: lease renewed again: clients are accepted", extra={
                "node": self.node})
            return
        broker = self.broker
        closed = 0
        for conn in list(broker.connections):
            if conn.client_id == self.client_id or conn.closing:
                continue
            conn.disconnect(ReasonCode.USE_ANOTHER_SERVER, "fenced: cut off from the cluster",
                            publish_will=False)
            closed += 1
        log.warning("cluster: fenced: %d clients sent to another instance; new connections "
                    "are refused (0x9C) until the lease is renewed", closed,
                    extra={"node": self.node})

    def _declared_dead(self) -> None:
        """The others declared this instance dead while it was cut off: a survivor
        publishes the wills it withheld; its sessions claimed elsewhere meanwhile end here."""
        self.wills.declared_dead()
        self._spawn(self.sessions.reconcile())

    async def _ensure_stream(self, stream: Any) -> Any:
        from nats.js.errors import BadRequestError, NotFoundError

        async def ensure() -> Any:
            try:
                return await self.js.add_stream(stream)
            except BadRequestError as refused:
                try:
                    return await self.js.update_stream(stream)
                except NotFoundError:  # not there, and refused: e.g. subjects overlap
                    raise ClusterError(f"stream {stream.name} {stream.subjects}: "
                                       f"{refused.description}") from refused

        return await self.retry_jetstream(ensure)

    async def retry_jetstream(self, call: Any) -> Any:
        """`await call()` until JetStream answers, within JOIN_TIMEOUT: a new NATS cluster
        may need a few seconds to elect the leader of a stream it just made."""
        from nats.js.errors import NoStreamResponseError, ServiceUnavailableError

        deadline = time.monotonic() + JOIN_TIMEOUT
        while True:
            try:
                return await call()
            except (TimeoutError, ServiceUnavailableError, NoStreamResponseError):
                if time.monotonic() >= deadline:
                    raise
                log.info("cluster: waiting for JetStream to answer", extra={"node": self.node})
                await asyncio.sleep(0.1)

    async def leave(self) -> None:
        self.leaving = True
        await self.leases.stop()
        self.wills.stop()
        await self.consumer.stop()
        await self.groups.stop()
        if self.client is not None:
            await self.client.close()
        if self.nc is not None:
            await self.nc.drain()
        self.connected = False

    async def _on_disconnected(self) -> None:
        self.connected = False
        if self.leaving:
            return
        log.warning("cluster: NATS connection lost; QoS 1/2 publishes are refused until it "
                    "returns", extra={"node": self.node})

    async def _on_reconnected(self) -> None:
        self.connected = True
        log.info("cluster: NATS connection back", extra={
            "node": self.node,
            "server": self.nc.connected_url.netloc if self.nc.connected_url else None})

    async def _on_error(self, exc: Exception) -> None:
        log.warning("cluster: NATS error: %s", exc, extra={"node": self.node})

    # -- outgoing ------------------------------------------------------------------------

    def on_message_published(self, client: ClientInfo, msg: Message,
                             ack: HeldAck | None) -> int | None:
        topic = msg.topic
        if client is not None and client.client_id == self.client_id:
            self._stamp(msg)
            return None  # a message from NATS goes no further
        if topic.startswith("$"):
            return None  # $SYS stays on its instance
        try:
            base = topic_to_subject(topic)
        except SubjectError:
            return ReasonCode.TOPIC_NAME_INVALID  # NATS cannot carry it
        expires_in = None
        if msg.expires_at:
            expires_in = msg.expires_at - time.monotonic()
        if ack is not None and not self.connected:
            self.refused += 1
            return ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR
        message_id = self.wills.message_id(msg) or f"{self._run}.{next(self._ids)}"
        self._send_out(base, msg, expires_in, message_id, ack)
        return None

    async def publish_for(self, msg: Message, message_id: str) -> bool:
        """Publish `msg` (a will this instance publishes for a client of a dead instance,
        or of its own fenced past) into the cluster under `message_id` and to the local
        subscribers; True once JetStream stored it (QoS 1/2, retained; QoS 0: sent)."""
        try:
            base = topic_to_subject(msg.topic)
        except SubjectError:
            return True  # nothing NATS can carry: the will could never have been published
        if self.client is None or not self.connected:
            return False
        run, _, number = message_id.rpartition(".")
        if self._seen.setdefault(run, _Seen()).first(int(number)) and not self.client.closed:
            # not seen here yet (its own instance may have sent it before it died)
            self._stamps.append((msg.topic, message_id))
            await self.client.send(msg.topic, msg.payload, msg.qos, msg.retain,
                                   msg.properties)
        done = asyncio.get_running_loop().create_future()
        self._send_out(base, msg, None, message_id, None, done)
        return await done

    def _send_out(self, base: str, msg: Message, expires_in: float | None, message_id: str,
                  ack: HeldAck | None, done: asyncio.Future | None = None) -> None:
        headers = hdr.message_headers(self.node, msg.qos, msg.retain, msg.properties,
                                      expires_in)
        headers[hdr.MESSAGE_ID] = message_id
        if self.sessions.recording:
            self.sessions.tag(msg, message_id)
        out = _Outgoing(self.live_ns + base, msg.payload, headers, ack)
        out.done = done
        if msg.qos:  # stored whether or not a publisher waits (a will has no ack)
            if ack is not None:
                ack.hold()
            out.stores.append((self.stored_ns + base, self.stream,
                               {**headers, "Nats-Msg-Id": message_id}))
        if msg.retain:  # the topic's retained message (or its clearing) for every instance
            out.stores.append((self.retained_ns + base, self.retained_stream, headers))
        self._outgoing.append(out)
        if out.stores:
            out.pending = len(out.stores)
            self._unstarted.append(out)
        elif done is not None:
            done.set_result(True)
        if not self._sending:
            self._sending = True
            self._spawn(self._send())

    async def _send(self) -> None:
        """Store what must be stored (pipelined), then publish live in order; acknowledge
        the stored ones once the NATS server has their live copies too."""
        queue, unstarted = self._outgoing, self._unstarted
        try:
            while queue:
                while unstarted:  # start every store not started yet
                    await self._store(unstarted.popleft())
                while queue and (not queue[0].pending or queue[0].failed):
                    out = queue.popleft()
                    if out.failed:
                        continue
                    try:
                        await self.nc.publish(out.subject, out.payload, headers=out.headers)
                        self.forwarded += 1
                    except Exception as exc:  # no connection: a QoS 0 message is lost
                        log.debug("cluster: live publish failed: %s", exc)
                if not queue or unstarted:
                    continue
                head = queue[0]
                wait = head.deadline - time.monotonic()
                if wait <= 0:
                    self._refuse(head, ReasonCode.UNSPECIFIED_ERROR, "no JetStream answer")
                    continue
                self._progress.clear()
                try:
                    await asyncio.wait_for(self._progress.wait(), wait)
                except TimeoutError:
                    pass
        finally:
            self._sending = False

    async def _store(self, out: _Outgoing) -> None:
        out.deadline = time.monotonic() + self.config.publish_timeout
        for subject, stream, headers in out.stores:
            try:
                future = await self.js.publish_async(subject, out.payload, headers=headers,
                                                     stream=stream)
            except Exception as exc:
                self._refuse(out, ReasonCode.UNSPECIFIED_ERROR if self.connected
                             else ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR, str(exc))
                return
            future.add_done_callback(lambda f, out=out: self._stored(out, f))

    def _stored(self, out: _Outgoing, future: asyncio.Future) -> None:
        if future.cancelled() or future.exception() is not None:
            self._refuse(out, ReasonCode.UNSPECIFIED_ERROR,
                         "cancelled" if future.cancelled() else str(future.exception()))
            return
        if out.failed or not out.pending:
            return
        out.pending -= 1
        if out.pending:
            return
        ack = out.ack
        if out.done is not None and not out.done.done():
            out.done.set_result(True)
        if ack is not None:
            if ack.code == ReasonCode.NO_MATCHING_SUBSCRIBERS:
                # None here, but it went to the other instances, whose subscribers this
                # one does not know of: a success, never 0x10 No matching subscribers.
                ack.code = ReasonCode.SUCCESS
            ack.release()
        self._progress.set()

    def _refuse(self, out: _Outgoing, code: int, why: str) -> None:
        if out.failed or not out.pending:
            return
        if out.done is not None and not out.done.done():
            out.done.set_result(False)
        if out.ack is None:  # a will, or QoS 0 retained: nobody to refuse; it goes on live
            log.warning("cluster: message without a publisher's acknowledgement (a will, "
                        "or QoS 0 retained) not stored in JetStream: %s", why,
                        extra={"node": self.node, "subject": out.subject})
            out.pending = 0
            self._progress.set()
            return
        out.failed = True
        self.refused += 1
        log.warning("cluster: message not stored in JetStream, refused: %s", why,
                    extra={"node": self.node, "subject": out.subject, "reason": f"{code:#04x}"})
        out.ack.refuse(code, REFUSED)
        self._progress.set()

    # -- interest ------------------------------------------------------------------------

    # -- sessions (hbroker.cluster.sessions) --------------------------------------------

    def on_connected(self, client: ClientInfo) -> None:
        if client.client_id != self.client_id:
            self.wills.connected(client.client_id)

    def claim_session(self, client: ClientInfo, clean_start: bool) -> Any:
        return self.sessions.claim(client, clean_start)

    def on_session_created(self, client: ClientInfo) -> None:
        self.sessions.opened(client.client_id)

    def on_session_resumed(self, client: ClientInfo) -> None:
        self.sessions.opened(client.client_id)

    def on_session_ended(self, client_id: str, reason: str) -> None:
        for topic_filter in self._filters.pop(client_id, ()):
            self._drop_interest(topic_filter)
        self.groups.ended(client_id)
        self.sessions.ended(client_id, reason)

    def on_subscribed(self, client: ClientInfo, topic_filter: str, options: Any,
                      new: bool) -> None:
        self._subscribed(client.client_id, topic_filter)

    def hold_filter(self, client_id: str, topic_filter: str) -> None:
        """A session made here without a SUBSCRIBE (moved from another instance) holds the
        filter: NATS interest is taken for it."""
        self._subscribed(client_id, topic_filter)

    def moving(self, filters: Any, starts: bool) -> None:
        """A session with these filters starts (or ends) moving in: meanwhile its QoS 1/2
        messages come from the stream only."""
        for subject in (s for f in filters for s in self._subjects(f)):
            count = self.moving_in.get(subject, 0) + (1 if starts else -1)
            if count > 0:
                self.moving_in[subject] = count
            else:
                self.moving_in.pop(subject, None)

    def _subscribed(self, client_id: str, topic_filter: str) -> None:
        if client_id == self.client_id:
            return
        if topic_filter.startswith(_SHARE):  # a group's messages: hbroker.cluster.shared
            self.groups.joined(client_id, topic_filter)
            return
        if topic_filter.startswith("$"):
            return  # $SYS stays on its instance
        filters = self._filters.setdefault(client_id, set())
        if topic_filter in filters:
            return
        filters.add(topic_filter)
        self._hold_interest(topic_filter)

    def on_unsubscribed(self, client: ClientInfo, topic_filter: str) -> None:
        if topic_filter.startswith(_SHARE):
            self.groups.left(client.client_id, topic_filter)
            return
        filters = self._filters.get(client.client_id)
        if filters is None or topic_filter not in filters:
            return
        filters.discard(topic_filter)
        if not filters:
            del self._filters[client.client_id]
        self._drop_interest(topic_filter)

    def delivers_shared(self, group: str) -> bool:
        """The cluster chooses the member of every group NATS carries, cluster-wide: the
        broker gives their messages to no local member (hbroker.cluster.shared does)."""
        return self.groups.delivers(group)

    def _subjects(self, topic_filter: str) -> tuple[str, ...]:
        try:
            return filter_to_subjects(topic_filter, self.prefix)
        except SubjectError as exc:
            log.warning("cluster: filter %r is not carried by NATS: %s", topic_filter, exc)
            return ()

    def _hold_interest(self, topic_filter: str) -> None:
        for subject in self._subjects(topic_filter):
            entry = self._interest.get(subject)
            if entry is not None:
                entry[1] += 1
                continue
            entry = self._interest[subject] = [None, 1, None]
            entry[2] = self._spawn(self._subscribe(subject))
            self.consumer.changed()

    def _drop_interest(self, topic_filter: str) -> None:
        for subject in self._subjects(topic_filter):
            entry = self._interest.get(subject)
            if entry is None:
                continue
            entry[1] -= 1
            if entry[1] == 0:
                del self._interest[subject]
                self.consumer.changed()
                if entry[0] is not None:
                    self._spawn(entry[0].unsubscribe())

    async def _subscribe(self, subject: str) -> None:
        async def received(m: Any) -> None:
            await self._received(m, subject)

        sub = await self.nc.subscribe(subject, cb=received)
        entry = self._interest.get(subject)
        if entry is None or entry[0] is not None:  # dropped meanwhile
            await sub.unsubscribe()
            return
        entry[0] = sub

    def stored_subjects(self) -> frozenset[str]:
        """The subjects (without prefix) of every filter this instance's sessions hold:
        what its consumer of the message stream takes."""
        cut = len(self.live_ns)
        return frozenset(s[cut:] for s in self._interest)

    async def interest_ready(self, filters: Any) -> None:
        """Return once NATS has this instance's subscriptions for `filters`: the stream's
        consumer filters on them (QoS 1/2), and the server it is connected to has the live
        ones (QoS 0; a flush answered after they were sent)."""
        subjects = [subject for f in filters for subject in self._subjects(f)]
        tasks = [entry[2] for subject in subjects
                 if (entry := self._interest.get(subject)) is not None and entry[0] is None
                 and entry[2] is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        cut = len(self.live_ns)
        await asyncio.wait_for(self.consumer.ready({s[cut:] for s in subjects}),
                               self.config.publish_timeout)
        await self.nc.flush(timeout=self.config.publish_timeout)

    async def let_incoming_in(self, seq: int = 0, must: bool = False) -> int:
        """Return once what NATS sent this instance so far is in the broker (a session
        about to leave has everything that came for it; one moving in, everything the old
        owner did not have), or after `publish_timeout`: every QoS 1/2 message of the
        consumer's filter stored up to stream sequence `seq` (0: so far), and the live
        messages the server has sent. Returns the sequence up to which the broker has
        them. `must`: TimeoutError when the consumer could not catch up."""
        seq = await self.consumer.reached(seq, self.config.publish_timeout, must)
        await self.nc.flush(timeout=self.config.publish_timeout)
        deadline = time.monotonic() + self.config.publish_timeout
        while (self._incoming or self._delivering or any(
                e[0] is not None and e[0].pending_msgs for e in self._interest.values())) \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        return seq

    def subscribed(self) -> dict[str, int]:
        """NATS subject -> sessions holding it (for status and tests)."""
        return {s: e[1] for s, e in self._interest.items()}

    # -- incoming ------------------------------------------------------------------------

    async def _received(self, m: Any, through: str) -> None:
        subject = m.subject
        if subject.startswith("$", len(self.live_ns)) or subject.startswith("_INBOX."):
            # NATS's own traffic (`$JS.API`, the streams' stored copies, replies), which a
            # `>` subscription (MQTT `#`) also matches: not MQTT messages
            return
        try:
            origin, qos, retain, props = hdr.message_flags(m.headers)
            if origin == self.node:
                return  # its own echo: routed locally when it was published
            message_id = m.headers.get(hdr.MESSAGE_ID) if m.headers else None
            if message_id is not None and (retain or (qos and (
                    self.consumer.covers(through[len(self.live_ns):])
                    or through in self.moving_in))):
                # an instance's QoS 1/2 or retained PUBLISH: taken from the streams instead
                # (a QoS 1/2 one from the live subject until the consumer's filter has it:
                # a new subscription gets what is published after its SUBACK; not for a
                # session moving in, which takes exactly what the old owner did not have
                # from the stream)
                return
            if not self._first_copy(m, through):
                return
            topic = subject_to_topic(m.subject, self.prefix)
        except (hdr.HeaderError, SubjectError) as exc:
            log.warning("cluster: message on %r dropped: %s", m.subject, exc)
            return
        self._queue_incoming(topic, m.data, qos, retain, props, message_id, None)

    def _stamp(self, msg: Message) -> None:
        """The in-process client published `msg`: the oldest message it is publishing with
        that topic (those before it were refused before routing, e.g. by the ACL). A QoS 1/2
        message's sender becomes `$cluster/<name>~<Hb-Id>`, which durable storage keeps
        with each of its deliveries: an instance killed before JetStream had its
        acknowledgement recognises, when it starts again, the messages its sessions already
        hold (`recognise_restored`) and does not take them twice."""
        stamps = self._stamps
        while stamps:
            topic, message_id = stamps.popleft()
            if topic == msg.topic:
                if message_id is not None:
                    if msg.qos:
                        msg.sender = f"{self.client_id}~{message_id}"
                    if self.sessions.recording:
                        self.sessions.tag(msg, message_id)
                return

    def recognise_restored(self) -> int:
        """The messages from the stream that the sessions restored from storage hold
        (stamped by `_stamp`): seen, so that their copies delivered again are not taken.
        Returns how many."""
        prefix = self.client_id + "~"
        count = 0
        for session in self.broker.sessions.values():
            for delivery in (*session.inflight.values(), *session.queue):
                sender = delivery.message.sender
                if isinstance(sender, str) and sender.startswith(prefix):
                    run, _, number = sender[len(prefix):].rpartition(".")
                    if number.isdigit():
                        self._seen.setdefault(run, _Seen()).mark(int(number))
                        count += 1
        return count

    def take_stored(self, m: Any) -> asyncio.Future | None:
        """A QoS 1/2 message from the instance's consumer of the message stream: into the
        broker, unless it is this instance's own or a copy already taken. Returns the
        future of the broker's acknowledgement, or None when there is nothing to wait for."""
        try:
            origin, qos, retain, props = hdr.message_flags(m.headers)
            if origin == self.node:
                return None
            message_id = m.headers.get(hdr.MESSAGE_ID) if m.headers else None
            if message_id is None or retain:
                return None  # a retained PUBLISH comes from the retained stream
            if m.metadata.num_delivered > 1:  # again: taken unless it was taken before
                run, _, number = message_id.rpartition(".")
                seen = self._seen.setdefault(run, _Seen())
                if int(number) in seen.numbers:
                    return None
                seen.numbers.add(int(number))
            elif not self._first_copy(m, ""):
                return None
            base = m.subject[len(self.stored_ns):]
            meta = m.metadata
            if self.consumer.before(base, meta.sequence.stream, meta.num_delivered > 1):
                return None  # published before this instance subscribed to its topic
            topic = subject_to_topic(base)
        except (hdr.HeaderError, SubjectError, ValueError) as exc:
            log.warning("cluster: stored message on %r dropped: %s", m.subject, exc)
            return None
        done = asyncio.get_running_loop().create_future()
        done.add_done_callback(lambda f, mid=message_id: self._taken(mid, f))
        self._queue_incoming(topic, m.data, qos, retain, props, message_id, done)
        return done

    def _taken(self, message_id: str, done: asyncio.Future) -> None:
        """A stored message the broker did not take is delivered again by JetStream: not
        a copy already seen then."""
        from hbroker.cluster.consumer import AGAIN

        if done.cancelled() or done.exception() is not None or done.result() in AGAIN:
            run, _, number = message_id.rpartition(".")
            seen = self._seen.get(run)
            if seen is not None:
                seen.numbers.discard(int(number))

    def _queue_incoming(self, topic: str, payload: bytes, qos: int, retain: bool,
                        props: dict | None, message_id: str | None,
                        done: asyncio.Future | None) -> None:
        self._incoming.append((topic, payload, qos, retain, props, message_id, done))
        if not self._delivering:
            self._delivering = True
            self._spawn(self._deliver())

    def _first_copy(self, m: Any, through: str) -> bool:
        """Whether `m` is the first copy of its message: NATS delivers one copy per matching
        subscription of the connection (`a.>`, `a.*` and `a.b` all match `a.b`), and the
        broker routes each message once to all its local subscriptions. An instance numbers
        what it sends (`Hb-Id`: its run, then a counter); the first copy of each number is
        taken. Each subscription delivers in order, so the first copies keep the order of
        each topic. A message without a number (a NATS-native client's) is taken from the
        first of the subscriptions it matches, in subject order."""
        message_id = m.headers.get(hdr.MESSAGE_ID) if m.headers else None
        if message_id is None:
            first = min((s for s, (sub, _, _) in self._interest.items()
                         if sub is not None and subject_matches(s, m.subject)), default=None)
            return first is None or first == through
        run, _, number = message_id.rpartition(".")
        n = int(number)
        seen = self._seen.get(run)
        if seen is None:
            seen = self._seen[run] = _Seen()
        return seen.first(n)

    async def _deliver(self) -> None:
        """Publish what NATS brought, in arrival order, through the in-process client."""
        client = self.client
        incoming = self._incoming
        try:
            while incoming and client is not None and not client.closed:
                topic, payload, qos, retain, props, message_id, done = incoming.popleft()
                self.received += 1
                self._stamps.append((topic, message_id))
                # In arrival order; the broker's Receive Maximum bounds those unacknowledged.
                try:
                    acknowledged = await client.send(topic, payload, qos, retain, props)
                except Exception as exc:  # the client closed: the instance is leaving
                    if done is not None and not done.done():
                        done.set_exception(exc)
                    raise
                if acknowledged is None:
                    if done is not None:
                        done.set_result(0)
                elif done is not None:
                    acknowledged.add_done_callback(lambda f, d=done: _chain(f, d))
                else:
                    acknowledged.add_done_callback(_settled)
        finally:
            self._delivering = False

    def spawn(self, coro: Any) -> asyncio.Future:
        """Run `coro` in a task the instance keeps until it is done."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    _spawn = spawn
