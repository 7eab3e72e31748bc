"""The row layout of `hbroker.storage.schema` is the one place the tables are declared: the
journal's rows, the batch plan and the tables a backend creates all follow it."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path

from journal_harness import Harness, Publisher

from hbroker.storage import schema
from hbroker.storage.base import Batch
from hbroker.storage.schema import BY_NAME, PLAN, SCHEMA, SQLITE
from hbroker.storage.sqlite import MIGRATIONS

UPSERTED = {part: BY_NAME[table] for part, kind, table in PLAN if kind == "upsert"}


def test_the_plan_applies_every_part_of_a_batch() -> None:
    assert {part for part, _, _ in PLAN} == {f.name for f in dataclasses.fields(Batch)}
    assert set(UPSERTED) == set(schema.TABLES)


def test_the_journal_writes_rows_in_the_declared_column_order(tmp_path: Path) -> None:
    async def main() -> None:
        h = await Harness(tmp_path / "db").start()
        online = h.session("on", "t/#")
        h.online(online)
        h.session("off", "t/#", qos=2)
        pub = Publisher(h.session("p"))
        h.publish(pub, "t/r", b"retained", retain=True, packet_id=1)
        h.publish(pub, "t/x", b"qos2", qos=2, packet_id=2)
        await h.committed()
        rows: dict[str, list[tuple]] = {part: [] for part in UPSERTED}
        for batch in h.backend.batches:
            for part in UPSERTED:
                rows[part].extend(getattr(batch, part))
        assert all(rows.values()), {part: len(r) for part, r in rows.items()}
        named = {part: [dict(zip(UPSERTED[part].names, row, strict=True)) for row in r]
                 for part, r in rows.items()}
        assert {(r["client_id"], r["expiry_interval"]) for r in named["sessions"]} == {
            ("on", 3600), ("off", 3600), ("p", 3600)}
        assert {(r["client_id"], r["topic_filter"], r["qos"])
                for r in named["subscriptions"]} == {("on", "t/#", 1), ("off", "t/#", 2)}
        assert [(r["topic"], r["payload"], r["qos"]) for r in named["retained"]] == [
            ("t/r", b"retained", 1)]
        assert named["incoming_qos2"] == [{"client_id": "p", "packet_id": 2}]
        assert {(r["topic"], r["payload"]) for r in named["messages"]} == {
            ("t/r", b"retained"), ("t/x", b"qos2")}
        sent = [r for r in named["deliveries"] if r["client_id"] == "on" and r["packet_id"]]
        assert sent and all(r["state"] == 1 for r in sent)
        assert {r["message_id"] for r in named["deliveries"]} == {
            r["id"] for r in named["messages"]}
        await h.stop()

    asyncio.run(main())


def test_an_sqlite_database_has_the_declared_tables_and_columns(tmp_path: Path) -> None:
    """Created new, or as version 1 created it and then migrated: the same columns, in row
    order, with the declared types, NULLs and keys."""
    async def open_it(path: Path) -> None:
        h = await Harness(path).start()
        await h.stop()

    old = tmp_path / "v1"
    with sqlite3.connect(old) as db:
        db.executescript(MIGRATIONS[0])
        db.execute("PRAGMA user_version=1")
    for path in (tmp_path / "new", old):
        asyncio.run(open_it(path))
        with sqlite3.connect(path) as db:
            for table in SCHEMA:
                info = db.execute(f"PRAGMA table_info({table.name})").fetchall()
                assert [(name, sql_type, pk) for _, name, sql_type, _, _, pk in info] == [
                    (c.name, SQLITE[c.type], table.key.index(c.name) + 1
                     if c.name in table.key else 0) for c in table.columns], table.name
                assert [name for _, name, _, notnull, _, pk in info
                        if not notnull and not pk] == [
                    c.name for c in table.columns if c.null], table.name
            assert db.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
