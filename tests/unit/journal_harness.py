"""A broker with a storage journal over a real SQLite file, driven without sockets.

Sessions are made as the connection code makes them; a PUBLISH that needs storage is handled
as the inbound PUBLISH handler handles it in sync mode (a held acknowledgement, route, then
`Journal.defer`, then `HeldAck.routed`); subscribers that are online have a real
`ConnectionCore` writing into a recording transport. The backend records every batch it
committed and can be made to fail or to wait, so tests see what each commit held and what
clients saw before and after it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from pathlib import Path
from typing import Any

from hbroker_ext.codec import PUBACK, PUBREC, Framer, encode_ack
from hbroker_ext.routing import ConnectionCore

from hbroker.broker import Broker, SubscriptionOptions
from hbroker.config import parse_config
from hbroker.hooks import Hooks
from hbroker.session import Message, Session
from hbroker.storage.base import Batch, Storage, StorageError, StoredState
from hbroker.storage.journal import Journal
from hbroker.storage.restore import restore
from hbroker.storage.sqlite import SQLiteStorage

DEADLINE = 10.0  # seconds for something that must happen


class RecordingBackend(Storage):
    """SQLite, with every committed batch kept; `fail` makes commits raise it, `gate` (an
    Event) makes them wait until it is set."""

    name = "recording"

    def __init__(self, path: Path) -> None:
        self.inner = SQLiteStorage(str(path))
        self.batches: list[Batch] = []
        self.fail: StorageError | None = None
        self.gate: asyncio.Event | None = None

    async def open(self) -> None:
        await self.inner.open()

    async def load(self) -> StoredState:
        return await self.inner.load()

    async def commit(self, batch: Batch) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        await self.inner.commit(batch)
        self.batches.append(batch)

    async def inspect(self) -> dict[str, Any]:
        return await self.inner.inspect()

    async def close(self) -> None:
        await self.inner.close()


def packets(data: bytes) -> list[Any]:
    return Framer(protocol_version=5).feed(data) if data else []


class Publisher:
    """What a held acknowledgement uses of the connection a PUBLISH came in on."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.client_id = session.client_id
        self.protocol_version = 5
        self.deferred = 0
        self.held_acks: deque[HeldAck] | None = None
        self.closing = False
        self.written = b""
        self.refused: list[tuple[int, int]] = []  # (packet id, reason code)

    def write_output(self, out: list[bytes]) -> None:
        self.written += b"".join(out)

    def acks(self) -> list[tuple[int, int, int]]:
        """(packet type, packet id, reason code) of what it was sent."""
        return [(p.packet_type, p.packet_id, p.reason_code) for p in packets(self.written)]


class HeldAck:
    """A stand-in for `hbroker.acknowledgement.HeldAck` as the contract between the inbound
    handler, hooks and the journal has it: the handler holds it until `routed`, each holder
    (the journal) lets go with `release`; the PUBACK/PUBREC goes out when none is left and
    every earlier one of the connection is done, in PUBLISH order. `refuse` records the code
    (instead of telling the client) and frees a QoS 2 packet id."""

    __slots__ = ("conn", "msg", "packet_id", "code", "holders", "done")

    def __init__(self, conn: Publisher, msg: Message, packet_id: int) -> None:
        self.conn = conn
        self.msg = msg
        self.packet_id = packet_id
        self.code = 0
        self.holders = 1  # the handler's, until routed()
        self.done = False
        conn.deferred += 1
        if conn.held_acks is None:
            conn.held_acks = deque()
        conn.held_acks.append(self)

    def hold(self) -> None:
        self.holders += 1

    def routed(self, reached: int) -> None:
        if not reached and self.conn.protocol_version == 5:
            self.code = 0x10  # No matching subscribers
        self.release()

    def release(self) -> None:
        self.holders -= 1
        if self.holders == 0:
            self.done = True
            self._write_done()

    def refuse(self, reason_code: int) -> None:
        conn, session = self.conn, self.conn.session
        conn.refused.append((self.packet_id, reason_code))
        if self.msg.qos == 2:
            session.release_qos2(self.packet_id)
        assert conn.held_acks is not None
        conn.held_acks.remove(self)
        conn.deferred -= 1
        self._write_done()

    def _write_done(self) -> None:
        conn = self.conn
        held = conn.held_acks
        assert held is not None
        out = []
        while held and held[0].done:
            ack = held.popleft()
            conn.deferred -= 1
            out.append(encode_ack(PUBACK if ack.msg.qos == 1 else PUBREC, ack.packet_id,
                                  ack.code, conn.protocol_version))
        if out and not conn.closing:
            conn.write_output(out)


class Transport:
    def __init__(self) -> None:
        self.data = b""

    def writelines(self, out: list[bytes]) -> None:
        self.data += b"".join(out)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


class Harness:
    """One broker run on the database at `path`: `await start()` restores what is stored;
    `await stop()` is a SIGTERM (the journal commits what is pending), `await crash()` a
    kill -9 (nothing more is committed)."""

    def __init__(self, path: Path, *, sync: bool = True, **limits: Any) -> None:
        self.path = path
        self.broker = Broker(parse_config({"limits": limits}, "test"), Hooks())
        self.sync = sync
        self.backend = RecordingBackend(path)
        self.counts: dict[str, int] = {}
        self.last_ack: HeldAck | None = None  # of the last `publish`

    @property
    def journal(self) -> Journal:
        journal = self.broker.journal
        assert journal is not None
        return journal

    async def start(self) -> Harness:
        broker = self.broker
        broker.loop = asyncio.get_running_loop()
        await self.backend.open()
        state = await self.backend.load()
        broker.journal = Journal(broker, self.backend, sync=self.sync, flush_interval=0.05)
        self.counts = restore(broker, state)
        self.journal.start()
        return self

    async def stop(self) -> None:
        await self.journal.close()

    async def crash(self) -> None:
        journal = self.journal
        journal.stopping = True
        for handle in (journal._periodic_handle, journal._retry_handle, journal._lazy_handle):
            if handle is not None:
                handle.cancel()
        if journal._task is not None:  # a commit under way finishes, or not, in the kill
            await asyncio.wait({journal._task}, timeout=DEADLINE)
        await self.backend.inner.close()

    # -- clients ------------------------------------------------------------------------------

    def session(self, client_id: str, topic_filter: str | None = None, qos: int = 1,
                expiry: float = 3600) -> Session:
        """A session (persistent unless expiry 0), subscribed to `topic_filter`, offline."""
        broker = self.broker
        session = broker.new_session(client_id, 5)
        session.expiry_interval = expiry
        broker.sessions[client_id] = session
        if expiry:
            self.journal.session_changed(session)
        if topic_filter is not None:
            broker.subscribe(session, topic_filter, SubscriptionOptions(qos, False, False, 0, 0))
        return session

    def online(self, session: Session, window: int = 20) -> Transport:
        """Connect `session`: a connection whose output lands in the returned transport."""
        conn = ConnectionCore()
        conn.broker = self.broker
        conn.session = session
        conn.client_id = session.client_id
        conn.protocol_version = 5
        conn.connected = True
        conn.out = []
        conn.max_packet_size_out = 1 << 28
        conn.transport = Transport()
        session.connection = conn
        session.send_window = window
        return conn.transport

    def publish(self, publisher: Publisher, topic: str, payload: bytes, qos: int = 1,
                retain: bool = False, packet_id: int = 1) -> Message:
        """A QoS 1/2 PUBLISH that needs storage, as the inbound handler handles it in sync
        mode: its acknowledgement held, routed now, acknowledged after the commit."""
        broker = self.broker
        session = publisher.session
        msg = Message(topic, payload, qos, retain, None, 0.0, publisher.client_id)
        ack = HeldAck(publisher, msg, packet_id)
        if qos == 2:
            session.receive_qos2(packet_id)
        previous = broker.retained.get(topic) if retain else None
        reached = broker.publish(msg, time.monotonic())
        self.journal.defer(ack, msg, previous)
        ack.routed(reached)
        self.last_ack = ack
        return msg

    # -- waiting --------------------------------------------------------------------------

    async def until(self, predicate: Any, what: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting until {what}"
            await asyncio.sleep(0.001)

    async def committed(self) -> None:
        """Everything changed so far is committed (urgent and lazy changes), or failed."""
        journal = self.journal
        failures = journal.failures
        await self.until(lambda: not journal.has_changes() and journal.committing is None
                         and not self.broker.flush_scheduled or journal.failures != failures,
                         "the journal has committed everything")


def payloads(data: bytes) -> list[bytes]:
    """The payloads of the PUBLISH packets in `data`, in order."""
    return [p.payload for p in packets(data) if p.packet_type == 3]
