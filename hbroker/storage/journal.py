"""The journal: what the broker changed, committed in groups, before anyone is told.

The broker and its sessions report changes as they happen (a delivery queued, sent or
acknowledged; a subscription; a retained message; a session connecting or going away). The
journal only remembers *which* objects changed; when it commits, it reads their state at that
moment and turns it into one `Batch` of rows. A delivery created and acknowledged between two
commits therefore costs nothing, and one commit covers everything of a loop iteration.

What is stored is the broker's state, never its traffic: a restart rebuilds the state from
the rows (`hbroker.storage.restore`) and routes nothing again. So every commit must leave rows
that are a state the broker was in: a message is stored only for the deliveries that need it
(in a row of its own, or carried by the row of its only delivery, see `serialize`), and the
deliveries of a message are committed together with it.

In `sync` mode:
- An incoming QoS 1/2 PUBLISH that must outlive a crash (retained, or routed to a session that
  outlives its connection) is routed at once and *deferred*: its deliveries to durable sessions
  (with the message row they share), its retained update and its incoming QoS 2 packet id are
  all changes of the commit being gathered, and the journal holds its PUBACK/PUBREC (a
  `HeldAck`, `hbroker.acknowledgement`) until that commit is done. A message acknowledged is
  therefore on disk with its routing. The journal records and serialises; it writes no
  acknowledgement itself.
- Every byte the broker would write to a client while a commit is pending is held and written
  when the commit it follows is done, so a client never sees a delivery, a packet id or a
  PUBREL that a crash could take back (this is what keeps QoS 2 exactly once across a restart).
- When nothing is pending, writes go out at once: brokers without durable traffic pay nothing.
- Changes whose loss in a crash costs at most a lost QoS 0 or a duplicate QoS 1 delivery are
  *lazy*: the rows of QoS 0 deliveries, later states of QoS 1 deliveries (sent, with its packet
  id), and every deletion (an acknowledged delivery, a message no longer needed). They neither
  hold output nor start a commit; they ride with the next commit that something urgent starts,
  or with one `LAZY_DELAY` later. Under load that is one commit per round trip: the new
  messages with their deliveries, and the deletions of the ones just acknowledged. (The removal
  of an incoming QoS 2 packet id is urgent, since the client may reuse the id after PUBCOMP.)

In `periodic` mode nothing waits: the journal commits every `flush_interval_ms`, and a crash
loses what changed in the last interval.

When the backend fails, the journal enters a *degraded* state: deferred PUBLISHes of the failed
commit are refused through their held acknowledgement (0x97 if storage is full, else 0x80;
`HeldAck.refuse` tells a 5.0 client and closes a 3.1.1 connection, there is no way to say no) and
withdrawn where nobody has seen them yet (`_withdraw`: their queued deliveries and their retained
update), new PUBLISHes that need storage are refused before they are routed (by the inbound
handler, which reads `degraded` and `full`), held output is released (the broker stays
responsive), and the failed
changes are retried with backoff until the backend takes them. The cause is logged once per
incident, and the recovery.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import TYPE_CHECKING, Any, Protocol

import msgpack
from hbroker_ext.codec import USER_PROPERTY

from hbroker.acknowledgement import grouped
from hbroker.histogram import Histogram
from hbroker.reason_codes import ReasonCode
from hbroker.storage.base import Batch, Storage, StorageError

if TYPE_CHECKING:
    from hbroker_ext.topics import RetainedTree

    from hbroker.session import Delivery, Message, Session

log = logging.getLogger("hbroker.storage")

RETRY_FIRST = 0.1  # seconds before the first retry after a failed commit
RETRY_MAX = 5.0
LAZY_DELAY = 0.05  # seconds lazy changes wait for a commit when nothing urgent starts one


def pack_properties(props: dict[int, Any] | None) -> bytes | None:
    return msgpack.packb(props, use_bin_type=True) if props else None


def unpack_properties(data: bytes | None) -> dict[int, Any] | None:
    if not data:
        return None
    props = msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)
    if USER_PROPERTY in props:
        props[USER_PROPERTY] = [tuple(pair) for pair in props[USER_PROPERTY]]
    return props


def id_ranges(ids: list[int]) -> list[tuple[int, int]]:
    """Sorted runs of consecutive ids as (first, last): messages are mostly deleted in the
    order they came, so a few ranges cover a batch."""
    ids.sort()
    ranges = []
    first = last = ids[0]
    for i in ids[1:]:
        if i != last + 1:
            ranges.append((first, last))
            first = i
        last = i
    ranges.append((first, last))
    return ranges


class State(Protocol):
    """What the journal reads of the broker: the state it stores (the sessions by client id,
    the retained messages), the event loop its timers and commits run on, and the broker's
    output coalescing, which a commit follows (`schedule_flush` at the end of the loop
    iteration, `flush` once a commit is done, to write what was held behind it)."""

    sessions: dict[str, Session]
    retained: RetainedTree
    loop: asyncio.AbstractEventLoop | None
    flush_scheduled: bool

    def schedule_flush(self) -> None: ...

    def flush(self) -> None: ...


class Output(Protocol):
    """A connection, as far as the output held behind a commit goes."""

    def take_output(self) -> list[bytes]: ...

    def write_output(self, out: list[bytes]) -> None: ...


class Acknowledgement(Protocol):
    """The held PUBACK/PUBREC of a PUBLISH (`hbroker.acknowledgement.HeldAck`): the journal
    is one of its holders; when the commit is done it lets go (`release`), when the commit
    failed it refuses it (`refuse`, which also frees a QoS 2 packet id)."""

    def hold(self) -> None: ...

    def release(self) -> None: ...

    def refuse(self, reason_code: int) -> None: ...


class Deferred:
    """A PUBLISH routed at once whose acknowledgement waits for the commit of its changes:
    the acknowledgement the journal holds, and what its retained update replaced (to put back
    if storage refuses it)."""

    __slots__ = ("ack", "msg", "retained_before", "retained_after")

    def __init__(self, ack: Acknowledgement, msg: Message, retained_before: Message | None,
                 retained_after: Message | None) -> None:
        self.ack = ack
        self.msg = msg
        self.retained_before = retained_before
        self.retained_after = retained_after


class Pending:
    """The changes of one commit: which objects changed, the output held behind it and the
    PUBLISHes waiting for it."""

    __slots__ = ("sessions", "subscriptions", "deliveries", "messages", "retained", "qos2",
                 "outputs", "deferred", "written", "urgent")

    def __init__(self) -> None:
        self.sessions: dict[Session, None] = {}
        self.subscriptions: dict[tuple[Session, str], None] = {}
        # (client_id, seq) -> (session, delivery) to write, or (session, None) to delete
        self.deliveries: dict[tuple[str, int], tuple[Session, Delivery | None]] = {}
        self.messages: dict[Message, None] = {}
        self.retained: dict[str, None] = {}
        self.qos2: dict[tuple[Session, int], None] = {}
        self.outputs: list[tuple[Output, list[bytes]]] = []
        # PUBLISHes routed while this commit gathered, acknowledged once it is done.
        self.deferred: list[Deferred] = []
        self.written: list[Message] = []  # message rows this commit inserts
        # Whether anything here must be committed before the output that follows it.
        self.urgent = False

    def has_changes(self) -> bool:
        return bool(self.sessions or self.subscriptions or self.deliveries or self.messages
                    or self.retained or self.qos2 or self.deferred)

    def absorb(self, later: Pending) -> None:
        """Add the changes of `later` (a failed commit's changes come first, newer ones after)."""
        for name in ("sessions", "subscriptions", "deliveries", "messages", "retained", "qos2"):
            mine = getattr(self, name)
            for key, value in getattr(later, name).items():
                mine.pop(key, None)
                mine[key] = value
        self.outputs.extend(later.outputs)
        self.deferred.extend(later.deferred)
        self.urgent = self.urgent or later.urgent


class Journal:
    def __init__(self, broker: State, backend: Storage, *, sync: bool,
                 flush_interval: float) -> None:
        self.broker = broker
        self.backend = backend
        self.sync = sync
        self.flush_interval = flush_interval
        self.current = Pending()
        self.committing: Pending | None = None
        self.degraded = False
        self.full = False  # the last failure was for lack of space
        self.stopping = False
        # client id -> the seq of its session's newest delivery: seqs count per session, so
        # that the deliveries a session completes in order are one range to delete.
        self.last_seq: dict[str, int] = {}
        self.next_message_id = 1
        self.commits = 0
        self.failures = 0
        self._retry_delay = RETRY_FIRST
        self._retry_handle: asyncio.TimerHandle | None = None
        self._lazy_handle: asyncio.TimerHandle | None = None
        self.rows = 0  # rows written or deleted by the commits done (for the shutdown log)
        self.commit_seconds = Histogram()  # how long each successful commit took
        self._periodic_handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task | None = None

    # -- what the broker reports -----------------------------------------------------------

    def has_changes(self) -> bool:
        """Whether a commit has anything to do."""
        return self.current.has_changes()

    def _touch(self) -> None:
        """An urgent change: output written from now on waits for its commit, which starts at
        the end of this loop iteration (sync mode)."""
        self.current.urgent = True
        broker = self.broker
        if self.sync and not broker.flush_scheduled:
            broker.schedule_flush()

    def _touch_lazy(self) -> None:
        """A lazy change: committed with the next commit, at the latest `LAZY_DELAY` from now
        (sync mode; periodic mode commits everything on its timer)."""
        if self.sync and self._lazy_handle is None and not self.stopping:
            loop = self.broker.loop
            assert loop is not None
            self._lazy_handle = loop.call_later(LAZY_DELAY, self._lazy)

    def _lazy(self) -> None:
        self._lazy_handle = None
        if not self.kick(force=True) and self.has_changes():
            self._touch_lazy()  # a commit or a retry is under way: look again later

    def session_changed(self, session: Session) -> None:
        self.current.sessions[session] = None
        self._touch()

    def subscription_changed(self, session: Session, topic_filter: str) -> None:
        self.current.subscriptions[(session, topic_filter)] = None
        self._touch()

    def retained_changed(self, topic: str) -> None:
        self.current.retained[topic] = None
        self._touch()

    def qos2_changed(self, session: Session, packet_id: int) -> None:
        self.current.qos2[(session, packet_id)] = None
        self._touch()

    def delivery_changed(self, session: Session, delivery: Delivery) -> None:
        """A delivery of a durable session was queued, sent, or changed state.

        A new QoS 1/2 delivery is urgent: its row (and its message's) is committed before
        its PUBLISH goes out and before the PUBLISH that made it is acknowledged, so that a
        restart finds every message the broker accepted in the sessions it reached, and in
        no other. A QoS 2 delivery's later states are urgent too (exactly once needs its
        packet id and whether PUBREL was sent). The rest is lazy: a QoS 0 delivery (lost in a
        crash, as QoS 0 may be) and a QoS 1 delivery's later state (after a crash it is sent
        again from the state stored: at worst a duplicate, which QoS 1 allows)."""
        msg = delivery.message
        seq = delivery.seq
        client_id = session.client_id
        if not seq:
            seq = delivery.seq = self.last_seq.get(client_id, 0) + 1
            self.last_seq[client_id] = seq
            self._reference(msg)
        self.current.deliveries[(client_id, seq)] = (session, delivery)
        if delivery.qos == 2 or (delivery.qos and not delivery.written):
            self._touch()
        else:
            self._touch_lazy()

    def delivery_removed(self, session: Session, delivery: Delivery) -> None:
        """A tracked delivery left its session (acknowledged, expired, dropped, moved)."""
        key = (session.client_id, delivery.seq)
        delivery.seq = 0
        current = self.current
        if delivery.written:
            delivery.written = False
            current.deliveries[key] = (session, None)
        else:
            current.deliveries.pop(key, None)
        self._release(delivery.message)
        self._touch_lazy()

    def session_ended(self, session: Session) -> None:
        """The session is gone; its rows go with it. Its deliveries no longer hold their
        messages."""
        for delivery in (*session.inflight.values(), *session.queue):
            if delivery.seq:
                delivery.seq = 0
                delivery.written = False
                self._release(delivery.message)
        # Its rows are deleted before any of a new session with its client id (Batch order),
        # whose seqs may start again from 1.
        self.last_seq.pop(session.client_id, None)
        self.current.sessions[session] = None
        self._touch()

    def _reference(self, msg: Message) -> None:
        if not msg.store_id:
            msg.store_id = self.next_message_id
            self.next_message_id += 1
        msg.store_refs += 1
        self.current.messages[msg] = None

    def _release(self, msg: Message) -> None:
        msg.store_refs -= 1
        self.current.messages[msg] = None

    # -- rows read back at start (hbroker.storage.restore) ------------------------------------

    def restored_message(self, msg: Message, message_id: int, has_row: bool) -> None:
        """`msg` is the stored message `message_id`: a `messages` row, or (not `has_row`)
        carried by the row of its only delivery. New messages get ids after it."""
        msg.store_id = message_id
        msg.store_written = has_row
        if message_id >= self.next_message_id:
            self.next_message_id = message_id + 1

    def note_delivery_row(self, client_id: str, seq: int, message_id: int) -> None:
        """A delivery row read at start (of a session restored or not): the seqs of that
        client id's new deliveries follow it, and new message ids follow its message's."""
        if seq > self.last_seq.get(client_id, 0):
            self.last_seq[client_id] = seq
        if message_id >= self.next_message_id:
            self.next_message_id = message_id + 1

    def restored_delivery(self, delivery: Delivery, seq: int) -> None:
        """`delivery` is the stored delivery row `seq` of its session: tracked as written,
        holding its message."""
        delivery.seq = seq
        delivery.written = True
        delivery.message.store_refs += 1

    def forget(self, msg: Message) -> None:
        """A stored message no delivery references (found at start): its row is deleted
        with the next commit."""
        self.current.messages[msg] = None
        self._touch_lazy()

    # -- deferred PUBLISH --------------------------------------------------------------------

    def defer(self, ack: Acknowledgement, msg: Message,
              retained_before: Message | None) -> None:
        """`msg` was just routed (sync mode): its acknowledgement `ack` waits for the commit
        of what that changed (the journal holds it until then). `retained_before`: the
        retained message of its topic before it was routed, if it is retained."""
        ack.hold()
        after = self.broker.retained.get(msg.topic) if msg.retain else None
        self.current.deferred.append(Deferred(ack, msg, retained_before, after))
        self._touch()

    def _withdraw(self, deferred: list[Deferred]) -> None:
        """Take back what the refused PUBLISHes changed that no client has seen: their
        queued deliveries (in every session) and their retained updates (the newest first,
        each only if nothing replaced it since). A delivery already sent stays: its PUBLISH
        is in the output released now, and the session completes it with the client."""
        refused = {d.msg for d in deferred}
        for session in self.broker.sessions.values():
            for q in session.withdraw(refused):
                if q.seq:
                    self.delivery_removed(session, q)
        retained = self.broker.retained
        for d in reversed(deferred):
            msg = d.msg
            if not msg.retain or retained.get(msg.topic) is not d.retained_after:
                continue
            if d.retained_before is None:
                retained.pop(msg.topic)
            else:
                retained.set(msg.topic, d.retained_before)
            self.retained_changed(msg.topic)

    # -- output held behind a commit ---------------------------------------------------------

    def holds_output(self) -> bool:
        """Whether output written now must wait for a commit (sync mode, something pending)."""
        if not self.sync or self.degraded or self.stopping:
            return False
        committing = self.committing
        return (committing is not None and committing.urgent) or self.current.urgent \
            or bool(self.current.outputs)

    def hold(self, conn: Output) -> None:
        out = conn.take_output()
        if out:
            self.current.outputs.append((conn, out))

    # -- committing --------------------------------------------------------------------------

    def start(self) -> None:
        if not self.sync:
            self._schedule_periodic()

    def _schedule_periodic(self) -> None:
        loop = self.broker.loop
        assert loop is not None
        self._periodic_handle = loop.call_later(self.flush_interval, self._periodic)

    def _periodic(self) -> None:
        self.kick(force=True)
        if not self.stopping:
            self._schedule_periodic()

    def kick(self, force: bool = False) -> bool:
        """Start a commit of what is pending if something urgent is (or, with `force`, if
        anything is), unless one is running or a retry is due. Returns whether it started.
        While stopping, only `close` (with `force`) starts commits: otherwise the flush that
        follows a failed commit would start it again at once, and again, until `close` gave
        up waiting (a failed commit schedules no retry while stopping)."""
        if self.committing is not None or self._retry_handle is not None:
            return False
        pending = self.current
        if not (pending.urgent or (force and self.has_changes())) or (
                self.stopping and not force):
            if pending.outputs and not pending.urgent:  # held behind the commit just done
                self._release_output(pending)
                pending.outputs = []
            return False
        self.current = Pending()
        self.committing = pending
        batch = self.serialize(pending)
        loop = self.broker.loop
        assert loop is not None
        self._task = loop.create_task(self._commit(pending, batch))
        return True

    async def _commit(self, pending: Pending, batch: Batch) -> None:
        started = time.perf_counter()
        try:
            await self.backend.commit(batch)
        except StorageError as exc:
            self.committing = None
            self._failed(pending, exc)
        except Exception as exc:  # a bug in a backend must not stop the broker
            log.exception("storage commit failed unexpectedly")
            self.committing = None
            self._failed(pending, StorageError(str(exc)))
        else:
            self.commit_seconds.observe(time.perf_counter() - started)
            self.committing = None
            self.commits += 1
            self.rows += len(batch)
            self._committed(pending)
        finally:
            # Output written while routing is held behind the next commit, which starts now.
            self.broker.flush()

    def _committed(self, pending: Pending) -> None:
        if self.degraded:
            self.degraded = False
            self._retry_delay = RETRY_FIRST
            log.warning("storage recovered", extra={"backend": self.backend.describe()})
        self._release_output(pending)
        with grouped():  # one write per connection for the acknowledgements of a commit
            for d in pending.deferred:  # in PUBLISH order
                d.ack.release()

    def _failed(self, pending: Pending, exc: StorageError) -> None:
        self.failures += 1
        self.full = exc.full
        for msg in pending.written:  # not written after all
            msg.store_written = False
        pending.written = []
        if not self.degraded:
            self.degraded = True
            log.error("storage failed; not acknowledging what cannot be stored until it "
                      "recovers: %s", exc, extra={"backend": self.backend.describe()})
        # Degraded: held output goes out now, so that the broker stays responsive.
        self._release_output(pending)
        self._release_output(self.current)
        self.current.outputs = []
        deferred, pending.deferred = pending.deferred, []
        pending.outputs = []
        if deferred:
            self._withdraw(deferred)
        code = ReasonCode.QUOTA_EXCEEDED if exc.full else ReasonCode.UNSPECIFIED_ERROR
        for d in deferred:
            d.ack.refuse(code)
        # The failed changes are tried again, before anything newer.
        pending.absorb(self.current)
        self.current = pending
        loop = self.broker.loop
        assert loop is not None
        if self.stopping:
            return
        self._retry_handle = loop.call_later(self._retry_delay, self._retry)
        self._retry_delay = min(self._retry_delay * 2, RETRY_MAX)

    def _retry(self) -> None:
        self._retry_handle = None
        self.kick(force=True)

    @staticmethod
    def _release_output(pending: Pending) -> None:
        for conn, out in pending.outputs:
            conn.write_output(out)

    # -- rows --------------------------------------------------------------------------------

    def serialize(self, pending: Pending) -> Batch:
        """The rows for what `pending` says changed, read from the objects as they are now.

        Each row is a tuple of the columns of its table in the order `hbroker.storage.schema`
        declares them (named at each tuple below); `tests/unit/test_storage_schema.py` checks
        them against the declaration."""
        batch = Batch()
        to_wall = time.time() - time.monotonic()

        def wall(t: float) -> float | None:
            return None if t == math.inf or not t else t + to_wall

        for session in pending.sessions:
            if session.ended or not session.expiry_interval:
                batch.sessions_deleted.append((session.client_id,))
                continue
            will = session.will
            batch.sessions.append((  # schema.SESSIONS
                session.client_id, session.protocol_version,
                None if session.expiry_interval == math.inf else session.expiry_interval,
                None if session.connection is not None else wall(session.expires_at),
                None if will is None else msgpack.packb(
                    [will.topic, will.payload, will.qos, will.retain,
                     pack_properties(will.properties)], use_bin_type=True),
                session.will_delay, wall(session.will_due), session.next_packet_id))
        for session, topic_filter in pending.subscriptions:
            if session.ended or not session.expiry_interval:
                continue
            opts = session.subscriptions.get(topic_filter)
            if opts is None:
                batch.subscriptions_deleted.append((session.client_id, topic_filter))
            else:
                batch.subscriptions.append((  # schema.SUBSCRIPTIONS
                    session.client_id, topic_filter, opts.qos, int(opts.no_local),
                    int(opts.retain_as_published), opts.retain_handling, opts.sub_id))
        # Message and delivery rows are the per-message part: written inline (a function call
        # per column costs as much as the row). A QoS 1 delivery sent at once (inflight when
        # its row is first written) to the only session its message reaches carries the
        # message in its own row: its next change is its deletion, so the common case of one
        # persistent subscriber online costs one row per message. Any other delivery
        # references a message row, written once with the first such delivery.
        inf = math.inf
        packb = msgpack.packb
        delivery_rows = batch.deliveries
        removed: dict[str, list[int]] = {}
        need_rows: list[Message] = []
        for (client_id, seq), (session, d) in pending.deliveries.items():
            if session.ended:
                continue
            if d is None or d.seq != seq:
                seqs = removed.get(client_id)
                if seqs is None:
                    removed[client_id] = [seq]
                else:
                    seqs.append(seq)
                continue
            d.written = True
            sub_ids = d.sub_ids
            msg = d.message
            if msg.store_written or msg.store_refs > 1 or not d.packet_id or d.qos != 1:
                if not msg.store_written:
                    need_rows.append(msg)
                delivery_rows.append((  # schema.DELIVERIES
                    client_id, seq, msg.store_id, d.qos, 1 if d.retain else 0,
                    packb(list(sub_ids)) if sub_ids else None, d.packet_id, d.state,
                    d.group, None, None, None, None, None, None, None))
            else:
                props = msg.properties
                expires = msg.expires_at
                delivery_rows.append((  # schema.DELIVERIES
                    client_id, seq, msg.store_id, d.qos, 1 if d.retain else 0,
                    packb(list(sub_ids)) if sub_ids else None, d.packet_id, d.state,
                    d.group, msg.topic, msg.payload, msg.qos, 1 if msg.retain else 0,
                    packb(props, use_bin_type=True) if props else None,
                    None if not expires or expires == inf else expires + to_wall,
                    msg.sender))
        rows = batch.messages
        written = pending.written
        for msg in need_rows:
            if not msg.store_written:  # rows never change: written once
                msg.store_written = True
                written.append(msg)
                props = msg.properties
                expires = msg.expires_at
                rows.append((  # schema.MESSAGES
                    msg.store_id, msg.topic, msg.payload, msg.qos, 1 if msg.retain else 0,
                    packb(props, use_bin_type=True) if props else None,
                    None if not expires or expires == inf else expires + to_wall,
                    msg.sender))
        deleted = []
        for msg in pending.messages:
            if not msg.store_refs and msg.store_written:
                msg.store_written = False
                deleted.append(msg.store_id)
        if deleted:
            batch.messages_deleted = id_ranges(deleted)
        for client_id, seqs in removed.items():
            # No other delivery of the session has a seq inside a run of removed ones.
            for first, last in id_ranges(seqs):
                batch.deliveries_deleted.append((client_id, first, last))
        for session, packet_id in pending.qos2:
            if session.ended:
                continue
            if packet_id in session.awaiting_pubrel:
                batch.incoming_qos2.append((session.client_id, packet_id))  # INCOMING_QOS2
            else:
                batch.incoming_qos2_deleted.append((session.client_id, packet_id))
        retained = self.broker.retained
        for topic in pending.retained:
            msg = retained.get(topic)
            if msg is None:
                batch.retained_deleted.append((topic,))
            else:
                batch.retained.append((topic, msg.payload, msg.qos,  # schema.RETAINED
                                       pack_properties(msg.properties), wall(msg.expires_at)))
        return batch

    # -- shutdown ------------------------------------------------------------------------------

    async def close(self, timeout: float = 10.0) -> None:
        """Commit what is pending (one last try if the backend is failing) and close."""
        self.stopping = True
        for handle in (self._periodic_handle, self._retry_handle, self._lazy_handle):
            if handle is not None:
                handle.cancel()
        self._retry_handle = self._lazy_handle = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.committing is not None and self._task is not None:
                await asyncio.wait({self._task}, timeout=max(0.0, deadline - time.monotonic()))
                continue
            if not self.has_changes():
                break
            failures = self.failures
            self.kick(force=True)
            if self._task is not None:
                await asyncio.wait({self._task}, timeout=max(0.0, deadline - time.monotonic()))
            if self.failures != failures:
                log.error("storage: changes of the last moments could not be stored")
                break
        await self.backend.close()
        log.info("storage closed", extra={"backend": self.backend.describe(),
                                          "commits": self.commits, "rows": self.rows,
                                          "failed_commits": self.failures})
