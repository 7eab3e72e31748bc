"""An instance's consumer of the cluster's message stream: how QoS 1/2 messages published on
other instances reach this one.

One durable pull consumer per instance (`hb_<node>`) on `HBROKER_MSGS`, filtered on the stored
subjects of the distinct filters this instance's sessions hold (`filter_subjects`: one
consumer however many subscriptions, so consumers stay O(instances), unlike nats-server's
one per QoS 1 subscription). It delivers in stream order; a batch is acknowledged (AckAll, up
to its last message) only once the broker acknowledged every message of it to the cluster's
in-process client, that is once each is in the local sessions' queues (and committed, with
durable storage). So a message JetStream acknowledged to its publisher reaches this instance
even if the publisher's instance, or the NATS server either is connected to, dies right after:
what is not acknowledged here is delivered again (`ack_wait`), and seen twice only once
(`Hb-Id`, as for live copies).

With no filter the consumer would take every subject, so then its filter is a subject no
topic maps to (`$none`: `$` topics never leave their instance).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hbroker.cluster.routing import ClusterRouting

log = logging.getLogger("hbroker.cluster")

BATCH = 256  # messages fetched at once
ACK_WAIT = 30.0  # seconds before JetStream delivers an unacknowledged message again
MAX_ACK_PENDING = 20000
NOTHING = "$none"
# The broker's refusals that say "not now" (storage failing or full, the in-process client's
# quota): the batch is delivered again. Others (the ACL, a topic over the limits) are final.
AGAIN = frozenset((0x80, 0x83, 0x97))


def consumer_name(node_token: str) -> str:
    return f"hb_{node_token}"


class InstanceConsumer:
    """The instance's durable consumer (see the module docstring); owned by
    `ClusterRouting`, which tells it when the subjects its sessions need changed
    (`changed`; `ClusterRouting.stored_subjects` says which) and takes each message
    (`ClusterRouting.take_stored`)."""

    def __init__(self, routing: ClusterRouting, name: str) -> None:
        self.routing = routing
        self.name = name
        self.applied: frozenset[str] | None = None
        # subjects added to the filter lately -> the stream's last sequence just before:
        # what was stored before a subscription is not delivered for it (`before`)
        self.starts: dict[str, int] = {}
        self._applying = False
        self._applied = asyncio.Event()
        self._sub: Any = None
        self._task: asyncio.Task | None = None
        self.high = 0  # the highest stream sequence taken (or acknowledged before it started)
        self._start_seq = 0  # where the consumer was made to start again (0: new messages)
        self.delivered = 0  # messages taken from the stream
        self.redelivered = 0

    def _config(self, subjects: frozenset[str]) -> Any:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        ns = self.routing.stored_ns
        start = {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE,
                 "opt_start_seq": self._start_seq} if self._start_seq else {
                 "deliver_policy": DeliverPolicy.NEW}
        return ConsumerConfig(
            durable_name=self.name, ack_policy=AckPolicy.ALL, ack_wait=ACK_WAIT,
            max_ack_pending=MAX_ACK_PENDING, **start,
            filter_subjects=sorted(ns + s for s in subjects) or [ns + NOTHING],
            num_replicas=self.routing.config.stream_replicas)

    async def start(self) -> None:
        routing = self.routing
        subjects = routing.stored_subjects()
        existing = await routing.retry_jetstream(self._existing)
        if existing is not None and existing.config.opt_start_seq:
            self._start_seq = existing.config.opt_start_seq  # made again by an earlier run
        info = await routing.retry_jetstream(
            lambda: routing.js.add_consumer(routing.stream, self._config(subjects)))
        if info.num_ack_pending:
            # A restarted instance: what its previous run took and did not acknowledge
            # (it was not in the broker's storage yet) JetStream would deliver again only
            # after `ack_wait`, when a session that needed it may have moved on. The
            # consumer is made again from its acknowledgement floor: those come first.
            self._start_seq = (info.ack_floor.stream_seq or 0) + 1
            log.info("cluster: the consumer starts again after the last message the "
                     "previous run acknowledged", extra={
                         "node": routing.node, "seq": self._start_seq,
                         "pending": info.num_ack_pending})
            await routing.retry_jetstream(
                lambda: routing.js.delete_consumer(routing.stream, self.name))
            info = await routing.retry_jetstream(
                lambda: routing.js.add_consumer(routing.stream, self._config(subjects)))
        # what the consumer had acknowledged before this process (a restarted instance's)
        self.high = info.ack_floor.stream_seq or 0
        self.applied = subjects
        self._applied.set()
        self._sub = await routing.js.pull_subscribe_bind(durable=self.name,
                                                         stream=routing.stream)
        self._task = routing.spawn(self._consume())

    async def _existing(self) -> Any:
        """The consumer's info as JetStream has it, or None when there is none yet."""
        from nats.js.errors import NotFoundError

        try:
            return await self.routing.js.consumer_info(self.routing.stream, self.name)
        except NotFoundError:
            return None

    async def stop(self) -> None:
        """Stop taking messages (what was taken and not acknowledged is delivered again
        when the instance comes back)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except BaseException:  # noqa: S110 - cancelled, or failed: stopping either way
                pass
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception as exc:
                log.debug("cluster: consumer unsubscribe: %s", exc)

    # -- the filter ------------------------------------------------------------------------

    def changed(self) -> None:
        """The subjects the instance's sessions need changed: applied to the consumer soon
        (one update at a time, with the set as it is then)."""
        if self.applied is None or self._applying:
            return
        self._applying = True
        self.routing.spawn(self._apply())

    async def _apply(self) -> None:
        routing = self.routing
        try:
            await asyncio.sleep(0)  # the other changes of this moment, in the same update
            while (subjects := routing.stored_subjects()) != self.applied:
                try:
                    added = subjects - (self.applied or frozenset())
                    if added:
                        last = (await routing.js.stream_info(routing.stream)).state.last_seq
                    await routing.js.add_consumer(routing.stream, self._config(subjects))
                except Exception as exc:  # no connection, no quorum: try again
                    log.warning("cluster: consumer filter not updated: %s", exc,
                                extra={"node": routing.node})
                    await asyncio.sleep(0.5)
                    continue
                for subject in added:
                    self.starts[subject] = last
                for subject in list(self.starts):
                    if subject not in subjects:
                        del self.starts[subject]
                self.applied = subjects
                self._applied.set()
        finally:
            self._applying = False

    def before(self, subject: str, seq: int, again: bool) -> bool:
        """Whether the message stored as `seq` on `subject` was stored before every filter
        subject that takes it was added (a filter's change makes JetStream look at messages
        from its acknowledgement floor on): not delivered then."""
        from hbroker.cluster.routing import subject_matches

        starts = self.starts
        if not starts:
            return False
        matching = [s for s in starts if subject_matches(s, subject)]
        if not again:  # new deliveries come in stream order: older starts are passed
            for s in [s for s, start in starts.items() if start < seq]:
                del starts[s]
        if not matching or any(starts.get(s, 0) < seq for s in matching):
            return False
        applied = self.applied or frozenset()
        return not any(subject_matches(s, subject) for s in applied if s not in matching)

    def covers(self, subject: str) -> bool:
        """Whether the consumer's filter (as JetStream has it) holds `subject`."""
        applied = self.applied
        return applied is not None and subject in applied

    async def ready(self, subjects: set[str]) -> None:
        """Return once the consumer's filter holds `subjects`."""
        while not (self.applied is not None and subjects <= self.applied):
            self._applied.clear()
            await self._applied.wait()

    async def caught_up(self, timeout: float) -> int:
        """Return, once the consumer has taken every message of its filter stored so far
        (or after `timeout` seconds), the stream sequence up to which it has."""
        return await self.reached(0, timeout)

    async def reached(self, seq: int, timeout: float, must: bool = False) -> int:
        """Return once the consumer has taken every message of its filter up to stream
        sequence `seq` (0: up to the stream's last now), or after `timeout` seconds: the
        sequence up to which it has taken them all. `must`: TimeoutError rather than a
        return when it could not (a session handed over must hold everything)."""
        routing = self.routing
        deadline = time.monotonic() + timeout
        try:
            if not seq:
                seq = (await routing.js.stream_info(routing.stream)).state.last_seq
            while time.monotonic() < deadline:
                if self.high >= seq:
                    break
                info = await routing.js.consumer_info(routing.stream, self.name)
                if not info.num_pending and info.delivered.stream_seq <= self.high:
                    break  # nothing more of the filter stored, all of it taken
                await asyncio.sleep(0.005)
            else:
                log.warning("cluster: the consumer did not catch up within %.1f s", timeout,
                            extra={"node": routing.node})
                if must:
                    raise TimeoutError("the consumer did not catch up")
        except TimeoutError:
            raise
        except Exception as exc:
            log.warning("cluster: could not wait for the consumer: %s", exc,
                        extra={"node": routing.node})
            if must:
                raise TimeoutError(f"could not wait for the consumer: {exc}") from exc
        return max(seq, self.high)

    # -- taking messages -------------------------------------------------------------------

    async def _consume(self) -> None:
        from nats.errors import TimeoutError as NatsTimeoutError

        routing = self.routing
        while not routing.leaving:
            try:
                batch = await self._sub.fetch(BATCH, timeout=1.0)
            except (TimeoutError, NatsTimeoutError):
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # no connection: the fetch is tried again
                log.debug("cluster: fetch failed: %s", exc)
                await asyncio.sleep(0.2)
                continue
            if not batch:
                continue
            pending: list[asyncio.Future] = []
            for m in batch:
                self.delivered += 1
                self.high = max(self.high, m.metadata.sequence.stream)
                if m.metadata.num_delivered > 1:
                    self.redelivered += 1
                done = routing.take_stored(m)
                if done is not None:
                    pending.append(done)
            if pending:
                results = await asyncio.gather(*pending, return_exceptions=True)
                if any(isinstance(r, BaseException) or r in AGAIN for r in results):
                    # not in the local sessions: JetStream delivers the batch again
                    log.warning("cluster: stored messages not taken locally; delivered "
                                "again in %.0f s", ACK_WAIT, extra={"node": routing.node})
                    continue
            try:
                await batch[-1].ack()  # AckAll: the whole batch
            except Exception as exc:
                log.debug("cluster: ack failed (delivered again): %s", exc)
