"""Fixtures shared by all tests: a throwaway PostgreSQL server for the storage tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pg_server import INSTALL_HINT, PostgresServer, find_bindir  # noqa: E402


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test session (of this worker, under xdist). `make test`
    installs PostgreSQL (tools/install-test-deps.sh); without it the test fails, saying how to
    install it: a backend that is never tested is not a backend."""
    bindir = find_bindir()
    if bindir is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    with PostgresServer(bindir) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_dsn(postgres_server: PostgresServer) -> str:
    """The DSN (with password) of an empty database of this session's server."""
    return postgres_server.create_database("hbroker_test")
