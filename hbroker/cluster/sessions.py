"""One session per client id across the cluster: ownership in JetStream KV, takeover between
instances, and sessions that move with their client.

Ownership: the KV bucket `HBROKER_SESSIONS` (replicated like the streams) holds, per client
id, the instance that owns its session (`{"node", "run", "since"}`). A CONNECT is accepted only
once its instance made itself the owner by compare-and-swap on that record (the
`claim_session` hook event: the CONNECT waits for it; with no NATS connection, or no answer
from JetStream within `publish_timeout`, it is refused with 0x88 Server unavailable: two
instances must never both think they hold a client id). Each swap has a revision, so claims
of one client id are in one order cluster-wide, and the last one wins, as on one broker
[MQTT-3.1.4-3].

Takeover: a claim whose previous owner is another instance asks it, over NATS request/reply
on `$HB.sessions.<node>`, in two steps:

1. `prepare`: the owner closes the client's connection with DISCONNECT 0x8E Session taken over
   (its will published unless the session continues: the new CONNECT has Clean Start 0 and
   the session has an expiry), and answers with the session's subscriptions, or `ended` when
   the session does not continue (Session Expiry 0, or Clean Start 1 on the new CONNECT:
   expiry-0 sessions end rather than move).
2. The claimant makes the session here with those subscriptions (disconnected: what arrives
   for it queues) and takes NATS interest for them; only then `handover`: the old owner lets
   what NATS already brought it into the session, exports it (`hbroker.session_state`:
   inflight messages with their packet ids, the queue in order, QoS 2 packet ids awaiting
   PUBREL), ends it there (`SESSION_MOVED`) and sends it. The claimant puts the exported
   messages before what it queued meanwhile, less the copies that reached both instances
   (recognised by the cluster's message number, `Hb-Id`), then accepts the CONNECT: the
   client resumes with Session Present 1, gets its unacknowledged messages again with their
   packet ids and DUP [MQTT-4.4.0-1], then the queue.

Claims of one client id wait for the claims before them (a lower revision) on the same
instance, and an owner answers a request only after its own earlier claims settled, so N
simultaneous CONNECTs on N instances leave exactly one connection: the last claim's.

Flapping: an instance that lost a client id to another one makes a new CONNECT of that id wait
until `FLAPPER_JAIL` seconds after the loss, as nats-server does: two clients that share an id
and reconnect at once do not take it from each other in a tight loop.

An owner that does not answer (its instance died, or is cut off from NATS): the claim goes on
without its state (a new session); recovering a dead instance's sessions from JetStream is
not done yet (docs/clustering.md).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
from typing import TYPE_CHECKING, Any

import msgpack

from hbroker.hooks import SESSION_CLEAN_START, SESSION_MOVED
from hbroker.reason_codes import ReasonCode
from hbroker.session_state import export_session, import_session, subscriptions_of

if TYPE_CHECKING:
    from hbroker.cluster.routing import ClusterRouting
    from hbroker.hooks import ClientInfo
    from hbroker.session import Message

log = logging.getLogger("hbroker.cluster")

BUCKET = "HBROKER_SESSIONS"
REQUESTS = "$HB.sessions."  # + the owner's node token: takeover requests
FLAPPER_JAIL = 1.0  # seconds: a client id lost to another instance is not taken back sooner
SETTLE_TIMEOUT = 10.0  # seconds a move waits for the claimant's handover before it is undone
CLAIM_DEADLINE = 30.0  # seconds a claim waits for a busy owner (one settling earlier claims)
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")


def bucket_name(prefix: str) -> str:
    return BUCKET + ("_" + prefix.replace(".", "_").upper() if prefix else "")


def record_key(client_id: str) -> str:
    """A client id as a KV key (any UTF-8 string becomes `[A-Za-z0-9_-]`)."""
    return base64.urlsafe_b64encode(client_id.encode()).decode().rstrip("=")


def node_token(node: str) -> str:
    """An instance's name as one subject token."""
    return node if _TOKEN.fullmatch(node) else node.encode().hex()


class _Claim:
    """One CONNECT's claim of a client id on this instance."""

    __slots__ = ("rev", "known", "finished", "settled")

    def __init__(self) -> None:
        self.rev = 0  # the record's revision once swapped
        self.known = asyncio.Event()  # the swap answered (rev set, or failed: rev 0)
        self.finished = False  # the claim answered its CONNECT
        self.settled = asyncio.Event()  # its CONNECT was accepted, refused or abandoned

    def settle(self) -> None:
        self.known.set()
        self.settled.set()


class ClusterSessions:
    """The session side of a cluster instance (see the module docstring); owned by
    `ClusterRouting`, which hands it the hook events."""

    def __init__(self, routing: ClusterRouting) -> None:
        self.routing = routing
        self.node = routing.node
        self.kv: Any = None
        self._sub: Any = None
        self._claims: dict[str, list[_Claim]] = {}
        self._owned: dict[str, int] = {}  # client id -> revision of this instance's record
        self._moving: dict[str, float] = {}  # client ids being handed over -> since
        self._lost: dict[str, float] = {}  # client ids lost to another instance -> when
        # While a session moves in or out, which message is which (`Hb-Id`), to recognise
        # the copies that reached both instances: counted users, and the map.
        self.recording = 0
        self._tags: dict[Message, str] = {}
        self.taken_over = 0  # sessions this instance took from another one
        self.durable = False  # whether its sessions outlive its process (storage)
        self._checking: list[str] = []  # restored sessions whose records name another
        self.handed_over = 0  # sessions it gave to another one

    def requests_subject(self, node: str) -> str:
        from hbroker.cluster.routing import namespace

        return namespace(self.routing.prefix, REQUESTS) + node_token(node)

    async def start(self) -> None:
        from nats.js.api import KeyValueConfig, StorageType

        routing = self.routing
        self.durable = routing.broker.config.storage.backend != "memory"
        config = KeyValueConfig(bucket=bucket_name(routing.prefix), history=1,
                                replicas=routing.config.stream_replicas,
                                storage=StorageType.FILE)
        self.kv = await routing.retry_jetstream(lambda: routing.js.create_key_value(config))
        async def request(m: Any) -> None:
            # each in its own task: one that waits for a claim does not hold up the others
            routing.spawn(self._request(m))

        self._sub = await routing.nc.subscribe(self.requests_subject(self.node), cb=request)

    async def reconcile(self, later: bool = False) -> None:
        """The sessions the broker restored from storage at start: this instance's again
        where their records still name it. One whose record names another instance is
        either being claimed right now (that claim asks this instance for it: kept) or was
        taken without it while this instance was not running: ended here (not moved: no
        will) if its record still names another instance, or is gone, `CLAIM_DEADLINE`
        seconds later."""
        from nats.js.errors import KeyNotFoundError

        broker = self.routing.broker
        others: list[str] = []

        async def check(client_id: str) -> None:
            try:
                entry = await self.kv.get(record_key(client_id))
            except KeyNotFoundError:
                entry = None
            except Exception as exc:  # JetStream not answering: kept; a claim settles it
                log.warning("cluster: restored session not checked: %s", exc or
                            type(exc).__name__, extra={"node": self.node,
                                                        "client_id": client_id})
                return
            if entry is not None and json.loads(entry.value).get("node") == self.node:
                self._owned[client_id] = entry.revision
                return
            session = broker.sessions.get(client_id)
            if session is None or session.connection is not None:
                return
            if not later:
                others.append(client_id)
                return
            log.info("cluster: restored session ended: its client id is %s",
                     "another instance's" if entry is not None else "nobody's",
                     extra={"node": self.node, "client_id": client_id})
            broker.end_session(session, publish_will=False, now=time.monotonic(),
                               reason=SESSION_MOVED)

        restored = self._checking if later else list(broker.sessions)
        for i in range(0, len(restored), 256):
            await asyncio.gather(*(check(c) for c in restored[i:i + 256]))
        if others:
            self._checking = others
            asyncio.get_running_loop().call_later(
                CLAIM_DEADLINE, lambda: self.routing.spawn(self.reconcile(later=True)))

    # -- tags ----------------------------------------------------------------------------

    def tag(self, msg: Message, message_id: str) -> None:
        self._tags[msg] = message_id

    def tag_of(self, msg: Message) -> str | None:
        return self._tags.get(msg)

    def _record(self, on: bool) -> None:
        self.recording += 1 if on else -1
        if not self.recording:
            self._tags.clear()

    # -- claims (the CONNECT side) ---------------------------------------------------------

    async def claim(self, client: ClientInfo, clean_start: bool) -> int | None:
        routing = self.routing
        client_id = client.client_id
        if routing.leases.fenced:
            log.warning("cluster: CONNECT refused: this instance is fenced (its lease is not "
                        "renewed)", extra={"node": self.node, "client_id": client_id})
            return ReasonCode.USE_ANOTHER_SERVER
        if not routing.connected or self.kv is None:
            log.warning("cluster: CONNECT refused: no NATS connection to claim the client id",
                        extra={"node": self.node, "client_id": client_id})
            return ReasonCode.SERVER_UNAVAILABLE
        claim = _Claim()
        claims = self._claims.setdefault(client_id, [])
        claims.append(claim)
        loop = asyncio.get_running_loop()
        try:
            try:
                claim.rev, previous = await asyncio.wait_for(self._swap(client_id),
                                                             CLAIM_DEADLINE)
            except Exception as exc:
                log.warning("cluster: CONNECT refused: the client id could not be claimed: "
                            "%s", exc or type(exc).__name__,
                            extra={"node": self.node, "client_id": client_id})
                return ReasonCode.SERVER_UNAVAILABLE
            finally:
                claim.known.set()
            self._owned[client_id] = claim.rev
            await self._settle_before(client_id, claim.rev, claim,
                                      time.monotonic() + CLAIM_DEADLINE)
            lost = self._lost.pop(client_id, None)
            if lost is not None and time.monotonic() - lost < FLAPPER_JAIL:
                wait = FLAPPER_JAIL - (time.monotonic() - lost)
                log.info("cluster: client id taken back within %.1f s of its loss: the "
                         "CONNECT waits %.2f s", FLAPPER_JAIL, wait,
                         extra={"node": self.node, "client_id": client_id})
                await asyncio.sleep(wait)
            if previous is not None and previous.get("node") != self.node:
                refused = await self._take_over(client_id, previous, claim.rev, clean_start)
                if refused is None:  # the old instance's stored will is not published
                    routing.wills.reconnected(client_id, node_token(previous["node"]))
                return refused
            return None
        finally:
            claim.finished = True
            # Settled once its CONNECT opened the session (`opened`), or soon after if it
            # did not (refused, or the client left).
            loop.call_later(1.0, self._settled, client_id, claim)

    async def _swap(self, client_id: str) -> tuple[int, dict | None]:
        """Make this instance the owner of the client id's record; (revision, previous)."""
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

        key = record_key(client_id)
        value = json.dumps({"node": self.node, "run": self.routing.run,
                            "since": time.time(), "durable": self.durable}).encode()
        # JetStream not answering (no quorum): refused soon; claims that swapped first:
        # claim after them, however many
        answer_by = time.monotonic() + 2 * self.routing.config.publish_timeout
        while True:
            try:
                try:
                    entry = await self.kv.get(key)
                except KeyNotFoundError:
                    entry = None
                if entry is None:
                    return await self.kv.create(key, value), None
                return (await self.kv.update(key, value, last=entry.revision),
                        json.loads(entry.value))
            except (KeyWrongLastSequenceError, KeyNotFoundError):
                # another claim swapped first: claim after it (or the record went between
                # nats-py's create and its look at the key: again)
                continue
            except TimeoutError:
                if not self.routing.connected or time.monotonic() > answer_by:
                    raise
                continue  # JetStream slow (a leader election, many claims at once)

    async def _settle_before(self, client_id: str, rev: int, own: _Claim | None,
                             deadline: float) -> bool:
        """Wait until this instance's claims of the client id with a lower revision than
        `rev` settled (those still swapping first tell their revision); False if some had
        not by `deadline`. Each claim waits only for lower revisions, so the waits end."""
        for c in list(self._claims.get(client_id, ())):
            if c is own:
                continue
            try:
                if not c.known.is_set():
                    await asyncio.wait_for(c.known.wait(), deadline - time.monotonic())
                if c.rev and c.rev < rev and not c.settled.is_set():
                    await asyncio.wait_for(c.settled.wait(), deadline - time.monotonic())
            except TimeoutError:
                return False
        return True

    def opened(self, client_id: str) -> None:
        """A session of the client id was opened here (created or resumed by a CONNECT):
        the oldest claim of it that finished is settled."""
        for c in self._claims.get(client_id, ()):
            if c.finished and not c.settled.is_set():
                self._settled(client_id, c)
                return

    def _settled(self, client_id: str, claim: _Claim) -> None:
        claim.settle()
        claims = self._claims.get(client_id)
        if claims is not None and claim in claims:
            claims.remove(claim)
            if not claims:
                del self._claims[client_id]

    async def _take_over(self, client_id: str, previous: dict[str, Any], rev: int,
                         clean_start: bool) -> int | None:
        """Take the session over from its owner (the record `previous`); a CONNACK reason
        code if the CONNECT must be refused: the owner is there but does not answer (it
        could still hold the client), or it is not running but keeps the session in its
        storage and may start again (its lease says so: `InstanceLeases.may_return`)."""
        from nats.errors import NoRespondersError

        routing = self.routing
        broker = routing.broker
        owner = previous["node"]
        ask = {"client_id": client_id, "rev": rev, "by": self.node, "clean": clean_start}
        deadline = time.monotonic() + CLAIM_DEADLINE
        while True:
            try:
                reply = await self._ask(owner, {**ask, "op": "prepare"})
            except NoRespondersError:
                if previous.get("durable") and routing.leases.may_return(node_token(owner)):
                    await self._give_back(client_id, rev, previous)
                    log.warning("cluster: CONNECT refused: instance %s, which keeps the "
                                "session in its storage, is not running (yet)", owner,
                                extra={"node": self.node, "client_id": client_id})
                    return ReasonCode.SERVER_UNAVAILABLE
                log.warning("cluster: instance %s, which held the session, is gone: a new "
                            "session starts here", owner,
                            extra={"node": self.node, "client_id": client_id})
                return None
            except TimeoutError:
                if routing.leases.expired(node_token(owner)):
                    # cut off from the cluster for longer than its lease: it fenced its
                    # clients, and ends this session when it is back (declared dead)
                    log.warning("cluster: instance %s, which held the session, does not "
                                "answer and its lease has expired: a new session starts here",
                                owner, extra={"node": self.node, "client_id": client_id})
                    return None
                reply = {"state": "timeout"}  # slow, or cut off from NATS: ask again
            if reply.get("state") not in ("busy", "timeout"):
                break
            if time.monotonic() >= deadline:
                log.warning("cluster: CONNECT refused: instance %s, which holds the session, "
                            "does not hand it over (%s)", owner, reply["state"],
                            extra={"node": self.node, "client_id": client_id})
                return ReasonCode.SERVER_UNAVAILABLE
            await asyncio.sleep(0.05)  # busy (joining, or an earlier claim): soon again
        if reply.get("state") != "moving" or clean_start:
            return None  # none there, or ended there (expiry 0, or Clean Start)
        now = time.monotonic()
        existing = broker.sessions.get(client_id)
        if existing is not None:  # an older session of this instance's: the moved one wins
            if existing.connection is not None:
                existing.connection.disconnect(ReasonCode.SESSION_TAKEN_OVER,
                                               "session taken over", publish_will=False)
            existing = broker.sessions.get(client_id)
            if existing is not None:
                broker.end_session(existing, publish_will=False, now=now,
                                   reason=SESSION_MOVED)
        # The session, with its subscriptions, before its state: what arrives from now on
        # queues here, and the state put before it.
        subscriptions = subscriptions_of(reply)
        routing.moving(subscriptions, True)
        session = import_session(broker, reply, now)
        for topic_filter in subscriptions:
            routing.hold_filter(client_id, topic_filter)
        self._record(True)
        try:
            await routing.interest_ready(subscriptions)
            # the owner catches up with the stream first: up to 2 publish_timeouts
            patience = 3 * routing.config.publish_timeout
            while True:
                try:
                    moved = await self._ask(owner, {**ask, "op": "handover"}, patience)
                except (NoRespondersError, TimeoutError) as exc:
                    log.warning("cluster: instance %s did not hand the session over (%s): "
                                "its subscriptions are kept, its queued messages are not",
                                owner, type(exc).__name__,
                                extra={"node": self.node, "client_id": client_id})
                    return None
                if moved.get("state") != "busy" or time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.05)
            if moved.get("state") == "moved" and broker.sessions.get(client_id) is session:
                # Everything the old owner had is in what it sent, up to a stream sequence:
                # what came here up to it is queued (and recognised) before the import.
                if moved.get("through"):
                    await routing.let_incoming_in(moved["through"])
                import_session(broker, moved["session"], time.monotonic(), session,
                               self.tag_of)
                self.taken_over += 1
                log.info("cluster: session taken over", extra={
                    "node": self.node, "client_id": client_id, "from": owner,
                    "inflight": len(session.inflight), "queued": len(session.queue)})
        finally:
            self._record(False)
            routing.moving(subscriptions, False)
        return None

    async def _give_back(self, client_id: str, rev: int, previous: dict[str, Any]) -> None:
        """Put the owner's record back (a claim refused because its owner may return)."""
        if self._owned.get(client_id) == rev:
            del self._owned[client_id]
        try:
            await self.kv.update(record_key(client_id), json.dumps(previous).encode(),
                                 last=rev)
        except Exception as exc:  # claimed again meanwhile: that claim asks this instance
            log.debug("cluster: session record not given back: %s", exc)

    async def _ask(self, owner: str, request: dict[str, Any],
                   timeout: float | None = None) -> dict[str, Any]:
        reply = await self.routing.nc.request(
            self.requests_subject(owner), msgpack.packb(request, use_bin_type=True),
            timeout=timeout or self.routing.config.publish_timeout)
        return msgpack.unpackb(reply.data, raw=False, strict_map_key=False)

    # -- requests (the owner's side) -------------------------------------------------------

    async def _request(self, m: Any) -> None:
        try:
            request = msgpack.unpackb(m.data, raw=False)
            client_id = request["client_id"]
            settled = await self._settle_before(
                client_id, request["rev"], None,
                time.monotonic() + self.routing.config.publish_timeout / 2)
            if not settled or not self.routing.joined:
                # an earlier claim here is still going, or the instance is still joining
                # (its consumer has not taken what the stream holds for its sessions yet)
                reply = {"state": "busy"}
            elif request["op"] == "prepare":
                reply = self._prepare(client_id, request["clean"], request["by"])
            else:
                reply = await self._handover(client_id)
        except Exception:
            log.exception("cluster: session request failed", extra={"node": self.node})
            reply = {"state": "error"}
        await m.respond(msgpack.packb(reply, use_bin_type=True))

    def _prepare(self, client_id: str, clean_start: bool, by: str) -> dict[str, Any]:
        broker = self.routing.broker
        now = time.monotonic()
        session = broker.sessions.get(client_id)
        if session is None:
            return {"state": "none"}
        continues = not clean_start and session.expiry_interval != 0
        self._owned.pop(client_id, None)  # the claimant's record now
        if session.connection is not None:
            # [MQTT-3.1.4-3] as for a takeover on one broker (Broker.open_session)
            broker.stats.takeovers += 1
            self._lost[client_id] = now
            session.connection.disconnect(ReasonCode.SESSION_TAKEN_OVER,
                                          f"session taken over by instance {by}",
                                          publish_will=not continues)
            session = broker.sessions.get(client_id)  # ended if it had no expiry
            if session is None:
                return {"state": "ended"}
        if session.will is not None and now < session.will_due:
            # A new Network Connection within the Will Delay Interval [MQTT-3.1.2-8]
            session.will = None
        if not continues:
            broker.end_session(session, publish_will=True, now=now,
                               reason=SESSION_CLEAN_START)
            return {"state": "ended"}
        session.will = None
        session.will_due = 0
        if client_id not in self._moving:
            self._record(True)
        self._moving[client_id] = now
        asyncio.get_running_loop().call_later(SETTLE_TIMEOUT, self._move_abandoned,
                                              client_id, now)
        state = export_session(session, now)
        state["inflight"] = state["queue"] = []
        return {"state": "moving", **state}

    def _move_abandoned(self, client_id: str, since: float) -> None:
        if self._moving.get(client_id) == since:  # the claimant never came back
            del self._moving[client_id]
            self._record(False)

    async def _handover(self, client_id: str) -> dict[str, Any]:
        broker = self.routing.broker
        if client_id not in self._moving:
            return {"state": "none"}
        session = broker.sessions.get(client_id)
        try:
            # what NATS brought for its subscriptions is in it first
            through = await self.routing.let_incoming_in(must=True) \
                if session is not None and session.subscriptions else 0
        except TimeoutError as exc:
            log.warning("cluster: session not handed over yet: %s", exc, extra={
                "node": self.node, "client_id": client_id})
            return {"state": "busy"}  # asked again; still moving
        try:
            session = broker.sessions.get(client_id)
            if session is None or session.connection is not None:
                return {"state": "none"}  # expired meanwhile
            now = time.monotonic()
            state = export_session(session, now, self.tag_of)
            broker.end_session(session, publish_will=False, now=now, reason=SESSION_MOVED)
            self.handed_over += 1
            log.info("cluster: session handed over", extra={
                "node": self.node, "client_id": client_id,
                "inflight": len(state["inflight"]), "queued": len(state["queue"])})
            return {"state": "moved", "session": state, "through": through}
        finally:
            if self._moving.pop(client_id, None) is not None:
                self._record(False)

    # -- sessions that end -----------------------------------------------------------------

    def ended(self, client_id: str, reason: str) -> None:
        """A session ended here: its record goes, unless it moved, or a CONNECT opens a new
        one of the client id right now (Clean Start)."""
        rev = self._owned.get(client_id)
        if rev is None:
            return
        if reason == SESSION_MOVED:
            del self._owned[client_id]
            return
        asyncio.get_running_loop().call_soon(self._release, client_id, rev)

    def _release(self, client_id: str, rev: int) -> None:
        if self._owned.get(client_id) != rev or client_id in self.routing.broker.sessions \
                or client_id in self._claims:
            return
        del self._owned[client_id]
        self.routing.spawn(self._delete(client_id, rev))

    async def _delete(self, client_id: str, rev: int) -> None:
        try:
            await self.kv.delete(record_key(client_id), last=rev)
        except Exception as exc:  # claimed meanwhile by another instance: its record now
            log.debug("cluster: session record kept: %s", exc)
