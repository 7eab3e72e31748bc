"""hbroker_ext.sqlite_writer: transactions applied on the writer's own thread, read back with
Python's sqlite3 module."""

from __future__ import annotations

import select
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hbroker_ext.sqlite_writer import SQLITE_FULL_CODE, Writer, WriterError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

INSERT = "INSERT INTO t VALUES (?, ?, ?)"
DELETE = "DELETE FROM t WHERE k = ?"


class Running:
    """A Writer with its thread; `apply` submits one transaction and waits for it."""

    def __init__(self, path: Path, pragmas: list[str] | None = None) -> None:
        with sqlite3.connect(path) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, a, b)")
        self.writer = Writer(str(path), pragmas or [], [INSERT, DELETE])
        self.thread = threading.Thread(target=self.writer.run, daemon=True)
        self.thread.start()
        self.next_job = 1

    def apply(self, steps: list) -> WriterError | None:
        job = self.next_job
        self.next_job += 1
        self.writer.submit(job, steps)
        done: list = []
        while not done:
            ready, _, _ = select.select([self.writer.fileno()], [], [], 10)
            assert ready, "the writer did not finish the transaction"
            done = self.writer.collect()
        assert [j for j, _ in done] == [job]
        return done[0][1]

    def close(self) -> None:
        self.writer.stop()
        self.thread.join(10)
        assert not self.thread.is_alive()
        self.writer.close()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    r = Running(tmp_path / "w.db")
    yield r
    r.close()


def rows_of(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT k, a, b FROM t ORDER BY k").fetchall()


values = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(),
    st.binary(),
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.integers(min_value=-(2**63), max_value=2**63 - 1),
                       st.tuples(values, values), max_size=40))
def test_values_of_every_type_are_stored_exactly(running: Running, tmp_path: Path,
                                                 data: dict[int, tuple]) -> None:
    before = {k: (a, b) for k, a, b in rows_of(tmp_path / "w.db")}
    assert running.apply([(1, [(k,) for k in before]),
                          (0, [(k, a, b) for k, (a, b) in data.items()])]) is None
    assert rows_of(tmp_path / "w.db") == sorted((k, a, b) for k, (a, b) in data.items())


def test_transactions_apply_in_order_and_steps_in_order(running: Running,
                                                        tmp_path: Path) -> None:
    jobs = [[(0, [(1, "a", None)])], [(1, [(1,)]), (0, [(1, "b", b"x")])],
            [(0, [(2, 2.5, 3)])]]
    keep = []
    for job_id, steps in enumerate(jobs, 1):
        keep.append(steps)
        running.writer.submit(job_id, steps)
    done: list = []
    while len(done) < 3:
        select.select([running.writer.fileno()], [], [], 10)
        done += running.writer.collect()
    assert done == [(1, None), (2, None), (3, None)]
    assert rows_of(tmp_path / "w.db") == [(1, "b", b"x"), (2, 2.5, 3)]


def test_a_failing_step_rolls_the_whole_transaction_back(running: Running,
                                                         tmp_path: Path) -> None:
    assert running.apply([(0, [(1, "kept", None)])]) is None
    error = running.apply([(0, [(2, "new", None)]), (0, [(1, "duplicate key", None)])])
    assert isinstance(error, WriterError)
    assert "UNIQUE constraint failed" in str(error)
    assert not error.full
    assert rows_of(tmp_path / "w.db") == [(1, "kept", None)]
    # The writer goes on after a failure.
    assert running.apply([(0, [(3, "after", None)])]) is None
    assert rows_of(tmp_path / "w.db") == [(1, "kept", None), (3, "after", None)]


def test_a_full_database_is_reported_as_full(tmp_path: Path) -> None:
    running = Running(tmp_path / "w.db", ["PRAGMA max_page_count=8"])
    try:
        error = running.apply([(0, [(k, b"x" * 4000, None) for k in range(50)])])
        assert isinstance(error, WriterError)
        assert error.code == SQLITE_FULL_CODE and error.full
        assert str(error) == "database or disk is full"
        assert rows_of(tmp_path / "w.db") == []
    finally:
        running.close()


def test_rows_that_do_not_fit_the_statement_are_refused_before_anything_runs(
        running: Running, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="takes 3 values, got 2"):
        running.writer.submit(1, [(0, [(1, "a")])])
    with pytest.raises(TypeError, match="cannot store a bytearray"):
        running.writer.submit(1, [(0, [(1, bytearray(b"a"), None)])])
    with pytest.raises(OverflowError):
        running.writer.submit(1, [(0, [(2**63, None, None)])])
    with pytest.raises(IndexError):
        running.writer.submit(1, [(7, [(1,)])])
    assert running.apply([(0, [(1, "fine", None)])]) is None
    assert rows_of(tmp_path / "w.db") == [(1, "fine", None)]


def test_queued_transactions_finish_before_stop_and_nothing_is_taken_after(
        tmp_path: Path) -> None:
    running = Running(tmp_path / "w.db")
    steps = [(0, [(k, "v", None)]) for k in range(100)]
    running.writer.submit(1, steps)
    running.writer.stop()
    running.thread.join(10)
    assert running.writer.collect() == [(1, None)]
    with pytest.raises(WriterError, match="closed"):
        running.writer.submit(2, [(0, [(1000, None, None)])])
    running.writer.close()
    assert len(rows_of(tmp_path / "w.db")) == 100


def test_an_unopenable_path_names_the_cause(tmp_path: Path) -> None:
    with pytest.raises(WriterError) as info:
        Writer(str(tmp_path / "missing" / "dir" / "w.db"), [], [])
    assert "unable to open" in str(info.value)
