"""PostgreSQL backend: broker state on a PostgreSQL server, through asyncpg.

The tables of `hbroker.storage.schema`, as the SQLite backend has them, with PostgreSQL types
(`schema.POSTGRES`: BYTEA for packed blobs, DOUBLE PRECISION for times, BIGINT for message ids
and delivery sequence numbers, SMALLINT for flags, stored as 0/1 so that rows read back equal
the SQLite backend's); the SQL follows from the schema (`PostgresDialect`). The schema version
lives in `hbroker_meta` and older schemas are migrated on open, in one transaction, under an
advisory lock so that two brokers opening the same database do not both migrate it.

One connection, used by one operation at a time. A batch is one transaction. When the
connection is lost, `commit` and `load` raise `StorageError` and the next call connects again
(with a short timeout), so the broker's retry with backoff recovers by itself once the server is
back. A commit that fails while its COMMIT is in flight is reported as failed even if the server
did store it; the broker then applies the same batch again, which every statement tolerates.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, unquote, unquote_plus

import asyncpg

from hbroker.storage.base import SCHEMA_VERSION, Batch, Storage, StorageError, StoredState
from hbroker.storage.schema import (
    INSPECT_MESSAGES,
    INSPECT_RETAINED,
    INSPECT_SESSIONS,
    SCHEMA,
    PostgresDialect,
    inspected_session,
)

log = logging.getLogger("hbroker.storage")

POSTGRES = PostgresDialect()

# Schema migrations: MIGRATIONS[n] takes a database at version n to version n + 1.
MIGRATIONS: list[str] = POSTGRES.migrations()
assert len(MIGRATIONS) == SCHEMA_VERSION

# The statements of a batch, in the order Batch documents (the same as SQLite's).
_APPLY: tuple[tuple[str, str], ...] = POSTGRES.statements()

_META = "CREATE TABLE IF NOT EXISTS hbroker_meta (name TEXT PRIMARY KEY, value BIGINT NOT NULL)"
_MIGRATION_LOCK = 0x6862726F6B6572  # pg_advisory_xact_lock key: "hbroker"
_DISK_FULL = "53100"

# What a driver call can raise besides bugs: server errors, connection and protocol errors,
# network errors, timeouts, and configuration errors in the DSN.
_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError,
    TimeoutError, ValueError,
)

_PASSWORD_PARAMS = ("password", "sslpassword")
_KEYWORD_PASSWORD = re.compile(
    r"(?i)(?:^|\s+)(?:ssl)?password\s*=\s*(?:'(?:[^'\\]|\\.)*'?|\S*)")
_HOST = r"(?:\[[^\]/?#@]*\]|[^:,\[\]/?#@]*)(?::\d+)?"
_HOSTSPEC = re.compile(f"{_HOST}(?:,{_HOST})*")


def _is_password_param(param: str) -> bool:
    return unquote_plus(param.partition("=")[0]).lower() in _PASSWORD_PARAMS


def redact_dsn(dsn: str) -> str:
    """`dsn` without its password: `postgresql://user:secret@host/db?password=x` becomes
    `postgresql://user@host/db`. Keyword DSNs (`host=h password=x`) lose their password pair.
    A URL whose host part cannot be told from its user information is not shown at all."""
    scheme, sep, rest = dsn.partition("://")
    if not sep:
        return _KEYWORD_PASSWORD.sub("", dsn).strip()
    # The user information ends at the last "@" before the query or before the first "/",
    # whichever is further: a password with a raw "/", "#" or "?" still counts as one.
    at = max(rest.partition("?")[0].rfind("@"), rest.partition("/")[0].rfind("@"))
    user, after = "", rest
    if at >= 0:
        user = rest[:at].partition(":")[0]
        after = rest[at + 1:]
    end = _HOSTSPEC.match(after).end()  # type: ignore[union-attr]  # always matches
    if end < len(after) and after[end] not in "/?#":
        return f"{scheme}://(unparsable DSN hidden)"
    tail = after[end:].partition("#")[0]  # a fragment means nothing to PostgreSQL
    path, qmark, query = tail.partition("?")
    if qmark:
        query = "&".join(p for p in query.split("&") if p and not _is_password_param(p))
        qmark = "?" if query else ""
    userinfo = f"{user}@" if user else ""
    return f"{scheme}://{userinfo}{after[:end]}{path}{qmark}{query}"


def _secrets(dsn: str) -> list[str]:
    """Every part of `dsn` that might be its password, longest first, to scrub from error
    messages (the driver's messages could quote a malformed DSN)."""
    found: set[str] = set()
    _, sep, rest = dsn.partition("://")
    if sep:
        colon = rest.find(":")
        for i, ch in enumerate(rest):
            if ch == "@" and 0 <= colon < i:
                found.add(rest[colon + 1:i])
                found.add(unquote(rest[colon + 1:i]))
        for k, v in parse_qsl(rest.partition("?")[2], keep_blank_values=True):
            if k.lower() in _PASSWORD_PARAMS:
                found.add(v)
    for match in _KEYWORD_PASSWORD.finditer(dsn):
        found.add(match.group(0).partition("=")[2].strip().strip("'"))
    return sorted((s for s in found if s), key=len, reverse=True)


@asynccontextmanager
async def _transaction(conn: asyncpg.Connection, **options: Any) -> AsyncIterator[None]:
    """A transaction that, when its body fails, rolls back if the connection is still in step
    and lets the body's error through (asyncpg's own would replace a lost connection with an
    error about `Transaction.__aexit__`). After a timeout or a cancellation the caller drops
    the connection instead, which ends the transaction on the server."""
    transaction = conn.transaction(**options)
    await transaction.start()
    try:
        yield
    except BaseException as exc:
        if isinstance(exc, Exception) and not isinstance(exc, TimeoutError) \
                and not conn.is_closed():
            try:
                await transaction.rollback()
            except _ERRORS:
                pass  # the connection is dropped by the caller
        raise
    await transaction.commit()


class PostgresStorage(Storage):
    """State on a PostgreSQL server. `dsn` is a libpq URL (`postgresql://user:pw@host/db`)."""

    name = "postgres"

    def __init__(self, dsn: str, *, fsync: bool = True, connect_timeout: float = 5.0,
                 command_timeout: float = 60.0) -> None:
        self.dsn = dsn
        self.fsync = fsync
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self._opened = False
        self._closed = False
        self._location = redact_dsn(dsn)
        self._secrets = _secrets(dsn)

    def describe(self) -> str:
        return self._location

    # -- connection --------------------------------------------------------------------------

    def _error(self, what: str, exc: BaseException) -> StorageError:
        """`exc` as a StorageError, without the password in its message."""
        if isinstance(exc, TimeoutError):
            text = "no answer from the server in time"
        else:
            text = str(exc) or type(exc).__name__
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return StorageError(f"postgres {self.describe()}: {what}: {text}",
                            full=getattr(exc, "sqlstate", None) == _DISK_FULL)

    async def _connection(self) -> asyncpg.Connection:
        """The open connection, or a new one if there is none (lost, or never made)."""
        if self._closed:
            raise StorageError(f"postgres {self.describe()}: storage is closed")
        conn = self._conn
        if conn is not None and not conn.is_closed():
            return conn
        self._conn = None
        try:
            # fsync = false: the server acknowledges a commit before its WAL reaches the disk
            # (synchronous_commit = off): a crash of the broker loses nothing, a crash of the
            # database server can lose its last moments (3 × wal_writer_delay).
            conn = await asyncpg.connect(
                self.dsn, timeout=self.connect_timeout, command_timeout=self.command_timeout,
                server_settings={"synchronous_commit": "on" if self.fsync else "off"})
        except _ERRORS as exc:
            raise self._error("cannot connect", exc) from None
        self._conn = conn
        if self._opened:
            log.info("storage reconnected", extra={"location": self.describe()})
        return conn

    def _after_failure(self, conn: asyncpg.Connection, exc: BaseException) -> None:
        """Keep the connection after a plain SQL error, which rolled the transaction back;
        drop it after anything that may leave it in an unknown state (connection lost,
        timeout, cancellation), so the next call connects again."""
        if isinstance(exc, asyncpg.PostgresError) and not conn.is_closed() \
                and not conn.is_in_transaction():
            return
        conn.terminate()
        if self._conn is conn:
            self._conn = None

    # -- Storage -----------------------------------------------------------------------------

    async def open(self) -> None:
        async with self._lock:
            conn = await self._connection()
            try:
                migrated = await self._migrate(conn)
            except BaseException as exc:
                conn.terminate()
                self._conn = None
                if isinstance(exc, _ERRORS):
                    raise self._error("cannot open", exc) from None
                raise
            self._opened = True
        for version in migrated:
            log.info("storage schema migrated", extra={"location": self.describe(),
                                                       "version": version})

    async def _migrate(self, conn: asyncpg.Connection) -> list[int]:
        """Bring the schema to SCHEMA_VERSION, in one transaction; the versions reached."""
        migrated: list[int] = []
        async with _transaction(conn):
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(_META)
            version = await conn.fetchval(
                "SELECT value FROM hbroker_meta WHERE name = 'schema_version'") or 0
            if version > SCHEMA_VERSION:
                raise StorageError(f"postgres {self.describe()}: schema version {version} is "
                                   f"newer than this hbroker ({SCHEMA_VERSION})")
            for target in range(version, SCHEMA_VERSION):
                await conn.execute(MIGRATIONS[target])
                await conn.execute(
                    "INSERT INTO hbroker_meta (name, value) VALUES ('schema_version', $1) "
                    "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value", target + 1)
                migrated.append(target + 1)
        return migrated

    async def load(self) -> StoredState:
        async with self._lock:
            conn = await self._connection()
            try:
                async with _transaction(conn, isolation="repeatable_read", readonly=True):
                    tables = {table.name: [tuple(row) for row in
                                           await conn.fetch(POSTGRES.select(table))]
                              for table in SCHEMA}
            except BaseException as exc:
                self._after_failure(conn, exc)
                if isinstance(exc, _ERRORS):
                    raise self._error("cannot read", exc) from None
                raise
        return StoredState(**tables)

    async def commit(self, batch: Batch) -> None:
        async with self._lock:
            conn = await self._connection()
            if not len(batch):
                return
            try:
                async with _transaction(conn):
                    for part, sql in _APPLY:
                        rows = getattr(batch, part)
                        if rows:
                            await conn.executemany(sql, rows)
            except BaseException as exc:
                self._after_failure(conn, exc)
                if isinstance(exc, _ERRORS):
                    raise self._error("commit failed", exc) from None
                raise

    async def inspect(self) -> dict[str, Any]:
        async with self._lock:
            conn = await self._connection()
            try:
                async with _transaction(conn, isolation="repeatable_read", readonly=True):
                    version = await conn.fetchval(
                        "SELECT value FROM hbroker_meta WHERE name = 'schema_version'")
                    retained = await conn.fetchval(INSPECT_RETAINED)
                    messages = await conn.fetchval(INSPECT_MESSAGES)
                    rows = await conn.fetch(INSPECT_SESSIONS)
            except BaseException as exc:
                self._after_failure(conn, exc)
                if isinstance(exc, _ERRORS):
                    raise self._error("cannot read", exc) from None
                raise
        sessions = [inspected_session(tuple(row)) for row in rows]
        return {
            "backend": self.name,
            "location": self.describe(),
            "schema_version": version,
            "retained": retained,
            "messages": messages,
            "sessions": sessions,
        }

    async def close(self) -> None:
        self._closed = True
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is None or conn.is_closed():
                return
            try:
                await conn.close(timeout=self.connect_timeout)
            except _ERRORS as exc:
                log.warning("closing storage: %s", self._error("close", exc))
                conn.terminate()
