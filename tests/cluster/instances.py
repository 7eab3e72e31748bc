"""hbroker instances clustered over the test NATS cluster: instance i (hb1, hb2, ...) connects
to NATS node i only, so that a message between two instances crosses two NATS servers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from broker_process import BrokerProcess  # tests/integration, put on the path by conftest.py


def start_instances(directory: Path, nats_urls: list[str], count: int = 3,
                    sections: dict[str, dict[str, Any]] | None = None,
                    **cluster: Any) -> list[BrokerProcess]:
    """`count` instances with memory storage; `sections`: more tables of each instance's
    configuration; `cluster`: more [cluster] options."""
    started: list[BrokerProcess] = []
    try:
        for i, url in enumerate(nats_urls[:count]):
            workdir = directory / f"hb{i + 1}"
            workdir.mkdir(parents=True)
            started.append(BrokerProcess(workdir, {
                "storage": {"backend": "memory"},
                "cluster": {"backend": "nats", "servers": [url], "name": f"hb{i + 1}",
                            "stream_replicas": 3, "publish_timeout": 2.0, **cluster},
                **(sections or {})}))
    except BaseException:
        stop_instances(started)
        raise
    return started


def stop_instances(instances: list[BrokerProcess]) -> None:
    for b in instances:
        assert b.stop() == 0, b.log()
