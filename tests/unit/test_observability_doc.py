"""docs/observability.md lists every metric the admin listener exports, and only those: a
clustered instance's (the broker's, the process's and the cluster's, from a ClusterRouting
that has not joined)."""

from __future__ import annotations

import re
from pathlib import Path

from hbroker.admin.metrics import registry_for
from hbroker.broker import Broker
from hbroker.cluster.routing import ClusterRouting
from hbroker.config import ClusterConfig, Config

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "observability.md"


def exported() -> set[str]:
    """Metric names as a user queries them: counters with `_total`, histograms by their base
    name (`_bucket`, `_count` and `_sum` follow from it)."""
    names = set()
    cluster = ClusterRouting(ClusterConfig(backend="nats", servers=("nats://127.0.0.1:4222",),
                                           name="hb1"))
    for family in registry_for(Broker(Config()), lambda: ["main"], cluster).collect():
        if family.type == "histogram":
            names.add(family.name)
        else:
            names.update(s.name for s in family.samples)
    return names


def documented() -> set[str]:
    table = DOC.read_text().split("## Metrics", 1)[1]
    return {name for row in table.splitlines() if row.startswith("| `")
            for name in re.findall(r"`((?:hbroker|process)_[a-z0-9_]+)`", row.split("|")[1])}


def test_every_exported_metric_is_in_the_table_of_the_observability_doc() -> None:
    assert exported() - documented() == set()


def test_the_table_names_no_metric_that_is_not_exported() -> None:
    assert documented() - exported() == set()
