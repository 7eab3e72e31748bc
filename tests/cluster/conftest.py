"""Cluster fixtures: a real 3-node NATS cluster with JetStream (tests/cluster/nats_cluster.py).

Every test of this directory runs on one pytest-xdist worker (the `nats_cluster` group of
`--dist loadgroup`, tools/run-tests.sh), so one NATS cluster serves them all, beside the other
worker's tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from nats_cluster import INSTALL_HINT, NatsCluster, find_nats_server

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.xdist_group("nats_cluster"))


@pytest.fixture(scope="session")
def _nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    if find_nats_server() is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    with NatsCluster(tmp_path_factory.mktemp("nats")) as cluster:
        yield cluster


@pytest.fixture
def nats_cluster(_nats_cluster: NatsCluster) -> Iterator[NatsCluster]:
    """Three nats-servers n1..n3 with JetStream, routed, with a meta leader: shared by the
    tests, each of which gets it whole (a node a test killed or stopped is started again,
    and its rejoining waited for, after the test)."""
    yield _nats_cluster
    _nats_cluster.heal()


@pytest.fixture
def nats_server_with(tmp_path: Path) -> Iterator[Callable[..., NatsCluster]]:
    """nats_server_with(**configuration) -> a one-node NatsCluster whose server has that
    top-level configuration too (`authorization={...}`, `tls={...}`); stopped after the
    test."""
    started: list[NatsCluster] = []

    def start(**extra: object) -> NatsCluster:
        if find_nats_server() is None:
            pytest.fail(INSTALL_HINT, pytrace=False)
        cluster = NatsCluster(tmp_path / f"nats{len(started)}", size=1, extra=extra)
        started.append(cluster)
        return cluster

    yield start
    for cluster in started:
        cluster.close()
