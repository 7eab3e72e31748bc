"""Instance leases: which instances of the cluster are alive, in JetStream KV.

Every instance keeps a record in the bucket `HBROKER_INSTANCES` (key: its node token) and
renews it every `RENEW` seconds by compare-and-swap on the revision it last wrote. The record
carries what `hbroker cluster status` shows (run, start, clients, sessions, storage).

- **Expiry, judged by the others.** An instance follows every record (one KV watcher) and
  notes, on its own monotonic clock, when a record's revision last changed; one that has not
  changed for `LEASE` seconds is declared dead by compare-and-swap (`state = "dead"`, `by` the
  declaring instance). Only one survivor wins that swap; it then publishes the dead
  instance's wills (`hbroker.cluster.wills`). No wall clocks are compared between machines.
- **Fencing, judged by the instance itself.** An instance whose renewals have failed for
  `FENCE` seconds (less than `LEASE`: it fences itself before anyone can declare it dead)
  disconnects its clients (DISCONNECT 0x9C Use another server; 3.1.1: closed) without
  publishing their wills: it cannot tell whether the rest of the cluster sees it, so another
  instance may publish them. Clients reconnect to an instance that is part of the cluster.
- **Back from a partition.** A renewal that fails because the record's revision moved means
  the instance was declared dead: its wills were published by a survivor, the clients it
  fenced were told so; it writes a new record and carries on (sessions whose records name
  another instance are ended by `ClusterSessions.reconcile`). A renewal that succeeds after a
  fence means nobody declared it dead: it publishes the wills it withheld itself.

A dead record stays in the bucket (for `hbroker cluster status` and in case its declarer
dies before it published every will: a survivor then takes it over) until the instance starts
again and writes its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hbroker.cluster.routing import ClusterRouting

log = logging.getLogger("hbroker.cluster")

BUCKET = "HBROKER_INSTANCES"
LEASE = 10.0  # seconds without a renewal before the others declare an instance dead
FENCE = 5.0  # seconds without a successful renewal before an instance fences its clients
RENEW = 1.0  # seconds between renewals (and looks at the others' records)
RENEW_TIMEOUT = 1.0  # seconds a renewal may take before it counts as failed


def bucket_name(prefix: str) -> str:
    return BUCKET + ("_" + prefix.replace(".", "_").upper() if prefix else "")


class _Seen:
    """Another instance's record as this one last read it."""

    __slots__ = ("revision", "changed_at", "record")

    def __init__(self, revision: int, record: dict[str, Any], now: float) -> None:
        self.revision = revision
        self.record = record
        self.changed_at = now


class InstanceLeases:
    """This instance's lease and its view of the others' (see the module docstring); owned
    by `ClusterRouting`. `on_fence(fenced)` is called when the instance fences itself (True)
    and when it is back (False); `on_dead(node_token, record)` when this instance declared
    another one dead (or took over the wills of one whose declarer died too);
    `on_declared_dead()` when it learns that it was itself declared dead."""

    def __init__(self, routing: ClusterRouting, token: str,
                 on_fence: Callable[[bool], None],
                 on_dead: Callable[[str, dict[str, Any]], None],
                 on_declared_dead: Callable[[], None]) -> None:
        self.routing = routing
        self.token = token
        self.kv: Any = None
        self.revision = 0
        self.fenced = False
        self._rejoining = False  # declared dead: the next renewal writes a new lease
        self.renewed_at = 0.0  # monotonic time of the last successful renewal
        self.started = time.time()
        self.others: dict[str, _Seen] = {}  # node token -> its record as last read
        self.declared = 0  # instances this one declared dead
        self._on_fence = on_fence
        self._on_dead = on_dead
        self._on_declared_dead = on_declared_dead
        self._tasks: list[asyncio.Future] = []
        self._watcher: Any = None

    def record(self) -> dict[str, Any]:
        routing = self.routing
        broker = routing.broker
        connected = broker.stats.clients_connected if broker is not None else 0
        return {"node": routing.node, "run": routing.run, "state": "alive",
                "started": self.started, "renewed": time.time(), "lease": LEASE,
                "durable": routing.sessions.durable,
                "clients": max(0, connected - 1),  # without the cluster's own client
                "sessions": max(0, len(broker.sessions) - 1) if broker is not None else 0,
                "fenced": self.fenced}

    async def start(self) -> dict[str, Any] | None:
        """Write this instance's record; the record of its previous run (or None)."""
        from nats.js.api import KeyValueConfig, StorageType
        from nats.js.errors import KeyNotFoundError

        routing = self.routing
        config = KeyValueConfig(bucket=bucket_name(routing.prefix), history=1,
                                replicas=routing.config.stream_replicas,
                                storage=StorageType.FILE)
        self.kv = await routing.retry_jetstream(lambda: routing.js.create_key_value(config))
        async def get() -> dict[str, Any] | None:
            try:
                return json.loads((await self.kv.get(self.token)).value)
            except KeyNotFoundError:
                return None

        previous = await routing.retry_jetstream(get)
        self.revision = await routing.retry_jetstream(
            lambda: self.kv.put(self.token, json.dumps(self.record()).encode()))
        self.renewed_at = time.monotonic()
        await routing.retry_jetstream(self._watch)
        self._tasks += [routing.spawn(self._renewing()), routing.spawn(self._looking())]
        return previous if previous is not None and previous.get("run") != routing.run \
            else None

    async def stop(self) -> None:
        """A clean stop: the record says so (its clients left without wills; an instance
        with durable storage is waited for, like a live one, for `LEASE` seconds)."""
        for task in self._tasks:
            task.cancel()
        if self._watcher is not None:
            try:
                await self._watcher.stop()
            except Exception as exc:
                log.debug("cluster: lease watcher not stopped: %s", exc)
        if self.kv is not None and not self.fenced:
            try:
                await self.kv.update(self.token, json.dumps(
                    {**self.record(), "state": "stopped", "clients": 0}).encode(),
                    last=self.revision)
            except Exception as exc:
                log.debug("cluster: lease not marked stopped: %s", exc)

    def alive(self, token: str) -> bool:
        """Whether the instance `token` holds a lease this instance has seen renewed within
        `LEASE` seconds (its record is there and not declared dead)."""
        if token == self.token:
            return True
        return self._within(token, ("alive",))

    def may_return(self, token: str) -> bool:
        """Whether the instance `token` is alive, or stopped cleanly less than `LEASE`
        seconds ago (a restart: its storage keeps its sessions)."""
        return token == self.token or self._within(token, ("alive", "stopped"))

    def expired(self, token: str) -> bool:
        """Whether the instance `token` is known to have lost its lease: declared dead, or
        its record unchanged for `LEASE` seconds (not yet declared)."""
        seen = self.others.get(token)
        return seen is not None and (seen.record.get("state") == "dead"
                                     or time.monotonic() - seen.changed_at >= LEASE)

    def _within(self, token: str, states: tuple[str, ...]) -> bool:
        seen = self.others.get(token)
        return seen is not None and seen.record.get("state") in states and \
            time.monotonic() - seen.changed_at < LEASE

    def instances(self) -> dict[str, dict[str, Any]]:
        """Every instance's record as last read, this one's included, with `alive`."""
        now = time.monotonic()
        out = {self.token: {**self.record(), "alive": True, "seen_s_ago": 0.0}}
        for token, seen in self.others.items():
            out[token] = {**seen.record, "alive": self.alive(token),
                          "seen_s_ago": round(now - seen.changed_at, 1)}
        return out

    # -- the loop ---------------------------------------------------------------------------

    async def _renewing(self) -> None:
        while True:
            await asyncio.sleep(RENEW)
            try:
                await self._renew(time.monotonic())
            except Exception:
                log.exception("cluster: lease renewal failed", extra={
                    "node": self.routing.node})

    async def _looking(self) -> None:
        """The others' records, every `RENEW` seconds (apart from the renewals, which a
        slow read must not delay); not while fenced."""
        while True:
            await asyncio.sleep(RENEW)
            if self.fenced:
                continue
            try:
                await self._look(time.monotonic())
            except Exception as exc:  # JetStream not answering: looked at again
                log.debug("cluster: instances not read: %s", exc)

    async def _renew(self, now: float) -> None:
        from nats.js.errors import KeyWrongLastSequenceError

        try:
            if self._rejoining:  # declared dead: a new lease
                self.revision = await asyncio.wait_for(self.kv.put(self.token, json.dumps(
                    {**self.record(), "fenced": False}).encode()), RENEW_TIMEOUT)
                self._rejoining = False
            else:
                value = json.dumps(self.record()).encode()
                try:
                    self.revision = await asyncio.wait_for(
                        self.kv.update(self.token, value, last=self.revision), RENEW_TIMEOUT)
                except KeyWrongLastSequenceError:
                    if not await self._declared():
                        return
        except Exception as exc:  # no connection, no JetStream quorum
            failing = time.monotonic() - self.renewed_at
            if not self.fenced and failing >= FENCE:
                log.warning("cluster: lease not renewed for %.1f s (%s): this instance fences "
                            "its clients", failing, exc or type(exc).__name__,
                            extra={"node": self.routing.node})
                self._fence(True)
            return
        self.renewed_at = time.monotonic()
        if self.fenced:
            self._fence(False)

    async def _declared(self) -> bool:
        """The record's revision moved under this instance. True if it was its own renewal
        that JetStream applied after the instance stopped waiting for it (the lease goes on
        from that revision); False if the others declared it dead (cut off for longer than
        its lease, or a second process with its node name): fenced, and it rejoins with a
        new lease at the next renewal."""
        entry = await asyncio.wait_for(self.kv.get(self.token), RENEW_TIMEOUT)
        record = json.loads(entry.value)
        if record.get("run") == self.routing.run and record.get("state") == "alive":
            self.revision = entry.revision
            return True
        log.warning("cluster: this instance was declared dead by the others (cut off for "
                    "longer than its lease); it rejoins with a new lease", extra={
                        "node": self.routing.node, "by": record.get("by")})
        if not self.fenced:
            self._fence(True)
        self._on_declared_dead()
        self._rejoining = True
        return False

    def _fence(self, fenced: bool) -> None:
        self.fenced = fenced
        if not fenced:
            # What it saw of the others while cut off is old: counted from now again (a
            # dead one is declared a lease later), never declared dead on a stale view.
            now = time.monotonic()
            for seen in self.others.values():
                seen.changed_at = now
        self._on_fence(fenced)

    async def _watch(self) -> None:
        """Follow the bucket with one watcher (one ordered consumer for the process): the
        others' records as they change. Returns once the current ones are all read; the
        updates after them are taken by a task."""
        watcher = await self.kv.watchall()
        self._watcher = watcher
        async for entry in watcher:
            if entry is None:  # the current records are all in
                break
            self._seen_entry(entry)
        self._tasks.append(self.routing.spawn(self._following(watcher)))

    async def _refresh(self, token: str) -> None:
        from nats.js.errors import KeyNotFoundError

        try:
            entry = await self.kv.get(token)
        except KeyNotFoundError:
            self.others.pop(token, None)
            return
        self._seen_entry(entry)
        log.info("cluster: instance records followed anew", extra={"node": self.routing.node})
        old, self._watcher = self._watcher, None
        if old is not None:
            try:
                await old.stop()
            except Exception as exc:
                log.debug("cluster: lease watcher not stopped: %s", exc)
        await self._watch()

    async def _following(self, watcher: Any) -> None:
        async for entry in watcher:
            if entry is not None:
                self._seen_entry(entry)

    def _seen_entry(self, entry: Any) -> None:
        token = entry.key
        if token == self.token:
            return
        if entry.operation in ("DEL", "PURGE") or not entry.value:
            self.others.pop(token, None)
            return
        seen = self.others.get(token)
        if seen is None or seen.revision != entry.revision:
            try:
                record = json.loads(entry.value)
            except ValueError:
                return
            self.others[token] = _Seen(entry.revision, record, time.monotonic())

    async def _look(self, now: float) -> None:
        """Declare dead the instances whose record has not changed for `LEASE` seconds;
        take over the dead instances whose declarer is dead too."""
        for token, seen in list(self.others.items()):
            record = seen.record
            if record.get("state") in ("alive", "stopped"):
                if now - seen.changed_at >= LEASE:
                    await self._declare(token, seen, "declared dead")
            elif record.get("state") == "dead" and record.get("wills") and \
                    record.get("by") != self.token and not self.alive(record.get("by", "")) \
                    and now - seen.changed_at >= LEASE:
                await self._declare(token, seen, "wills taken over")

    async def _declare(self, token: str, seen: _Seen, what: str) -> None:
        from nats.js.errors import KeyWrongLastSequenceError

        # a cleanly stopped instance's clients left without wills
        wills = seen.record.get("state") != "stopped"
        record = {**seen.record, "state": "dead", "by": self.token, "declared": time.time(),
                  "wills": wills}
        try:
            revision = await self.kv.update(token, json.dumps(record).encode(),
                                            last=seen.revision)
        except KeyWrongLastSequenceError:
            # renewed meanwhile, or another survivor was first; a view that old means the
            # watcher stopped following (its consumer lost with a NATS node): a new one
            await self._refresh(token)
            return
        self.others[token] = _Seen(revision, record, time.monotonic())
        self.declared += 1
        log.warning("cluster: instance %s %s: its lease was not renewed for %.0f s",
                    record.get("node", token), what, LEASE,
                    extra={"node": self.routing.node, "dead": record.get("node", token)})
        if wills:
            self._on_dead(token, record)

    async def wills_done(self, token: str) -> None:
        """The dead instance `token`'s wills are all published: nobody needs to take them
        over."""
        seen = self.others.get(token)
        if seen is None or seen.record.get("by") != self.token:
            return
        record = {**seen.record, "wills": False}
        try:
            revision = await self.kv.update(token, json.dumps(record).encode(),
                                            last=seen.revision)
            self.others[token] = _Seen(revision, record, seen.changed_at)
        except Exception as exc:  # it started again meanwhile: its record is its own
            log.debug("cluster: dead instance's record not updated: %s", exc)
