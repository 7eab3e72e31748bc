"""Wills cluster-wide: a will is published exactly once, also when the instance that held
its client died.

Each instance writes the will of every client connected to it with one into the KV bucket
`HBROKER_WILLS` (key: the instance's node token, then the client id as `record_key`), right
after the CONNACK; the entry goes when the will is no longer the instance's to publish
(published, or discarded: a normal DISCONNECT, a new connection within the will delay, the
session ended). Only clients with a will cost this one KV write (and one delete).

When an instance is declared dead (`hbroker.cluster.leases`), the survivor that declared it
reads its entries and publishes each will once its Will Delay Interval (capped by the session
expiry) has passed since the dead instance was last seen, unless the client connected again
meanwhile (its new instance's claim removes the entry [MQTT-3.1.3-9]). Every will, published
by its own instance or by a survivor, carries the same message id (`Hb-Id`, also the stored
copy's `Nats-Msg-Id`): `<node token>~will~<key>.<entry revision>`. JetStream keeps one stored
copy of each id within the stream's duplicate window (two minutes), so a will published
twice, by an instance that died just after publishing it and by the survivor, or by two
survivors, reaches QoS 1/2 subscribers once; the instances drop repeated live copies by
the same id.

A will of a client connected at the moment its instance fenced itself (cut off from the
cluster) is kept in the bucket and published by whoever wins: the survivor that declares the
instance dead, or the instance itself if its lease was never lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import msgpack

from hbroker.cluster.sessions import record_key
from hbroker.session import Message

if TYPE_CHECKING:
    from hbroker.cluster.routing import ClusterRouting

log = logging.getLogger("hbroker.cluster")

BUCKET = "HBROKER_WILLS"
SWEEP = 0.5  # seconds between looks at which stored wills are still the instance's


def bucket_name(prefix: str) -> str:
    return BUCKET + ("_" + prefix.replace(".", "_").upper() if prefix else "")


def will_id(token: str, key: str, revision: int) -> str:
    """The message id of a will: the same whoever publishes it."""
    return f"{token}~will~{key}.{revision}"


class ClusterWills:
    """This instance's wills in the bucket and the dead instances' it publishes (see the
    module docstring); owned by `ClusterRouting`."""

    def __init__(self, routing: ClusterRouting, token: str) -> None:
        self.routing = routing
        self.token = token
        self.kv: Any = None
        # client id -> (the session's will, the entry's revision, or 0 while being written)
        self._own: dict[str, tuple[Message, int]] = {}
        # id(will message) -> the message (held: its id is not reused) and its message id
        self._ids: dict[int, tuple[Message, str]] = {}
        self.withheld: set[str] = set()  # client ids whose will waits out a fence
        self.fenced = False
        self.fenced_at = 0.0  # monotonic time the fence began (its clients' disconnection)
        self.published_for_others = 0  # wills of dead instances published here
        self._task: asyncio.Future | None = None

    async def start(self) -> None:
        from nats.js.api import KeyValueConfig, StorageType

        routing = self.routing
        config = KeyValueConfig(bucket=bucket_name(routing.prefix), history=1,
                                replicas=routing.config.stream_replicas,
                                storage=StorageType.FILE)
        self.kv = await routing.retry_jetstream(lambda: routing.js.create_key_value(config))
        self._task = routing.spawn(self._sweeping())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def key(self, client_id: str, token: str | None = None) -> str:
        return f"{token or self.token}.{record_key(client_id)}"

    def message_id(self, msg: Message) -> str | None:
        """The message id of `msg` if it is a will this instance stored (None otherwise)."""
        if not self._ids:
            return None
        known = self._ids.get(id(msg))
        return known[1] if known is not None and known[0] is msg else None

    # -- this instance's wills ------------------------------------------------------------

    def connected(self, client_id: str) -> None:
        """A client connected here: its will (if any) into the bucket."""
        session = self.routing.broker.sessions.get(client_id)
        will = session.will if session is not None else None
        if will is None or self.kv is None:
            return
        self._own[client_id] = (will, 0)
        self.routing.spawn(self._write(client_id, will, session))

    async def _write(self, client_id: str, will: Message, session: Any) -> None:
        entry = msgpack.packb({
            "c": client_id, "run": self.routing.run, "t": will.topic, "p": will.payload,
            "q": will.qos, "r": will.retain, "props": will.properties or {},
            "d": session.will_delay, "e": session.expiry_interval}, use_bin_type=True)
        try:
            revision = await self.kv.put(self.key(client_id), entry)
        except Exception as exc:
            log.warning("cluster: will not stored in the cluster (published by this instance "
                        "only): %s", exc or type(exc).__name__,
                        extra={"node": self.routing.node, "client_id": client_id})
            if self._own.get(client_id, (None,))[0] is will:
                del self._own[client_id]
            return
        if self._own.get(client_id, (None,))[0] is will:
            self._own[client_id] = (will, revision)
            self._ids[id(will)] = (will, will_id(self.token, record_key(client_id), revision))
            log.debug("cluster: will stored in the cluster", extra={
                "node": self.routing.node, "client_id": client_id, "revision": revision})
        else:  # already gone meanwhile
            await self._remove(client_id, revision)

    async def _sweeping(self) -> None:
        while True:
            await asyncio.sleep(SWEEP)
            try:
                self.sweep()
            except Exception:
                log.exception("cluster: will sweep failed")

    def sweep(self) -> None:
        """Entries whose will is no longer its session's (published, discarded, the
        session gone) are removed; not while fenced: those wait for the outcome."""
        if self.fenced or not self._own:
            return
        sessions = self.routing.broker.sessions
        for client_id, (will, revision) in list(self._own.items()):
            if not revision:
                continue  # being written
            session = sessions.get(client_id)
            if session is not None and session.will is will:
                continue
            del self._own[client_id]
            self.routing.spawn(self._forget(client_id, will, revision))

    async def _forget(self, client_id: str, will: Message, revision: int) -> None:
        await self._remove(client_id, revision)
        # the id is kept a little longer: the will's copies may still be on their way
        await asyncio.sleep(5.0)
        self._ids.pop(id(will), None)

    async def _remove(self, client_id: str, revision: int, token: str | None = None) -> None:
        try:
            await self.kv.delete(self.key(client_id, token), last=revision)
        except Exception as exc:  # written again since, or no JetStream: a survivor checks
            log.debug("cluster: will entry not removed: %s", exc)

    def fence(self, fenced: bool) -> None:
        """Fenced: the wills of the clients disconnected now stay in the bucket. Back with
        the lease kept: they are this instance's to publish."""
        self.fenced = fenced
        if fenced:
            self.fenced_at = time.monotonic()
            self.withheld = {c for c, (_, rev) in self._own.items() if rev}
            return
        withheld, self.withheld = self.withheld, set()
        for client_id in withheld:  # published (or found connected again) from the bucket
            self._drop(client_id)
        if withheld:
            self.routing.spawn(self._publish_all(self.token, self.fenced_at, withheld))

    def declared_dead(self) -> None:
        """This instance was declared dead while cut off: a survivor has its wills."""
        for client_id in self.withheld:
            self._drop(client_id)
        self.withheld = set()

    def _drop(self, client_id: str) -> None:
        """A will no longer this instance's to publish from its session."""
        will, _ = self._own.pop(client_id, (None, 0))
        if will is not None:
            self._ids.pop(id(will), None)

    def reconnected(self, client_id: str, owner_token: str) -> None:
        """A client of a dead (or gone) instance connected here: its old will is not
        published [MQTT-3.1.3-9]."""
        if owner_token != self.token:
            self.routing.spawn(self._remove(client_id, None, owner_token))

    async def _entries(self, token: str) -> list[Any]:
        """The bucket's current entries under instance `token` (one watch of its keys)."""
        watcher = await self.kv.watch(f"{token}.>", ignore_deletes=True)
        entries = []
        try:
            async for entry in watcher:
                if entry is None:  # the current values are all in
                    break
                if entry.value:
                    entries.append(entry)
        finally:
            await watcher.stop()
        return entries

    # -- a dead instance's wills ------------------------------------------------------------

    def instance_dead(self, token: str, record: dict[str, Any]) -> None:
        """This instance declared instance `token` dead (its record unchanged for the
        lease, so last seen that long ago): its wills are published from here."""
        from hbroker.cluster.leases import LEASE

        self.routing.spawn(self._publish_all(token, time.monotonic() - LEASE, None))

    async def _publish_all(self, token: str, last_seen: float, only: set[str] | None) -> None:
        """publish_instance until every will is out (JetStream may not answer for a
        while); then the dead instance's record says so."""
        routing = self.routing
        while not routing.leaving:
            try:
                if await self.publish_instance(token, last_seen, only):
                    break
            except Exception as exc:  # JetStream not answering: tried again
                log.warning("cluster: wills of instance %s not read: %s", token,
                            exc or type(exc).__name__, extra={"node": routing.node})
            await asyncio.sleep(1.0)
        if token != self.token:
            await routing.leases.wills_done(token)

    async def previous_run(self, previous: dict[str, Any] | None) -> None:
        """At start: the wills this instance's previous run left in the bucket. Killed
        and started again within its lease (nobody declared it dead), they are its own to
        publish: those of sessions it restored from storage are the broker's again (with
        the same message id), the others are published from the bucket. Declared dead,
        the survivor that did has them: the restored sessions' wills are dropped here. A
        clean stop published none: their entries go."""
        state = previous.get("state") if previous is not None else None
        sessions = self.routing.broker.sessions
        leftover: set[str] = set()
        for entry in await self.routing.retry_jetstream(lambda: self._entries(self.token)):
            key = entry.key
            will = msgpack.unpackb(entry.value, raw=False, strict_map_key=False)
            client_id = will["c"]
            if will.get("run") == self.routing.run:
                continue
            session = sessions.get(client_id)
            if state == "alive" and session is not None and session.will is not None:
                self._own[client_id] = (session.will, entry.revision)
                self._ids[id(session.will)] = (session.will, will_id(
                    self.token, key.split(".", 1)[1], entry.revision))
            elif state == "alive":
                leftover.add(client_id)
            elif state != "dead":  # stopped cleanly, or no record: not to be published
                await self._remove(client_id, entry.revision)
        if state == "dead":
            for session in list(sessions.values()):
                session.will = None
                session.will_due = 0
        if leftover:
            renewed = previous.get("renewed") or time.time()
            last_seen = time.monotonic() - max(0.0, time.time() - renewed)
            log.info("cluster: %d wills of clients of this instance's previous run to publish",
                     len(leftover), extra={"node": self.routing.node})
            self.routing.spawn(self._publish_all(self.token, last_seen, leftover))

    async def publish_instance(self, token: str, last_seen: float,
                               only: set[str] | None = None) -> bool:
        """Publish the wills in the bucket under instance `token` (a dead one, or this one's
        withheld ones: `only`), each when its delay has passed since `last_seen`
        (monotonic). True once none is left."""
        waiting: list[tuple[str, int, dict[str, Any]]] = []
        for entry in await self._entries(token):
            will = msgpack.unpackb(entry.value, raw=False, strict_map_key=False)
            if only is not None and will["c"] not in only:
                continue
            waiting.append((entry.key, entry.revision, will))
        if token != self.token or only is None:
            log.info("cluster: %d wills of instance %s to publish", len(waiting), token,
                     extra={"node": self.routing.node})
        tasks = [self._publish_one(token, key, revision, will, last_seen)
                 for key, revision, will in waiting]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        return all(r is True for r in results)

    async def _publish_one(self, token: str, key: str, revision: int, will: dict[str, Any],
                           last_seen: float) -> bool:
        from nats.js.errors import KeyNotFoundError

        routing = self.routing
        delay = min(will["d"] or 0, will["e"] if will["e"] is not None else 0)
        wait = last_seen + delay - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return True  # the client connected again, or its instance published it
        if entry.revision != revision:
            return True  # a newer connection's will: not this one
        client_id = will["c"]
        if token == self.token:
            session = routing.broker.sessions.get(client_id)
            if session is not None and session.connection is not None:
                await self._remove(client_id, revision, token)
                return True  # connected again since the fence (or the restart)
        msg = Message(will["t"], will["p"], will["q"], will["r"], will["props"] or None, 0,
                      client_id)
        message_id = will_id(token, key.split(".", 1)[1], revision)
        stored = await routing.publish_for(msg, message_id)
        if not stored:
            log.warning("cluster: will of a dead instance's client not stored in JetStream; "
                        "tried again", extra={"node": routing.node, "client_id": client_id})
            return False
        if token != self.token:
            self.published_for_others += 1
        log.info("cluster: will published for a client of %s", "this instance (fenced)"
                 if token == self.token else f"dead instance {token}", extra={
                     "node": routing.node, "client_id": client_id, "topic": msg.topic})
        await self._remove(client_id, revision, token)
        return True
