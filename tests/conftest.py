"""Fixtures shared by all tests: a throwaway PostgreSQL server for the storage tests."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pg_server import INSTALL_HINT, PostgresServer, find_bindir  # noqa: E402


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test session (of this worker, under xdist). Skips the test
    if PostgreSQL is not installed, but fails it when `CI` is set: CI must run these tests."""
    bindir = find_bindir()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {INSTALL_HINT}", pytrace=False)
        pytest.skip(INSTALL_HINT)
    with PostgresServer(bindir) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_dsn(postgres_server: PostgresServer) -> str:
    """The DSN (with password) of an empty database of this session's server."""
    return postgres_server.create_database("hbroker_test")
