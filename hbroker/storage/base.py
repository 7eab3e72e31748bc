"""The storage interface: what the broker persists, as rows, and what a backend must do.

The broker never writes SQL. Its journal (`hbroker.storage.journal`) collects the objects a loop
iteration changed and turns them into one `Batch` of rows; a backend commits a batch atomically,
in order, one at a time. On start a backend hands back everything it holds as a `StoredState`.

Times in rows are wall-clock seconds since the epoch (`time.time()`), so that expiry continues
across a restart from where it was; `None` means "never" or "not set".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

# Bumped whenever the schema changes; each backend migrates older schemas on open.
# 2: a delivery may carry its message (the message_* columns of deliveries).
SCHEMA_VERSION = 2

# Row layouts (tuples, in this order). The backends create tables with these columns.
#
# sessions:       (client_id, protocol_version, expiry_interval, expires_at, will,
#                  will_delay, will_due, next_packet_id)
#   expiry_interval: seconds, None = never expires.
#   expires_at: when a disconnected session ends; None while its client is connected (after a
#               crash the session counts as disconnected from the restart) or if it never ends.
#   will: a packed message (see `pack_message`) or None; will_due: when a delayed will is due.
# subscriptions:  (client_id, topic_filter, qos, no_local, retain_as_published,
#                  retain_handling, subscription_identifier)
# retained:       (topic, payload, qos, properties, expires_at)
# messages:       (id, topic, payload, qos, retain, properties, expires_at, sender)
#   A message that queued or inflight deliveries reference (unless its only delivery carries
#   it, see deliveries): written once, with the first delivery that references it, never
#   changed, and deleted in the commit that deletes the last delivery that needs it. (A
#   retained message lives in `retained` only.)
# deliveries:     (client_id, seq, message_id, qos, retain, subscription_ids, packet_id,
#                  state, share_group, message_topic, message_payload, message_qos,
#                  message_retain, message_properties, message_expires_at, message_sender)
#   One message on its way to one session. packet_id 0: queued; otherwise inflight, with
#   state 1 (PUBLISH sent, awaiting PUBACK/PUBREC) or 2 (PUBREL sent, awaiting PUBCOMP).
#   A QoS 1 delivery that was inflight when its row was first written (sent at once: its next
#   change is its deletion) to the only session its message reached *carries* the message:
#   the message_* columns hold it as a `messages` row would (topic, payload, qos, retain,
#   properties, expires_at, sender) and no message row is written, so one persistent
#   subscriber online costs one row per message. Otherwise they are NULL and message_id is a
#   `messages` row; when both exist (a second delivery came later), the `messages` row is it.
#   seq orders a session's deliveries (it counts per session); subscription_ids is a packed
#   list. At start these rows
#   are the sessions' queues and inflight windows as they were: stored messages are never
#   routed again.
# incoming_qos2:  (client_id, packet_id): QoS 2 packet ids received and PUBRECed, awaiting
#                  PUBREL [MQTT-4.3.3-9].

TABLES = ("sessions", "subscriptions", "retained", "messages", "deliveries", "incoming_qos2")


class StorageError(Exception):
    """A backend could not do what was asked. `full` is true when the cause is lack of space
    (disk full, size quota), which 5.0 clients are told as 0x97 Quota exceeded."""

    def __init__(self, message: str, *, full: bool = False) -> None:
        super().__init__(message)
        self.full = full


@dataclass(slots=True)
class Batch:
    """One atomic commit. A backend applies the parts in this order: sessions ended (with
    everything of theirs), then upserts and deletes table by table as listed."""

    sessions_deleted: list[tuple[str]] = field(default_factory=list)
    sessions: list[tuple] = field(default_factory=list)
    subscriptions: list[tuple] = field(default_factory=list)
    subscriptions_deleted: list[tuple[str, str]] = field(default_factory=list)
    messages: list[tuple] = field(default_factory=list)
    deliveries: list[tuple] = field(default_factory=list)
    # (client id, first seq, last seq): that session's deliveries of the range, both ends
    # included, are deleted.
    deliveries_deleted: list[tuple[str, int, int]] = field(default_factory=list)
    # (first id, last id): every message id of the range, both ends included, is deleted.
    messages_deleted: list[tuple[int, int]] = field(default_factory=list)
    incoming_qos2: list[tuple[str, int]] = field(default_factory=list)
    incoming_qos2_deleted: list[tuple[str, int]] = field(default_factory=list)
    retained: list[tuple] = field(default_factory=list)
    retained_deleted: list[tuple[str]] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(len(getattr(self, name)) for name in self.__slots__)  # type: ignore[attr-defined]


@dataclass(slots=True)
class StoredState:
    """Everything a backend holds, as rows (see the layouts above), read at start."""

    sessions: list[tuple] = field(default_factory=list)
    subscriptions: list[tuple] = field(default_factory=list)
    retained: list[tuple] = field(default_factory=list)
    messages: list[tuple] = field(default_factory=list)
    deliveries: list[tuple] = field(default_factory=list)  # ordered by (client_id, seq)
    incoming_qos2: list[tuple] = field(default_factory=list)


class Storage(ABC):
    """A storage backend. All methods are coroutines run on the broker's event loop; a backend
    whose driver blocks (SQLite) runs it in a thread of its own."""

    name = "storage"

    @abstractmethod
    async def open(self) -> None:
        """Connect, create or migrate the schema. Raises StorageError."""

    @abstractmethod
    async def load(self) -> StoredState:
        """Everything stored, for the broker to restore at start."""

    @abstractmethod
    async def commit(self, batch: Batch) -> None:
        """Apply `batch` atomically. Raises StorageError if it was not stored; then nothing of
        it may be visible after a restart."""

    @abstractmethod
    async def inspect(self) -> dict[str, Any]:
        """A summary for `hbroker storage inspect`: `{"backend", "location", "schema_version",
        "retained": count, "messages": count, "sessions": [{"client_id", "protocol_version",
        "expiry_interval", "expires_at", "will", "subscriptions", "queued", "inflight",
        "incoming_qos2"}, ...]}` with sessions ordered by client id."""

    @abstractmethod
    async def close(self) -> None:
        """Finish and release the connection."""

    def describe(self) -> str:
        """Where the state lives, for logs (a path, or a DSN without its password)."""
        return self.name
