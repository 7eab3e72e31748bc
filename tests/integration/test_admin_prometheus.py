"""A real Prometheus server (Debian's `prometheus`, installed by tools/install-test-deps.sh)
scrapes a real broker's admin listener every second, with a bearer token; the series are
checked through Prometheus's HTTP query API while paho clients publish."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from broker_process import ROOT, BrokerProcess, free_port
from clients import PahoClient

from hbroker.admin.tokens import hash_token

TOKEN = "prometheus-scrape-token"
WAIT = 30.0  # seconds for a series to reach its value: a few scrapes and evaluations


class PrometheusServer:
    """`prometheus` on a free loopback port, scraping `target` every second."""

    def __init__(self, workdir: Path, target: str, token: str) -> None:
        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        assert Path(binary).exists(), "prometheus is not installed: run `make test-deps`"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        config.write_text(json.dumps({  # JSON is YAML
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{
                "job_name": "hbroker", "scrape_interval": "1s", "scrape_timeout": "1s",
                "authorization": {"credentials": token},
                "static_configs": [{"targets": [target]}],
            }],
        }))
        self.log_path = workdir / "prometheus.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=workdir)
        self.wait_until(self._ready, "Prometheus is not ready")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def wait_until(self, condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{self.log()}")
            result = condition()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} within {timeout} s:\n{self.log()}")
            time.sleep(0.2)  # between two polls of the HTTP API

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of `expr` (GET /api/v1/query)."""
        url = f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5) as response:
            answer = json.load(response)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def value(self, expr: str) -> float | None:
        """The single value of `expr`, or None while it has no series."""
        result = self.query(expr)
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    def wait_for_value(self, expr: str, expected: Callable[[float], bool]) -> float:
        def check() -> tuple[float] | None:  # a tuple: a value of 0 is an answer too
            got = self.value(expr)
            return (got,) if got is not None and expected(got) else None

        return self.wait_until(check, f"{expr} not as expected")[0]

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def scraped_broker() -> Iterator[tuple[BrokerProcess, PrometheusServer]]:
    with tempfile.TemporaryDirectory(prefix="hbroker-prometheus-") as tmp:
        workdir = Path(tmp)
        (workdir / "broker").mkdir()
        admin_port = free_port()
        broker = BrokerProcess(workdir / "broker", {
            "storage": {"backend": "sqlite", "path": "data/hbroker.db"},
            "admin": {"enabled": True, "port": admin_port, "metrics_auth": True,
                      "tokens": [{"name": "prometheus", "hash": hash_token(TOKEN)}]},
        }, listeners=[{"type": "tcp", "name": "main"}])
        prometheus = None
        try:
            prometheus = PrometheusServer(workdir, f"127.0.0.1:{admin_port}", TOKEN)
            yield broker, prometheus
        finally:
            if prometheus is not None:
                prometheus.stop()
            assert broker.stop() == 0, broker.log()


def test_prometheus_scrapes_the_broker_and_sees_its_traffic(
        scraped_broker: tuple[BrokerProcess, PrometheusServer]) -> None:
    broker, prometheus = scraped_broker
    prometheus.wait_for_value('up{job="hbroker"}', lambda v: v == 1)
    subscriber = PahoClient(broker.host, broker.port, "prometheus-sub", version=5)
    publisher = PahoClient(broker.host, broker.port, "prometheus-pub", version=4)
    try:
        subscriber.subscribe("prom/#", qos=1)
        for i in range(25):
            publisher.publish(f"prom/{i}", b"payload", qos=1)
        for _ in range(25):
            subscriber.expect()
        prometheus.wait_for_value('hbroker_messages_received_total{job="hbroker",qos="1"}',
                                  lambda v: v == 25)
        assert prometheus.value('sum(hbroker_messages_received_total{job="hbroker"})') == 25
        prometheus.wait_for_value('hbroker_clients_connected{job="hbroker"}',
                                  lambda v: v == 2)
        prometheus.wait_for_value(
            'hbroker_connections{job="hbroker",listener="main",protocol="3.1.1"}',
            lambda v: v == 1)
        assert prometheus.value('sum(hbroker_messages_sent_total{job="hbroker"})') >= 25
        assert prometheus.value('hbroker_subscriptions{job="hbroker"}') == 1
        assert prometheus.value('hbroker_storage_commits_total{job="hbroker"}') > 0
        # The expressions of the Grafana dashboard evaluate on these series.
        prometheus.wait_for_value('sum(rate(hbroker_messages_received_total[5s]))',
                                  lambda v: v > 0)
        p99 = prometheus.value('histogram_quantile(0.99, sum by (le) '
                               '(hbroker_storage_commit_duration_seconds_bucket))')
        assert p99 is not None and 0 < p99 <= 10
        assert prometheus.value('process_resident_memory_bytes{job="hbroker"}') > 1e6
    finally:
        publisher.client.disconnect()
        subscriber.client.disconnect()
    prometheus.wait_for_value('hbroker_clients_connected{job="hbroker"}', lambda v: v == 0)
    # Every expression of the Grafana dashboard, with its variables filled in as Grafana
    # does, is valid PromQL and finds series on this broker.
    board = json.loads((ROOT / "packaging" / "grafana" / "hbroker-dashboard.json").read_text())
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "5s").replace(
                "$job", "hbroker").replace("$instance", ".*")
            assert prometheus.query(expr), f"panel {panel['title']!r}: no series for {expr}"
