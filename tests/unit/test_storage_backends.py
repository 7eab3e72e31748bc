"""The storage backends against the interface of `hbroker.storage.base`: the same tests for
SQLite (a file) and PostgreSQL (a throwaway server, see tests/pg_server.py), so that both read
back exactly the same rows; then what only one of them does (size limit, connection loss)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pg_server import USER, PostgresServer, free_port

from hbroker.storage.base import SCHEMA_VERSION, TABLES, Batch, Storage, StorageError, StoredState
from hbroker.storage.journal import id_ranges
from hbroker.storage.postgres import MIGRATIONS as POSTGRES_MIGRATIONS
from hbroker.storage.postgres import PostgresStorage, redact_dsn
from hbroker.storage.sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from hbroker.storage.sqlite import SQLiteStorage

# -- backends ------------------------------------------------------------------------------------


class SQLiteBackend:
    """A database file of its own for one test."""

    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = str(path)

    def make(self, **options: Any) -> Storage:
        return SQLiteStorage(str(self.path), **options)

    def tables(self) -> set[str]:
        with sqlite3.connect(self.path) as db:
            return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    def set_schema_version(self, version: int) -> None:
        db = sqlite3.connect(self.path)
        db.execute(f"PRAGMA user_version={version}")
        db.close()

    def make_version_1(self, statements: list[str]) -> None:
        """A database as schema version 1 left it, with these INSERTs done (`:m` is the
        blob b"m")."""
        with sqlite3.connect(self.path) as db:
            db.executescript(SQLITE_MIGRATIONS[0])
            for statement in statements:
                db.execute(statement.replace(":m", "X'6d'"))
            db.execute("PRAGMA user_version=1")
        db.close()


class PostgresBackend:
    """A schema of its own for one test (`?search_path=` in its DSN), in a database of the
    server: creating one costs milliseconds, a database half a second."""

    name = "postgres"
    _numbers = itertools.count(1)

    def __init__(self, server: PostgresServer, database: str) -> None:
        self.server = server
        self.database = database
        self.schema = f"test_{next(self._numbers)}"
        self.sql(f"CREATE SCHEMA {self.schema}")
        self.dsn = f"{server.dsn(database)}?search_path={self.schema}"
        self.location = (f"postgresql://{USER}@127.0.0.1:{server.port}/{database}"
                         f"?search_path={self.schema}")

    def make(self, **options: Any) -> Storage:
        return PostgresStorage(self.dsn, **options)

    def sql(self, statement: str) -> str:
        return self.server.psql(f"SET search_path = {self.schema}; {statement}", self.database)

    def tables(self) -> set[str]:
        out = self.sql("SELECT table_name FROM information_schema.tables "
                       f"WHERE table_schema = '{self.schema}'")
        return set(out.split())

    def set_schema_version(self, version: int) -> None:
        self.sql(f"UPDATE hbroker_meta SET value = {version} WHERE name = 'schema_version'")

    def make_version_1(self, statements: list[str]) -> None:
        self.sql(POSTGRES_MIGRATIONS[0] + "; CREATE TABLE hbroker_meta (name TEXT PRIMARY KEY, "
                 "value BIGINT NOT NULL); INSERT INTO hbroker_meta VALUES ('schema_version', 1);"
                 + "".join(f"{statement};".replace(":m", "'\\x6d'::bytea")
                           for statement in statements))

    def drop(self) -> None:
        if self.server.running:
            self.sql(f"DROP SCHEMA {self.schema} CASCADE")


Backend = SQLiteBackend | PostgresBackend


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield SQLiteBackend(tmp_path / "state.db")
        return
    pg = request.getfixturevalue("pg")
    yield pg


@pytest.fixture
def pg(postgres_server: PostgresServer, postgres_dsn: str) -> Iterator[PostgresBackend]:
    backend = PostgresBackend(postgres_server, postgres_dsn.rpartition("/")[2])
    yield backend
    backend.drop()


@asynccontextmanager
async def opened(backend: Backend, **options: Any) -> AsyncIterator[Any]:
    storage = backend.make(**options)
    try:
        await storage.open()
        yield storage
    finally:
        await storage.close()


async def reopened_load(backend: Backend) -> StoredState:
    """What a new storage on the same database reads (as after a restart)."""
    async with opened(backend) as storage:
        return await storage.load()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def assert_state(state: StoredState, expected: StoredState) -> None:
    """Equal rows, in the same order, of the same Python types (3600 == 3600.0 is not enough;
    True == 1 is not enough)."""
    assert state == expected
    for table in TABLES:
        rows, want = getattr(state, table), getattr(expected, table)
        assert type(rows) is list, table
        assert [type(r) for r in rows] == [tuple] * len(want), table
        assert [tuple(type(v) for v in r) for r in rows] == \
            [tuple(type(v) for v in r) for r in want], table


# -- rows ----------------------------------------------------------------------------------------

BIG = 2**40  # message ids and seqs beyond 32 bits
NO_MESSAGE = (None,) * 7  # the message_* columns of a delivery whose message has a row

# One batch with every row kind, given out of order, with bools and integral times as the
# journal may pass them.
FULL = Batch(
    sessions=[
        ("b", 5, 3600, None, b"\x93will", 2, 1700000000.25, 10),
        ("B", 4, None, 1700000100.5, None, 0, None, 1),
        ("\u00e9", 5, 0xFFFFFFFE, 1800000000.0, None, 0.0, None, 65535),
        ("a", 5, 60.5, None, None, 0, None, 2),
    ],
    subscriptions=[
        ("b", "x/+", 2, True, False, 2, 268435455),
        ("a", "z", 0, 0, 1, 0, 0),
        ("a", "#", 1, False, True, 1, 5),
        ("b", "$share/g/t", 1, 0, 0, 0, 0),
    ],
    messages=[
        (BIG, "t/1", b"\x00\xffpayload", 2, True, b"\x01\x02", 1700000200.0, "a"),
        (7, "t/2", b"", 0, 0, None, None, None),
    ],
    deliveries=[
        ("b", 2**33, 7, 1, False, b"\x91\x05", 0, 0, "g", *NO_MESSAGE),
        ("b", 1, BIG, 2, True, None, 65535, 2, None, *NO_MESSAGE),
        ("a", 5, 7, 1, 0, None, 12, 1, None, *NO_MESSAGE),
        ("a", 3, BIG, 0, 0, None, 0, 0, None, *NO_MESSAGE),
        # Its message's only delivery, which carries the message.
        ("\u00e9", 4, 99, 1, True, None, 0, 0, None, "t/99", b"\x00only", 2, True, b"\x01",
         1700000400, "\u00e9"),
    ],
    incoming_qos2=[("b", 65535), ("a", 9), ("b", 1)],
    retained=[
        ("z/last", b"r1", 1, None, None),
        ("a/first", b"", 0, b"\x26\x00", 1700000300.75),
        ("\u00e9/t", b"x", 2, None, 5),
    ],
)

# What both backends read back: ordered by key (byte order of the UTF-8 text), flags as 0/1
# ints, times as floats.
FULL_STATE = StoredState(
    sessions=[
        ("B", 4, None, 1700000100.5, None, 0.0, None, 1),
        ("a", 5, 60.5, None, None, 0.0, None, 2),
        ("b", 5, 3600.0, None, b"\x93will", 2.0, 1700000000.25, 10),
        ("\u00e9", 5, 4294967294.0, 1800000000.0, None, 0.0, None, 65535),
    ],
    subscriptions=[
        ("a", "#", 1, 0, 1, 1, 5),
        ("a", "z", 0, 0, 1, 0, 0),
        ("b", "$share/g/t", 1, 0, 0, 0, 0),
        ("b", "x/+", 2, 1, 0, 2, 268435455),
    ],
    retained=[
        ("a/first", b"", 0, b"\x26\x00", 1700000300.75),
        ("z/last", b"r1", 1, None, None),
        ("\u00e9/t", b"x", 2, None, 5.0),
    ],
    messages=[
        (7, "t/2", b"", 0, 0, None, None, None),
        (BIG, "t/1", b"\x00\xffpayload", 2, 1, b"\x01\x02", 1700000200.0, "a"),
    ],
    deliveries=[
        ("a", 3, BIG, 0, 0, None, 0, 0, None, *NO_MESSAGE),
        ("a", 5, 7, 1, 0, None, 12, 1, None, *NO_MESSAGE),
        ("b", 1, BIG, 2, 1, None, 65535, 2, None, *NO_MESSAGE),
        ("b", 2**33, 7, 1, 0, b"\x91\x05", 0, 0, "g", *NO_MESSAGE),
        ("\u00e9", 4, 99, 1, 1, None, 0, 0, None, "t/99", b"\x00only", 2, 1, b"\x01",
         1700000400.0, "\u00e9"),
    ],
    incoming_qos2=[("a", 9), ("b", 1), ("b", 65535)],
)

SMALL = Batch(sessions=[("s", 5, 10, None, None, 0, None, 1)],
              retained=[("r", b"1", 0, None, None)])
SMALL_STATE = StoredState(sessions=[("s", 5, 10.0, None, None, 0.0, None, 1)],
                          retained=[("r", b"1", 0, None, None)])


def failing_batch(retained_topic: str, payload: bytes = b"v") -> Batch:
    """A batch whose last part (retained) fails; everything before it must be rolled back."""
    return Batch(
        sessions_deleted=[("s",)],
        sessions=[("f", 5, None, None, None, 0, None, 1)],
        subscriptions=[("f", "f/#", 1, 0, 0, 0, 0)],
        messages=[(99, "f", b"m", 1, 0, None, None, "f")],
        deliveries=[("f", 1, 99, 1, 0, None, 0, 0, None, *NO_MESSAGE)],
        incoming_qos2=[("f", 3)],
        retained_deleted=[("r",)],
        retained=[("ok", b"1", 0, None, None), (retained_topic, payload, 0, None, None)],
    )


# -- both backends -------------------------------------------------------------------------------


def test_open_migrates_an_empty_database_and_reopening_is_a_no_op(
        backend: Backend, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hbroker.storage")

    async def first() -> tuple[dict[str, Any], StoredState]:
        async with opened(backend) as storage:
            info = await storage.inspect()
            state = await storage.load()
            await storage.commit(SMALL)
            return info, state

    info, state = run(first())
    migrated = [r for r in caplog.records if r.getMessage() == "storage schema migrated"]
    assert [r.version for r in migrated] == [1, 2]  # type: ignore[attr-defined]
    assert SCHEMA_VERSION == 2
    assert info == {"backend": backend.name, "location": backend.location, "schema_version": 2,
                    "retained": 0, "messages": 0, "sessions": []}
    assert_state(state, StoredState())
    expected_tables = set(TABLES) | ({"hbroker_meta"} if backend.name == "postgres" else set())
    assert backend.tables() == expected_tables

    caplog.clear()

    async def second() -> tuple[dict[str, Any], StoredState]:
        async with opened(backend) as storage:
            return await storage.inspect(), await storage.load()

    info, state = run(second())
    assert [r for r in caplog.records if r.getMessage() == "storage schema migrated"] == []
    assert info["schema_version"] == 2
    assert_state(state, SMALL_STATE)
    assert backend.tables() == expected_tables


def test_a_newer_schema_is_refused(backend: Backend) -> None:
    run(reopened_load(backend))
    backend.set_schema_version(SCHEMA_VERSION + 1)
    with pytest.raises(StorageError) as info:
        run(reopened_load(backend))
    assert "schema version 3 is newer than this hbroker (2)" in str(info.value)
    assert info.value.full is False


def test_a_version_1_database_is_migrated_keeping_its_rows(backend: Backend) -> None:
    """Version 2 adds the message a delivery may carry; the deliveries stored before have
    none (their messages have rows)."""
    backend.make_version_1([
        "INSERT INTO sessions VALUES ('s', 5, 60, NULL, NULL, 0, NULL, 1)",
        "INSERT INTO messages VALUES (7, 't', :m, 1, 0, NULL, NULL, 'p')",
        "INSERT INTO deliveries VALUES ('s', 3, 7, 1, 0, NULL, 0, 0, NULL)"])
    state = run(reopened_load(backend))
    assert state.messages == [(7, "t", b"m", 1, 0, None, None, "p")]
    assert state.deliveries == [("s", 3, 7, 1, 0, None, 0, 0, None, *NO_MESSAGE)]
    assert state.sessions == [("s", 5, 60.0, None, None, 0.0, None, 1)]


def test_a_batch_of_every_row_kind_reads_back_exactly(backend: Backend) -> None:
    async def scenario() -> tuple[StoredState, StoredState]:
        async with opened(backend) as storage:
            await storage.commit(FULL)
            return await storage.load(), await reopened_load(backend)

    same, after_restart = run(scenario())
    assert_state(same, FULL_STATE)
    assert_state(after_restart, FULL_STATE)


def test_many_rows_come_back_in_order(backend: Backend) -> None:
    n = 1500
    batch = Batch(
        messages=[(i, f"t/{i}", bytes([i % 256]), 1, 0, None, None, "c")
                  for i in range(n, 0, -1)],
        deliveries=[(f"c{i % 3}", i, i, 1, 0, None, i % 2, i % 2, None, *NO_MESSAGE)
                    for i in range(n, 0, -1)],
    )

    async def scenario() -> StoredState:
        async with opened(backend) as storage:
            await storage.commit(batch)
        return await reopened_load(backend)

    state = run(scenario())
    assert state.messages == [(i, f"t/{i}", bytes([i % 256]), 1, 0, None, None, "c")
                              for i in range(1, n + 1)]
    assert state.deliveries == sorted(
        (f"c{i % 3}", i, i, 1, 0, None, i % 2, i % 2, None, *NO_MESSAGE)
        for i in range(1, n + 1))
    assert state.deliveries[:2] == [("c0", 3, 3, 1, 0, None, 1, 1, None, *NO_MESSAGE),
                                    ("c0", 6, 6, 1, 0, None, 0, 0, None, *NO_MESSAGE)]


def test_session_deletion_cascades_to_that_client_only(backend: Backend) -> None:
    async def scenario() -> StoredState:
        async with opened(backend) as storage:
            await storage.commit(FULL)
            await storage.commit(Batch(sessions_deleted=[("a",), ("never-stored",)]))
        return await reopened_load(backend)

    state = run(scenario())
    assert_state(state, StoredState(
        sessions=[r for r in FULL_STATE.sessions if r[0] != "a"],
        subscriptions=[("b", "$share/g/t", 1, 0, 0, 0, 0), ("b", "x/+", 2, 1, 0, 2, 268435455)],
        retained=FULL_STATE.retained,
        messages=FULL_STATE.messages,  # messages go by messages_deleted only
        deliveries=[("b", 1, BIG, 2, 1, None, 65535, 2, None, *NO_MESSAGE),
                    ("b", 2**33, 7, 1, 0, b"\x91\x05", 0, 0, "g", *NO_MESSAGE),
                    FULL_STATE.deliveries[4]],
        incoming_qos2=[("b", 1), ("b", 65535)],
    ))


def test_a_session_ended_and_started_again_in_one_batch_keeps_only_the_new(
        backend: Backend) -> None:
    async def scenario() -> StoredState:
        async with opened(backend) as storage:
            await storage.commit(FULL)
            await storage.commit(Batch(
                sessions_deleted=[("b",)],
                sessions=[("b", 4, 100, None, None, 0, None, 1)],
                subscriptions=[("b", "new", 0, 0, 0, 0, 0)],
                deliveries=[("b", 1, 7, 0, 0, None, 0, 0, None, *NO_MESSAGE)],
                incoming_qos2=[("b", 2)],
            ))
        return await reopened_load(backend)

    state = run(scenario())
    assert state.sessions == [FULL_STATE.sessions[0], FULL_STATE.sessions[1],
                              ("b", 4, 100.0, None, None, 0.0, None, 1),
                              FULL_STATE.sessions[3]]
    assert state.subscriptions == [("a", "#", 1, 0, 1, 1, 5), ("a", "z", 0, 0, 1, 0, 0),
                                   ("b", "new", 0, 0, 0, 0, 0)]
    assert state.deliveries == [("a", 3, BIG, 0, 0, None, 0, 0, None, *NO_MESSAGE),
                                ("a", 5, 7, 1, 0, None, 12, 1, None, *NO_MESSAGE),
                                ("b", 1, 7, 0, 0, None, 0, 0, None, *NO_MESSAGE),
                                FULL_STATE.deliveries[4]]
    assert state.incoming_qos2 == [("a", 9), ("b", 2)]


def test_parts_apply_in_batch_order_deletes_after_upserts(backend: Backend) -> None:
    batch = Batch(
        sessions=[("k", 5, None, None, None, 0, None, 1)],
        subscriptions=[("k", "gone", 0, 0, 0, 0, 0), ("k", "kept", 1, 0, 0, 0, 0)],
        subscriptions_deleted=[("k", "gone")],
        messages=[(1, "t", b"", 0, 0, None, None, None), (2, "t", b"", 0, 0, None, None,
                                                              None)],
        deliveries=[("k", 1, 1, 0, 0, None, 0, 0, None, *NO_MESSAGE),
                    ("k", 2, 2, 0, 0, None, 0, 0, None, *NO_MESSAGE)],
        deliveries_deleted=[("k", 1, 1)],
        messages_deleted=[(1, 1)],
        incoming_qos2=[("k", 1), ("k", 2)],
        incoming_qos2_deleted=[("k", 2)],
        retained=[("gone", b"x", 0, None, None), ("kept", b"y", 0, None, None)],
        retained_deleted=[("gone",)],
    )

    async def scenario() -> StoredState:
        async with opened(backend) as storage:
            await storage.commit(batch)
        return await reopened_load(backend)

    assert_state(run(scenario()), StoredState(
        sessions=[("k", 5, None, None, None, 0.0, None, 1)],
        subscriptions=[("k", "kept", 1, 0, 0, 0, 0)],
        retained=[("kept", b"y", 0, None, None)],
        messages=[(2, "t", b"", 0, 0, None, None, None)],
        deliveries=[("k", 2, 2, 0, 0, None, 0, 0, None, *NO_MESSAGE)],
        incoming_qos2=[("k", 1)],
    ))


def test_upserts_replace_rows_with_the_same_key(backend: Backend) -> None:
    update = Batch(
        sessions=[("a", 4, None, 1700000999.5, b"w2", 30, 1700001029.5, 9)],
        subscriptions=[("a", "z", 2, 1, 0, 2, 77)],
        messages=[(7, "t/2b", b"new", 1, 1, b"\x03", 1700000400.0, "b")],
        deliveries=[("a", 3, 7, 1, 1, b"\x91\x01", 4, 1, "grp", *NO_MESSAGE)],
        incoming_qos2=[("a", 9), ("a", 9)],  # already there: ignored
        retained=[("z/last", b"r2", 2, b"\x01", 1700000500.5)],
    )

    async def scenario() -> StoredState:
        async with opened(backend) as storage:
            await storage.commit(FULL)
            await storage.commit(update)
        return await reopened_load(backend)

    expected = StoredState(
        sessions=[FULL_STATE.sessions[0],
                  ("a", 4, None, 1700000999.5, b"w2", 30.0, 1700001029.5, 9),
                  *FULL_STATE.sessions[2:]],
        subscriptions=[FULL_STATE.subscriptions[0], ("a", "z", 2, 1, 0, 2, 77),
                       *FULL_STATE.subscriptions[2:]],
        retained=[FULL_STATE.retained[0], ("z/last", b"r2", 2, b"\x01", 1700000500.5),
                  FULL_STATE.retained[2]],
        messages=[(7, "t/2b", b"new", 1, 1, b"\x03", 1700000400.0, "b"),
                  FULL_STATE.messages[1]],
        deliveries=[("a", 3, 7, 1, 1, b"\x91\x01", 4, 1, "grp", *NO_MESSAGE),
                    *FULL_STATE.deliveries[1:]],
        incoming_qos2=FULL_STATE.incoming_qos2,
    )
    assert_state(run(scenario()), expected)


def test_a_range_of_deliveries_is_deleted_for_that_session_only_both_ends_included(
        backend: Backend) -> None:
    def row(client_id: str, seq: int) -> tuple:
        return (client_id, seq, 1, 1, 0, None, 0, 0, None, *NO_MESSAGE)

    sessions = [(c, 5, None, None, None, 0, None, 1) for c in ("k", "m")]
    message = (1, "t", b"m", 1, 0, None, None, None)

    async def scenario() -> StoredState:
        async with opened(backend) as storage:
            await storage.commit(Batch(
                sessions=sessions, messages=[message],
                deliveries=[row("k", i) for i in range(1, 6)] + [row("m", i) for i in (2, 3)]))
            await storage.commit(Batch(deliveries_deleted=[("k", 2, 4), ("k", 9, 12)]))
        return await reopened_load(backend)

    state = run(scenario())
    assert [(d[0], d[1]) for d in state.deliveries] == [("k", 1), ("k", 5), ("m", 2), ("m", 3)]


def test_deleting_missing_rows_is_harmless(backend: Backend) -> None:
    missing = Batch(
        sessions_deleted=[("nobody",)],
        subscriptions_deleted=[("a", "no/such"), ("nobody", "#")],
        deliveries_deleted=[("a", 4, 4), ("nobody", 1, 1)],
        messages_deleted=[(8, 8), (BIG + 1, BIG + 3)],
        incoming_qos2_deleted=[("a", 10), ("nobody", 9)],
        retained_deleted=[("no/such",)],
    )

    async def scenario() -> tuple[StoredState, StoredState]:
        async with opened(backend) as storage:
            await storage.commit(missing)  # on an empty database
            empty = await storage.load()
            await storage.commit(FULL)
            await storage.commit(missing)
        return empty, await reopened_load(backend)

    empty, full = run(scenario())
    assert_state(empty, StoredState())
    assert_state(full, FULL_STATE)


def test_inspect_counts_per_session(backend: Backend) -> None:
    async def scenario() -> dict[str, Any]:
        async with opened(backend) as storage:
            await storage.commit(FULL)
            return await storage.inspect()

    info = run(scenario())
    assert info == {
        "backend": backend.name,
        "location": backend.location,
        "schema_version": 2,
        "retained": 3,
        "messages": 3,
        "sessions": [
            {"client_id": "B", "protocol_version": 4, "expiry_interval": None,
             "expires_at": 1700000100.5, "will": False, "subscriptions": 0, "queued": 0,
             "inflight": 0, "incoming_qos2": 0},
            {"client_id": "a", "protocol_version": 5, "expiry_interval": 60.5,
             "expires_at": None, "will": False, "subscriptions": 2, "queued": 1,
             "inflight": 1, "incoming_qos2": 1},
            {"client_id": "b", "protocol_version": 5, "expiry_interval": 3600.0,
             "expires_at": None, "will": True, "subscriptions": 2, "queued": 1,
             "inflight": 1, "incoming_qos2": 2},
            {"client_id": "\u00e9", "protocol_version": 5, "expiry_interval": 4294967294.0,
             "expires_at": 1800000000.0, "will": False, "subscriptions": 0, "queued": 1,
             "inflight": 0, "incoming_qos2": 0},
        ],
    }
    types = [{k: type(v).__name__ for k, v in s.items()} for s in info["sessions"]]
    assert types[2] == {"client_id": "str", "protocol_version": "int",
                        "expiry_interval": "float", "expires_at": "NoneType", "will": "bool",
                        "subscriptions": "int", "queued": "int", "inflight": "int",
                        "incoming_qos2": "int"}
    assert types[0]["will"] == "bool"
    assert [type(info[k]) for k in ("schema_version", "retained", "messages")] == [int] * 3


def test_concurrent_calls_are_serialised_in_order(backend: Backend) -> None:
    first = Batch(sessions=[("c", 5, 1, None, None, 0, None, 1)])
    second = Batch(sessions=[("c", 5, 2, None, None, 0, None, 2)],
                   retained=[("t", b"x", 0, None, None)])

    async def scenario() -> list[Any]:
        async with opened(backend) as storage:
            return await asyncio.gather(storage.commit(first), storage.inspect(),
                                        storage.commit(second), storage.load())

    _, info, _, state = run(scenario())
    assert [s["expiry_interval"] for s in info["sessions"]] == [1.0]
    assert info["retained"] == 0
    assert_state(state, StoredState(sessions=[("c", 5, 2.0, None, None, 0.0, None, 2)],
                                    retained=[("t", b"x", 0, None, None)]))


def test_commit_after_close_fails(backend: Backend) -> None:
    async def scenario() -> StorageError:
        storage = backend.make()
        await storage.open()
        await storage.close()
        with pytest.raises(StorageError) as info:
            await asyncio.wait_for(storage.commit(SMALL), 10)
        return info.value

    error = run(scenario())
    assert str(error) == f"{backend.name} {backend.location}: storage is closed"
    assert error.full is False
    assert_state(run(reopened_load(backend)), StoredState())


# -- SQLite --------------------------------------------------------------------------------------


def test_sqlite_full_commit_fails_and_leaves_nothing(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "small.db")

    async def scenario() -> tuple[StorageError, StoredState]:
        async with opened(backend, max_size=1) as storage:  # 16 pages: 64 KiB
            await storage.commit(SMALL)
            with pytest.raises(StorageError) as info:
                await storage.commit(failing_batch("big", b"\xaa" * 256 * 1024))
            # The storage stays usable: a batch that fits still commits.
            await storage.commit(Batch(retained=[("r2", b"2", 1, None, None)]))
        return info.value, await reopened_load(backend)

    error, state = run(scenario())
    assert error.full is True
    assert str(error) == f"sqlite {backend.location}: database or disk is full"
    assert_state(state, StoredState(
        sessions=SMALL_STATE.sessions,
        retained=[("r", b"1", 0, None, None), ("r2", b"2", 1, None, None)]))


# -- PostgreSQL ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("dsn", "shown"), [
    ("postgresql://u:secret@db.example:5432/hbroker", "postgresql://u@db.example:5432/hbroker"),
    ("postgres://u@h/db", "postgres://u@h/db"),
    ("postgresql://u:p%40ss@h/db?sslmode=require&password=again&application_name=x",
     "postgresql://u@h/db?sslmode=require&application_name=x"),
    ("postgresql:///db?host=/run/postgresql&password=pw", "postgresql:///db?host=/run/postgresql"),
    ("postgresql://u:pw@[::1]:5432,h2:5433/db", "postgresql://u@[::1]:5432,h2:5433/db"),
    ("postgresql://h:5432/db?sslcert=/a@b/c.crt", "postgresql://h:5432/db?sslcert=/a@b/c.crt"),
    ("postgresql://u:raw/pass#word@h/db", "postgresql://u@h/db"),
    ("postgresql://u:raw?pass@h/db", "postgresql://u@h/db"),
    ("postgresql://u:p?w/x@h/db", "postgresql://(unparsable DSN hidden)"),
    ("host=h user=u password='a secret' dbname=d", "host=h user=u dbname=d"),
])
def test_describe_never_shows_the_password(dsn: str, shown: str) -> None:
    assert redact_dsn(dsn) == shown
    assert PostgresStorage(dsn).describe() == shown


def test_postgres_unreachable_server_is_a_storage_error_without_the_password() -> None:
    port = free_port()
    storage = PostgresStorage(f"postgresql://u:s3cretpw@127.0.0.1:{port}/db",
                              connect_timeout=2)

    async def scenario() -> StorageError:
        with pytest.raises(StorageError) as info:
            await storage.open()
        await storage.close()
        return info.value

    error = run(scenario())  # a hang would be stopped by pytest-timeout
    assert str(error).startswith(f"postgres postgresql://u@127.0.0.1:{port}/db: cannot connect: ")
    assert "s3cretpw" not in str(error)
    assert error.full is False


def test_postgres_wrong_password_is_a_storage_error_without_it(pg: PostgresBackend) -> None:
    dsn = pg.dsn.replace(f":{pg.server.password}@", ":Wr0ngPassw0rd@")
    assert dsn != pg.dsn
    storage = PostgresStorage(dsn)
    with pytest.raises(StorageError) as info:
        run(storage.open())
    assert str(info.value) == (f"postgres {pg.location}: cannot connect: "
                               f'password authentication failed for user "{USER}"')


def test_postgres_schema_lives_in_hbroker_meta(pg: PostgresBackend) -> None:
    run(reopened_load(pg))
    assert pg.sql("SELECT name, value FROM hbroker_meta") == "schema_version|2\n"
    assert pg.sql("SELECT data_type FROM information_schema.columns WHERE table_name = "
                  "'deliveries' ORDER BY ordinal_position").split("\n")[:-1] == [
        "text", "bigint", "bigint", "smallint", "smallint", "bytea", "integer", "smallint",
        "text", "text", "bytea", "smallint", "smallint", "bytea", "double precision", "text"]


def test_postgres_disk_full_is_reported_full_and_rolled_back(pg: PostgresBackend) -> None:
    # The server says 53100 when a write finds no space: a trigger says it on cue.
    run(reopened_load(pg))  # creates the tables
    pg.sql("CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
           "RAISE EXCEPTION 'could not extend file: No space left on device' "
           "USING ERRCODE = '53100'; END $$; "
           "CREATE TRIGGER disk_full BEFORE INSERT ON retained FOR EACH ROW "
           "WHEN (NEW.topic = 'boom') EXECUTE FUNCTION disk_full()")

    async def scenario() -> tuple[StorageError, StoredState]:
        async with opened(pg) as storage:
            await storage.commit(SMALL)
            with pytest.raises(StorageError) as info:
                await storage.commit(failing_batch("boom"))
            await storage.commit(Batch(retained=[("r2", b"2", 1, None, None)]))
        return info.value, await reopened_load(pg)

    error, state = run(scenario())
    assert error.full is True
    assert str(error) == (f"postgres {pg.location}: commit failed: "
                          "could not extend file: No space left on device")
    assert_state(state, StoredState(
        sessions=SMALL_STATE.sessions,
        retained=[("r", b"1", 0, None, None), ("r2", b"2", 1, None, None)]))


def test_postgres_connection_lost_mid_batch_rolls_back_and_reconnects(
        pg: PostgresBackend) -> None:
    # The server ends the connection while the batch is half applied.
    run(reopened_load(pg))  # creates the tables
    pg.sql("CREATE FUNCTION hang_up() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
           "PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NEW; END $$; "
           "CREATE TRIGGER hang_up BEFORE INSERT ON retained FOR EACH ROW "
           "WHEN (NEW.topic = 'hang-up') EXECUTE FUNCTION hang_up()")

    async def scenario() -> tuple[StorageError, StoredState, StoredState]:
        async with opened(pg) as storage:
            await storage.commit(SMALL)
            with pytest.raises(StorageError) as info:
                await storage.commit(failing_batch("hang-up"))
            after_failure = await reopened_load(pg)
            # The same storage connects again for its next commit.
            await storage.commit(Batch(retained=[("r2", b"2", 1, None, None)]))
            return info.value, after_failure, await storage.load()

    error, after_failure, state = run(scenario())
    assert error.full is False
    assert str(error) == (f"postgres {pg.location}: commit failed: connection was closed in "
                          "the middle of operation: terminating connection due to administrator "
                          "command")
    assert_state(after_failure, SMALL_STATE)
    assert_state(state, StoredState(
        sessions=SMALL_STATE.sessions,
        retained=[("r", b"1", 0, None, None), ("r2", b"2", 1, None, None)]))


def test_postgres_a_value_the_driver_cannot_encode_is_a_storage_error(
        pg: PostgresBackend) -> None:
    bad = failing_batch("ok2")
    bad.retained[-1] = ("ok2", b"v", "not a qos", None, None)

    async def scenario() -> tuple[StorageError, StoredState]:
        async with opened(pg) as storage:
            await storage.commit(SMALL)
            with pytest.raises(StorageError) as info:
                await storage.commit(bad)
            await storage.commit(Batch(retained=[("r2", b"2", 1, None, None)]))
            return info.value, await storage.load()

    error, state = run(scenario())
    assert error.full is False
    assert str(error).startswith(f"postgres {pg.location}: commit failed: invalid input for "
                                 "query argument $3")
    assert_state(state, StoredState(
        sessions=SMALL_STATE.sessions,
        retained=[("r", b"1", 0, None, None), ("r2", b"2", 1, None, None)]))


def test_postgres_hung_server_times_out_and_the_next_commit_recovers(
        pg: PostgresBackend) -> None:
    async def scenario() -> tuple[StorageError, float, StoredState]:
        async with opened(pg, command_timeout=1) as storage:
            await storage.commit(SMALL)
            # Freeze the server process serving the storage's connection.
            pids = [int(p) for p in pg.server.psql(
                f"SELECT pid FROM pg_stat_activity WHERE datname = '{pg.database}' "
                "AND pid != pg_backend_pid()").split()]
            assert len(pids) == 1
            os.kill(pids[0], signal.SIGSTOP)
            try:
                started = time.monotonic()
                with pytest.raises(StorageError) as info:
                    await storage.commit(FULL)
                elapsed = time.monotonic() - started
            finally:
                os.kill(pids[0], signal.SIGCONT)
            await storage.commit(FULL)  # on a new connection
            return info.value, elapsed, await storage.load()

    error, elapsed, state = run(scenario())
    # The commit waited for the configured timeout (a lower bound only: a loaded machine can
    # only add to it) and then failed with the timeout's own message.
    assert elapsed >= 0.9
    assert str(error) == (f"postgres {pg.location}: commit failed: "
                          "no answer from the server in time")
    assert error.full is False
    assert_state(state, StoredState(
        sessions=[*FULL_STATE.sessions[:3], SMALL_STATE.sessions[0], FULL_STATE.sessions[3]],
        subscriptions=FULL_STATE.subscriptions,
        retained=[FULL_STATE.retained[0], SMALL_STATE.retained[0], *FULL_STATE.retained[1:]],
        messages=FULL_STATE.messages,
        deliveries=FULL_STATE.deliveries,
        incoming_qos2=FULL_STATE.incoming_qos2))


@pytest.fixture(scope="module")
def own_server(postgres_server: PostgresServer) -> Iterator[PostgresServer]:
    """A server of their own for the tests that stop it (skipped, or failed under CI, as
    postgres_server is when PostgreSQL is missing)."""
    with PostgresServer(postgres_server.bindir) as server:
        yield server


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_recovers_on_the_next_commit_after_the_server_comes_back(
        own_server: PostgresServer, mode: str) -> None:
    backend = PostgresBackend(own_server, "postgres")
    batch = Batch(sessions=[("late", 5, None, None, None, 0, None, 1)],
                  messages=[(5, "t", b"p", 1, 0, None, None, "late")],
                  retained=[("r", b"updated", 1, None, None)])

    async def scenario() -> dict[str, Any]:
        results: dict[str, Any] = {}
        async with opened(backend, connect_timeout=3) as storage:
            await storage.commit(SMALL)
            own_server.stop(mode)
            try:
                with pytest.raises(StorageError) as lost:
                    await storage.commit(batch)  # on the connection the server dropped
                with pytest.raises(StorageError) as down:
                    await storage.commit(batch)  # a new connection is refused
                with pytest.raises(StorageError) as load_down:
                    await storage.load()
            finally:
                own_server.start()
            results["errors"] = (lost.value, down.value, load_down.value)
            results["after_restart"] = await reopened_load(backend)
            await storage.commit(batch)  # the broker's retry
            results["recovered"] = await storage.load()
        results["reopened"] = await reopened_load(backend)
        return results

    try:
        results = run(scenario())
    finally:
        backend.drop()
    lost, down, load_down = results["errors"]
    assert [e.full for e in (lost, down, load_down)] == [False, False, False]
    # Whether the driver noticed the hang-up before the commit or during it:
    assert str(lost).startswith((f"postgres {backend.location}: commit failed: ",
                                 f"postgres {backend.location}: cannot connect: "))
    assert str(down).startswith(f"postgres {backend.location}: cannot connect: ")
    assert str(load_down).startswith(f"postgres {backend.location}: cannot connect: ")
    assert_state(results["after_restart"], SMALL_STATE)
    expected = StoredState(sessions=[("late", 5, None, None, None, 0.0, None, 1),
                                     ("s", 5, 10.0, None, None, 0.0, None, 1)],
                           messages=[(5, "t", b"p", 1, 0, None, None, "late")],
                           retained=[("r", b"updated", 1, None, None)])
    assert_state(results["recovered"], expected)
    assert_state(results["reopened"], expected)


@given(st.sets(st.integers(1, 2**40), min_size=1, max_size=200))
def test_deleted_message_ids_become_ranges_that_cover_exactly_them(ids: set[int]) -> None:
    ranges = id_ranges(list(ids))
    covered = [i for first, last in ranges for i in range(first, last + 1)]
    assert covered == sorted(ids)
    # Ranges are maximal: no two of them could be merged.
    assert all(b[0] > a[1] + 1 for a, b in zip(ranges, ranges[1:], strict=False))
