"""Integration fixtures: the real broker as a process, talked to by real clients."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from broker_process import ROOT, BrokerProcess

__all__ = ["ROOT", "BrokerProcess"]


@pytest.fixture(scope="session")
def broker() -> Iterator[BrokerProcess]:
    """A broker with the default configuration, shared by the tests of one worker: tests use
    client ids and topics named after themselves."""
    with tempfile.TemporaryDirectory(prefix="hbroker-") as tmp:
        b = BrokerProcess(Path(tmp), {"sys": {"interval": 1}})
        yield b
        assert b.stop() == 0, b.log()


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[Any]:
    """Start a broker with configuration sections, e.g. make_broker(limits={"max_qos": 1})."""
    started: list[BrokerProcess] = []

    def start(**sections: dict[str, Any]) -> BrokerProcess:
        workdir = tmp_path / f"broker{len(started)}"
        workdir.mkdir()
        b = BrokerProcess(workdir, sections)
        started.append(b)
        return b

    yield start
    for b in started:
        code = b.stop()
        assert code == 0, f"broker exit code {code}:\n{b.log()}"


@pytest.fixture
def uid(request: pytest.FixtureRequest) -> str:
    """A name unique to this test, for client ids and topics on the shared broker."""
    return request.node.name.replace("[", "-").replace("]", "").replace("/", "-")[:60]
