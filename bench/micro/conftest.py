"""Shared pieces of the micro-benchmarks (bench/micro/README.md): machine facts and a compact
JSON, the `describe` fixture (row label, items per call) and the rounds of `pedantic` ones."""

from __future__ import annotations

import math
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from benchlib import provenance  # noqa: E402

# Time of one round of a `pedantic` benchmark (a batch of 1,000 operations plus its untimed
# setup), used to spread those rounds over --benchmark-max-time like the calibrated ones.
PEDANTIC_ROUND_S = 0.002


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def pytest_benchmark_update_machine_info(config: pytest.Config,
                                         machine_info: dict[str, Any]) -> None:
    import Cython

    prov = provenance(ROOT)
    machine_info.update(
        cpu_count=os.cpu_count(),
        cpu_model=cpu_model(),
        platform=platform.platform(),
        cython_version=Cython.__version__,
        # the commit measured (`git rev-parse HEAD`) and what differed from it; report.py
        # records the same in "provenance", checked once more after the run
        hbroker_commit=prov.commit,
        hbroker_changes=[*prov.changes, *(f"stale extension {n}" for n in prov.stale)],
    )


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list[Any],
                                 output_json: dict[str, Any]) -> None:
    """Keep the JSON small enough for git (bench/results/): statistics, not every round."""
    for bench in output_json["benchmarks"]:
        bench["stats"].pop("data", None)
    output_json["machine_info"].get("cpu", {}).pop("flags", None)


@pytest.fixture(scope="session")
def pedantic_rounds(request: pytest.FixtureRequest) -> int:
    """Rounds of a `benchmark.pedantic` batch: as many as fit in --benchmark-max-time, at least
    --benchmark-min-rounds (so that the quick mode stays quick)."""
    max_time = float(request.config.getoption("benchmark_max_time"))
    min_rounds = int(request.config.getoption("benchmark_min_rounds"))
    return max(min_rounds, math.ceil(max_time / PEDANTIC_ROUND_S))


Describe = Callable[..., None]


@pytest.fixture
def describe(benchmark: BenchmarkFixture) -> Describe:
    """`describe(label, items=None, item=None)`: the row label of this benchmark in the report
    and, when one call handles many items (packets, topics, messages), how many and what."""

    def set_info(label: str, items: float | None = None, item: str | None = None) -> None:
        benchmark.extra_info["label"] = label
        if items is not None:
            benchmark.extra_info["items"] = items
            benchmark.extra_info["item"] = item

    return set_info
