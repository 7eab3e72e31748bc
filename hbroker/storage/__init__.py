"""Storage backends for durable broker state.

`backend = "memory"` keeps everything in the broker's own structures (`Broker`, `Session`) and
nothing survives a restart. `sqlite` (the default) and `postgres` persist retained messages,
persistent sessions with their subscriptions and wills, queued and inflight deliveries and
incoming QoS 2 packet ids: the broker's journal (`journal.py`) turns what each loop iteration
changed into one batch of rows, which the backend commits atomically.
"""

from __future__ import annotations

from hbroker.config import StorageConfig
from hbroker.storage.base import Batch, Storage, StorageError, StoredState

__all__ = ["Batch", "Storage", "StorageError", "StoredState", "open_backend"]


def open_backend(config: StorageConfig) -> Storage | None:
    """The backend the configuration names (not yet opened), or None for `memory`."""
    if config.backend == "memory":
        return None
    if config.backend == "sqlite":
        from hbroker.storage.sqlite import SQLiteStorage

        return SQLiteStorage(config.path, fsync=config.fsync, max_size=config.max_size)
    if config.backend == "postgres":
        from hbroker.storage.postgres import PostgresStorage

        return PostgresStorage(config.dsn, fsync=config.fsync)
    raise ValueError(f"unknown storage backend {config.backend!r}")
