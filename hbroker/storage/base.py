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

from hbroker.storage.schema import SCHEMA_VERSION, TABLES

__all__ = ["SCHEMA_VERSION", "TABLES", "Batch", "Storage", "StorageError", "StoredState"]

# Row layouts: each row is a tuple of the columns of its table, in the order
# `hbroker.storage.schema` declares them (SESSIONS, SUBSCRIPTIONS, RETAINED, MESSAGES,
# DELIVERIES, INCOMING_QOS2), which also says what each column holds. The backends create the
# tables and their statements from the same declaration.


class StorageError(Exception):
    """A backend could not do what was asked. `full` is true when the cause is lack of space
    (disk full, size quota), which 5.0 clients are told as 0x97 Quota exceeded."""

    def __init__(self, message: str, *, full: bool = False) -> None:
        super().__init__(message)
        self.full = full


@dataclass(slots=True)
class Batch:
    """One atomic commit. A backend applies the parts in the order of `schema.PLAN`: sessions
    ended (with everything of theirs), then upserts and deletes table by table as listed.
    Upserted rows are whole rows of their table; deletions name keys."""

    sessions_deleted: list[tuple[str]] = field(default_factory=list)  # (client id,)
    sessions: list[tuple] = field(default_factory=list)  # SESSIONS rows
    subscriptions: list[tuple] = field(default_factory=list)  # SUBSCRIPTIONS rows
    subscriptions_deleted: list[tuple[str, str]] = field(default_factory=list)
    messages: list[tuple] = field(default_factory=list)  # MESSAGES rows
    deliveries: list[tuple] = field(default_factory=list)  # DELIVERIES rows
    # (client id, first seq, last seq): that session's deliveries of the range, both ends
    # included, are deleted.
    deliveries_deleted: list[tuple[str, int, int]] = field(default_factory=list)
    # (first id, last id): every message id of the range, both ends included, is deleted.
    messages_deleted: list[tuple[int, int]] = field(default_factory=list)
    incoming_qos2: list[tuple[str, int]] = field(default_factory=list)  # INCOMING_QOS2 rows
    incoming_qos2_deleted: list[tuple[str, int]] = field(default_factory=list)
    retained: list[tuple] = field(default_factory=list)  # RETAINED rows
    retained_deleted: list[tuple[str]] = field(default_factory=list)  # (topic,)

    def __len__(self) -> int:
        return sum(len(getattr(self, name)) for name in self.__slots__)  # type: ignore[attr-defined]


@dataclass(slots=True)
class StoredState:
    """Everything a backend holds, as rows of the tables of the same names
    (`hbroker.storage.schema`), ordered by key, read at start."""

    sessions: list[tuple] = field(default_factory=list)
    subscriptions: list[tuple] = field(default_factory=list)
    retained: list[tuple] = field(default_factory=list)
    messages: list[tuple] = field(default_factory=list)
    deliveries: list[tuple] = field(default_factory=list)  # by (client_id, seq): in order
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
