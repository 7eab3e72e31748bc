"""packaging/grafana/hbroker-dashboard.json uses only metrics the broker exports: every metric
name of every PromQL expression (panels and template variables) is a sample name that the
admin listener's collectors yield for a clustered broker built in-process (its ClusterRouting
not joined: the cluster's metrics are there, at 0)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from hbroker.admin.metrics import registry_for
from hbroker.broker import Broker
from hbroker.cluster.routing import ClusterRouting
from hbroker.config import ClusterConfig, Config

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "packaging" / "grafana" / "hbroker-dashboard.json"
# Series Prometheus itself makes for every target it scrapes.
PROMETHEUS_SERIES = {"up"}
KEYWORDS = {"bool", "offset", "and", "or", "unless", "by", "without", "on", "ignoring",
            "group_left", "group_right", "inf", "nan"}
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.$:])[A-Za-z_:][A-Za-z0-9_:]*(?![\w:])(?!\s*\()")
_LABEL_VALUES = re.compile(r"^label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (not functions, keywords or label names)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGES.sub("", text)
    text = _GROUPING.sub("", text)
    return {m.group(0) for m in _IDENTIFIER.finditer(text)} - KEYWORDS


def dashboard_expressions() -> Iterator[tuple[str, str]]:
    """(where, PromQL expression) for every query of the dashboard."""
    board = json.loads(DASHBOARD.read_text())

    def panels(items: list[dict]) -> Iterator[dict]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(board["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r}", target["expr"]
    for variable in board["templating"]["list"]:
        query = variable["query"]["query"]
        found = _LABEL_VALUES.match(query)
        assert found, f"variable {variable['name']}: expected label_values(METRIC, LABEL)"
        yield f"variable {variable['name']}", found.group(1)


def exported_names() -> set[str]:
    cluster = ClusterRouting(ClusterConfig(backend="nats", servers=("nats://127.0.0.1:4222",),
                                           name="hb1"))
    registry = registry_for(Broker(Config()), lambda: ["main"], cluster)
    return {sample.name for family in registry.collect() for sample in family.samples}


def test_expression_parser_finds_metric_names_only() -> None:
    expr = ('histogram_quantile(0.99, sum by (le) (rate(hbroker_storage_commit_duration_'
            'seconds_bucket{job=~"$job", instance=~"a{b}"}[$__rate_interval]))) / 1e6 '
            '+ on (job) group_left up offset 5m')
    assert metric_names(expr) == {"hbroker_storage_commit_duration_seconds_bucket", "up"}


def test_every_panel_has_a_query_and_the_dashboard_is_an_importable_one() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["__inputs"][0]["pluginId"] == "prometheus"
    graphs = [p for p in board["panels"] if p["type"] != "row"]
    assert len(graphs) >= 20
    assert all(p.get("targets") for p in graphs)
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    assert any("rate(" in expr for _, expr in dashboard_expressions())


@pytest.mark.parametrize(("where", "expr"), list(dashboard_expressions()))
def test_dashboard_expression_names_only_exported_metrics(where: str, expr: str) -> None:
    names = metric_names(expr)
    assert names, f"{where}: no metric in {expr!r}"
    unknown = names - exported_names() - PROMETHEUS_SERIES
    assert not unknown, f"{where}: {sorted(unknown)} not exported (in {expr!r})"
