"""Integration fixtures: the real broker as a process, talked to by real clients."""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from broker_process import ROOT, BrokerProcess
from certs import PKI, make_pki

__all__ = ["ROOT", "BrokerProcess"]


# The behavioural suite runs against every storage backend.
BACKENDS = ("memory", "sqlite", "postgres")
DURABLE_BACKENDS = ("sqlite", "postgres")
_databases = itertools.count(1)


def storage_section(request: pytest.FixtureRequest, backend: str) -> dict[str, Any]:
    """The [storage] section for a new broker: its own SQLite file (in the broker's working
    directory) or its own database on this worker's PostgreSQL server."""
    if backend == "postgres":
        server = request.getfixturevalue("postgres_server")
        return {"backend": "postgres", "dsn": server.create_database(f"b{next(_databases)}")}
    if backend == "sqlite":
        return {"backend": "sqlite", "path": "data/hbroker.db"}
    return {"backend": "memory"}


@pytest.fixture(scope="session", params=BACKENDS)
def broker(request: pytest.FixtureRequest) -> Iterator[BrokerProcess]:
    """A broker with the default configuration, shared by the tests of one worker: tests use
    client ids and topics named after themselves."""
    with tempfile.TemporaryDirectory(prefix="hbroker-") as tmp:
        b = BrokerProcess(Path(tmp), {"sys": {"interval": 1},
                                      "storage": storage_section(request, request.param)})
        yield b
        assert b.stop() == 0, b.log()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=DURABLE_BACKENDS)
def durable_backend(request: pytest.FixtureRequest) -> str:
    return request.param


def _broker_factory(request: pytest.FixtureRequest, tmp_path: Path, backend: str,
                    started: list[BrokerProcess]) -> Any:
    def start(**sections: dict[str, Any]) -> BrokerProcess:
        workdir = tmp_path / f"broker{len(started)}"
        while workdir.exists():
            workdir = tmp_path / f"{workdir.name}x"
        workdir.mkdir()
        storage = {**storage_section(request, backend), **sections.pop("storage", {})}
        b = BrokerProcess(workdir, {**sections, "storage": storage})
        started.append(b)
        return b

    return start


@pytest.fixture
def make_broker(request: pytest.FixtureRequest, tmp_path: Path, backend: str
                ) -> Iterator[Any]:
    """Start a broker with configuration sections, e.g. make_broker(limits={"max_qos": 1}),
    on each storage backend in turn."""
    started: list[BrokerProcess] = []
    yield _broker_factory(request, tmp_path, backend, started)
    for b in started:
        code = b.stop()
        assert code == 0, f"broker exit code {code}:\n{b.log()}"


@pytest.fixture
def start_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Start a broker on a named backend: start_broker("sqlite", limits={...})."""
    started: list[BrokerProcess] = []

    def start(backend: str, **sections: dict[str, Any]) -> BrokerProcess:
        return _broker_factory(request, tmp_path, backend, started)(**sections)

    yield start
    for b in started:
        if b.proc.poll() is None:
            code = b.stop()
            assert code == 0, f"broker exit code {code}:\n{b.log()}"


@pytest.fixture
def make_durable_broker(request: pytest.FixtureRequest, tmp_path: Path,
                        durable_backend: str) -> Iterator[Any]:
    """Like make_broker, on the backends that survive a restart (sqlite, postgres)."""
    started: list[BrokerProcess] = []
    yield _broker_factory(request, tmp_path, durable_backend, started)
    for b in started:
        if b.proc.poll() is None:
            code = b.stop()
            assert code == 0, f"broker exit code {code}:\n{b.log()}"


@pytest.fixture
def uid(request: pytest.FixtureRequest) -> str:
    """A name unique to this test, for client ids and topics on the shared broker."""
    return request.node.name.replace("[", "-").replace("]", "").replace("/", "-")[:60]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    """A CA with server and client certificates (tests/integration/certs.py)."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    """start(listener tables..., **sections) -> a broker (memory storage) with these
    listeners and configuration sections; stopped cleanly at the end of the test."""
    started: list[BrokerProcess] = []

    def run(*listeners: dict[str, Any], **sections: dict[str, Any]) -> BrokerProcess:
        workdir = tmp_path / f"broker{len(started)}"
        workdir.mkdir()
        b = BrokerProcess(workdir, {"storage": {"backend": "memory"}, **sections},
                          listeners=list(listeners))
        started.append(b)
        return b

    yield run
    for b in started:
        if b.proc.poll() is None:
            assert b.stop() == 0, b.log()
