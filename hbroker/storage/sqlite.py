"""SQLite backend: the embedded default. WAL mode, one writer thread, schema versioned.

Commits go through `hbroker_ext.sqlite_writer`: the event loop turns a batch into C values
and a thread of the writer's own runs the transaction without the GIL, so the broker keeps
routing while SQLite writes. Opening (schema migrations), loading and `inspect` are rare and
use Python's `sqlite3` module on a second thread. A batch is one transaction; batches are
applied in the order they were committed. The tables and the SQL follow from
`hbroker.storage.schema` (`SQLiteDialect`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from hbroker_ext.sqlite_writer import Writer, WriterError

from hbroker.storage.base import SCHEMA_VERSION, Batch, Storage, StorageError, StoredState
from hbroker.storage.schema import (
    INSPECT_MESSAGES,
    INSPECT_RETAINED,
    INSPECT_SESSIONS,
    SCHEMA,
    SQLiteDialect,
    inspected_session,
)

SQLITE = SQLiteDialect()

log = logging.getLogger("hbroker.storage")

# Schema migrations: MIGRATIONS[n] takes a database at version n to version n + 1.
MIGRATIONS: list[str] = SQLITE.migrations()
assert len(MIGRATIONS) == SCHEMA_VERSION

# The statements of a batch, in the order Batch documents.
_APPLY: tuple[tuple[str, str], ...] = SQLITE.statements()

_PAGE_SIZE = 4096


def _is_full(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_FULL or "full" in str(exc).lower()


class SQLiteStorage(Storage):
    name = "sqlite"

    def __init__(self, path: str, *, fsync: bool = True, max_size: int = 0) -> None:
        self.path = path
        self.fsync = fsync
        self.max_size = max_size
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._db: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        # Commits: the writer, its thread, and the transactions it has not finished yet
        # (job id -> the future to resolve and the rows, kept alive for the writer).
        self._writer: Writer | None = None
        self._writer_thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._commits: dict[int, tuple[asyncio.Future, list]] = {}
        self._next_job = 1

    def describe(self) -> str:
        return os.path.abspath(self.path)

    # -- the writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                break
            fn, loop, future = job
            try:
                result = fn()
            except BaseException as exc:  # handed to the awaiting coroutine
                if not loop.is_closed():
                    loop.call_soon_threadsafe(_set_exception, future, exc)
            else:
                if not loop.is_closed():
                    loop.call_soon_threadsafe(_set_result, future, result)

    async def _call(self, fn: Callable[[], Any]) -> Any:
        if self._thread is None:  # closed (or never opened): no thread would ever answer
            raise sqlite3.OperationalError("storage is closed")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._jobs.put((fn, loop, future))
        return await future

    # -- Storage -------------------------------------------------------------------------

    async def open(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hbroker-sqlite", daemon=True)
        self._thread.start()
        try:
            page_size = await self._call(self._open)
            pragmas = [f"PRAGMA synchronous={'FULL' if self.fsync else 'NORMAL'}",
                       "PRAGMA foreign_keys=OFF"]
            if self.max_size:
                pragmas.append(
                    f"PRAGMA max_page_count={max(16, self.max_size // page_size)}")
            writer = Writer(self.path, pragmas, [sql for _, sql in _APPLY])
        except sqlite3.Error as exc:
            raise StorageError(f"sqlite {self.describe()}: cannot open: {exc}",
                               full=_is_full(exc)) from exc
        except WriterError as exc:
            raise StorageError(f"sqlite {self.describe()}: cannot open: {exc}",
                               full=exc.full) from exc
        except OSError as exc:
            raise StorageError(f"sqlite {self.describe()}: cannot open: {exc.strerror}") from exc
        self._writer = writer
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(writer.fileno(), self._collect)
        self._writer_thread = threading.Thread(target=writer.run, name="hbroker-sqlite-writer",
                                               daemon=True)
        self._writer_thread.start()

    def _open(self) -> int:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            db.close()
            raise sqlite3.DatabaseError(
                f"schema version {version} is newer than this hbroker ({SCHEMA_VERSION})")
        for target in range(version, SCHEMA_VERSION):
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[target].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version={target + 1}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            log.info("storage schema migrated", extra={"path": self.describe(),
                                                       "version": target + 1})
        self._db = db
        return db.execute("PRAGMA page_size").fetchone()[0] or _PAGE_SIZE

    async def load(self) -> StoredState:
        try:
            async with self._lock:
                return await self._call(self._load)
        except sqlite3.Error as exc:
            raise StorageError(f"sqlite {self.describe()}: cannot read: {exc}") from exc

    def _load(self) -> StoredState:
        db = self._db
        assert db is not None
        return StoredState(**{table.name: db.execute(SQLITE.select(table)).fetchall()
                              for table in SCHEMA})

    async def commit(self, batch: Batch) -> None:
        async with self._lock:  # calls complete in the order they were made
            await self._commit(batch)

    async def _commit(self, batch: Batch) -> None:
        writer = self._writer
        if writer is None or writer.stopped:
            raise StorageError(f"sqlite {self.describe()}: storage is closed")
        steps = [(index, rows) for index, (part, _) in enumerate(_APPLY)
                 if (rows := getattr(batch, part))]
        job = self._next_job
        self._next_job += 1
        assert self._loop is not None
        future = self._loop.create_future()
        self._commits[job] = (future, steps)
        try:
            writer.submit(job, steps)
        except (WriterError, ValueError, TypeError) as exc:
            del self._commits[job]
            raise StorageError(f"sqlite {self.describe()}: {exc}") from exc
        try:
            await future
        except WriterError as exc:
            raise StorageError(f"sqlite {self.describe()}: {exc}", full=exc.full) from exc

    def _collect(self) -> None:
        """The writer's eventfd is readable: resolve the commits it has finished."""
        writer = self._writer
        if writer is None:
            return
        for job, error in writer.collect():
            future, _ = self._commits.pop(job)
            if future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

    async def inspect(self) -> dict[str, Any]:
        try:
            async with self._lock:
                return await self._call(self._inspect)
        except sqlite3.Error as exc:
            raise StorageError(f"sqlite {self.describe()}: cannot read: {exc}") from exc

    def _inspect(self) -> dict[str, Any]:
        db = self._db
        assert db is not None
        return {
            "backend": self.name,
            "location": self.describe(),
            "schema_version": db.execute("PRAGMA user_version").fetchone()[0],
            "retained": db.execute(INSPECT_RETAINED).fetchone()[0],
            "messages": db.execute(INSPECT_MESSAGES).fetchone()[0],
            "sessions": [inspected_session(row) for row in db.execute(INSPECT_SESSIONS)],
        }

    async def close(self) -> None:
        writer = self._writer
        if writer is not None:
            # Queued transactions finish first, then the writer closes its connection.
            writer.stop()
            assert self._writer_thread is not None and self._loop is not None
            await self._loop.run_in_executor(None, self._writer_thread.join)
            self._collect()
            self._loop.remove_reader(writer.fileno())
            writer.close()
            self._writer = None
            self._writer_thread = None
        if self._thread is None:
            return
        if self._db is not None:
            db = self._db
            self._db = None
            try:
                await self._call(db.close)
            except sqlite3.Error as exc:
                log.warning("closing storage: %s", exc)
        self._jobs.put(None)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 5)
        self._thread = None


def _set_result(future: asyncio.Future, result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _set_exception(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
