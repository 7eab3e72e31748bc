"""The benchmark reports of bench/: figures only from a clean run at an existing commit, rows
where the load generator was the bound marked as such, and the README's Performance block
written from the results files (no benchmark is run here)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))

import benchlib  # noqa: E402
import compare  # noqa: E402
import readme  # noqa: E402
import storage_qos1  # noqa: E402

GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
README = """# hbroker

## Performance

<!-- bench:begin -->
Hand-written: 9.99× Mosquitto.
<!-- bench:end -->

## Signals

Unchanged text.
"""


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, env=GIT_ENV, text=True,
                          capture_output=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository laid out like this one: the report scripts in bench/, a package file
    the results depend on, a README with the Performance block, one commit."""
    root = tmp_path / "repo"
    (root / "bench" / "results").mkdir(parents=True)
    for name in ("benchlib.py", "compare.py", "readme.py"):
        shutil.copy(BENCH / name, root / "bench" / name)
    (root / "hbroker").mkdir()
    (root / "hbroker" / "__init__.py").write_text("")
    (root / "README.md").write_text(README)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "fixture")
    return root


def load_run(scenario: str, broker: str, rate: float, loadgen: float,
             **metrics: float) -> dict[str, Any]:
    return {"repeat": 0, "scenario": scenario, "broker": broker, "ok": True,
            "metrics": {"rate": rate, "client_cpu": loadgen, "broker_cpu": 0.9,
                        "broker_cpu_us": 0.9 / rate * 1e6, "other_cpu": 0.02, **metrics}}


def compare_report(commit: str, **extra: Any) -> dict[str, Any]:
    """compare.py's results: QoS 0 where loadgen used 87 % of a core with Mosquitto, QoS 1
    where it used 99 % with hbroker (84 % with Mosquitto, under the threshold), fan-out where
    it was never the bound, and latency."""
    runs = [
        load_run("qos0", "hbroker", 400_000, 0.30),
        load_run("qos0", "mosquitto", 80_000, 0.87),
        load_run("qos1", "hbroker", 200_000, 0.99),
        load_run("qos1", "mosquitto", 50_000, 0.84),
        load_run("fanout8", "hbroker", 1_000_000, 0.30),
        load_run("fanout8", "mosquitto", 100_000, 0.20),
        load_run("latency", "hbroker", 10_000, 0.30, p50=150.0, p99=1500.0, held=1.0),
        load_run("latency", "mosquitto", 10_000, 0.30, p50=150.0, p99=3000.0, held=1.0),
    ]
    plan = {"scenarios": ["qos0", "qos1", "fanout8", "latency"],
            "brokers": ["hbroker", "mosquitto"], "repeats": 1, "duration": 2.0,
            "warmup": 0.5, "amqtt_repeats": 1, "amqtt_limit": 20.0, "idle_settle": 1.0,
            "retained": 100_000, "quick": False, "skipped": {}, "rate": 10_000,
            "client_bound": benchlib.CLIENT_BOUND, "loadgen_args": {}}
    report = {
        "benchmark": "compare", "output": "bench/results/latest.json",
        "date": "2026-01-02 03:04 UTC", "command": "`bench/compare.py`", "wall_s": 60.0,
        "machine": {"cpu_count": 2, "cpu_model": "Test CPU", "memory_gb": 4.0,
                    "platform": "Linux-test", "hbroker": "hbroker 0.1.0",
                    "mosquitto": "mosquitto version 2.0.11", "amqtt": None, "commit": commit},
        "provenance": {"commit": commit, "clean": True, "changes": [],
                       "stale_extensions": []},
        "plan": plan, "summary": compare.summarize(plan, runs), "runs": runs,
    }
    report.update(extra)
    return report


def table_row(markdown: str, first_cell: str) -> str:
    rows = [line for line in markdown.splitlines() if line.startswith(f"| {first_cell} |")]
    assert len(rows) == 1, (first_cell, rows)
    return rows[0]


def block_of(text: str) -> str:
    return text[text.index(readme.BEGIN):text.index(readme.END)]


def test_a_work_tree_with_uncommitted_changes_is_refused(repo: Path) -> None:
    prov = benchlib.provenance(repo)
    assert prov.clean
    assert prov.commit == git(repo, "rev-parse", "HEAD")
    assert re.fullmatch(r"[0-9a-f]{40}", prov.commit)
    results_md = repo / "bench" / "RESULTS.md"
    benchlib.check_outputs([results_md], prov, root=repo)

    # the outputs themselves are not sources: writing them keeps the tree clean
    results_md.write_text("# Benchmark results\n")
    (repo / "bench" / "results" / "latest.json").write_text("{}")
    (repo / "README.md").write_text(README + "\n")
    assert benchlib.provenance(repo).clean

    (repo / "hbroker" / "__init__.py").write_text("FAST = True\n")
    (repo / "hbroker" / "new_module.py").write_text("")
    dirty = benchlib.provenance(repo)
    assert not dirty.clean
    assert dirty.commit == prov.commit
    assert any("hbroker/__init__.py" in c for c in dirty.changes)
    assert any("hbroker/new_module.py" in c for c in dirty.changes)
    for target in (results_md, repo / "bench" / "results" / "latest.json", repo / "README.md"):
        with pytest.raises(benchlib.BenchError, match="uncommitted changes"):
            benchlib.check_outputs([target], dirty, root=repo)
    benchlib.check_outputs([repo.parent / "experiment.json", None], dirty, root=repo)
    with pytest.raises(benchlib.BenchError, match="--quick"):
        benchlib.check_outputs([results_md], prov, quick=True, root=repo)
    with pytest.raises(benchlib.BenchError, match="uncommitted changes"):
        readme.update(repo)

    # the script itself: a render into RESULTS.md from a dirty tree writes nothing
    results_md.unlink()
    latest = repo / "bench" / "results" / "latest.json"
    latest.write_text(json.dumps(compare_report(prov.commit)))
    render = [sys.executable, str(repo / "bench" / "compare.py"), "--render", str(latest),
              "--chart", str(repo.parent / "chart.png")]
    refused = subprocess.run(render, cwd=repo, capture_output=True, text=True)
    assert refused.returncode == 2, refused.stderr
    assert "uncommitted changes" in refused.stderr and "hbroker/__init__.py" in refused.stderr
    assert not results_md.exists()

    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "change")
    done = subprocess.run(render, cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"measuring commit `{prov.commit[:12]}`" in results_md.read_text()


def test_a_state_recorded_with_changes_is_marked_and_kept_out_of_the_readme(
        repo: Path) -> None:
    commit = git(repo, "rev-parse", "HEAD")
    old = compare_report(commit)
    del old["provenance"]
    old["machine"]["commit"] = commit[:7] + "+changes"  # results files from before the check
    assert benchlib.unfit(old, repo) == [f"recorded as '{commit[:7]}+changes'"]
    assert compare.markdown(old, None).count("**Not from a clean run**") == 1
    block = readme.block({"compare": old}, repo)
    assert "not from a clean run" in block
    assert "×" not in block

    quick = compare_report(commit)
    quick["plan"]["quick"] = True
    assert "a --quick run" in benchlib.unfit(quick, repo)
    missing = compare_report("0" * 40)
    assert benchlib.unfit(missing, repo) == ["commit 000000000000 is not in this repository"]


def test_rows_where_loadgen_used_most_of_a_core_are_marked_client_bound(repo: Path) -> None:
    report = compare_report(git(repo, "rev-parse", "HEAD"))
    md = compare.markdown(report, None)
    qos0 = table_row(md, "QoS 0, 1 → 1, batch")
    assert "87 %" in qos0 and "**yes** (Mosquitto 87 %): ratio an upper bound" in qos0
    qos1 = table_row(md, "QoS 1, 1 → 1, batch")
    assert "**yes** (hbroker 99 %): ratio a lower bound" in qos1
    assert "Mosquitto 84" not in qos1  # under the threshold
    assert "**yes**" not in table_row(md, "QoS 0, 1 → 8 (fan-out), batch")
    assert "pass (client-bound: the ratio is an upper bound)" in table_row(
        md, "QoS 0 1:1, batching clients: ≥ 3× Mosquitto")
    assert report["summary"]["client_bound"]["runs"] == {"qos0": {"mosquitto": 0.87},
                                                         "qos1": {"hbroker": 0.99}}

    block = readme.block({"compare": report}, repo)
    headline = table_row(block, "QoS 0, 1 → 1, batching clients")
    assert "5.00×" in headline
    assert ("client-bound: loadgen used 87 % of a core in Mosquitto's run; the ratio is an "
            "upper bound") in headline
    assert ("client-bound: loadgen used 99 % of a core in hbroker's run; the ratio is a lower "
            "bound") in table_row(block, "QoS 1, 1 → 1, batching clients")
    assert "client-bound" not in table_row(block, "QoS 0, fan-out 1 → 8, batching clients")
    assert "**The load generator was the bound**" in block


def test_storage_ratios_to_a_client_bound_memory_run_are_marked(repo: Path) -> None:
    def run(config: str, rate: float, client: float) -> dict[str, Any]:
        return {"repeat": 0, "scenario": "durable", "config": config, "msgs_per_s": rate,
                "broker_cpu": 0.9, "broker_cpu_us_per_msg": 0.9 / rate * 1e6,
                "client_cpu": client, "other_cpu": 0.01, "machine_cpu": 1.9}

    plan = storage_qos1.Plan(configs=["memory", "sqlite-sync"], scenarios=["durable"],
                             repeats=1, warmup=0.5, duration=1.0, window=100)
    runs = [run("memory", 200_000, 0.90), run("sqlite-sync", 50_000, 0.20)]
    commit = git(repo, "rev-parse", "HEAD")
    report = {"benchmark": "storage_qos1", "output": "bench/results/storage.json",
              "date": "2026-01-02 03:10 UTC", "command": "`bench/storage_qos1.py`",
              "wall_s": 30.0, "machine": {"cpu_count": 2, "cpu_model": "Test CPU",
                                          "platform": "Linux-test", "python": "3.11",
                                          "sqlite": "3.40", "postgres": None,
                                          "commit": commit},
              "provenance": {"commit": commit, "clean": True, "changes": [],
                             "stale_extensions": []},
              "plan": {**plan.__dict__, "quick": False}, "summary":
                  storage_qos1.summarize(plan, runs), "runs": runs}
    md = storage_qos1.markdown(report)
    assert "| 0.25 ‡ |" in table_row(md, "sqlite-sync")
    assert "durable: memory 90 %" in md and "an upper bound when `memory`'s were" in md

    results = {"compare": compare_report(commit), "storage": report}
    assert "0.25× with `fsync = true`, one publisher (client-bound: memory" in readme.block(
        results, repo)


def test_results_md_holds_only_the_sections_the_scripts_write(tmp_path: Path) -> None:
    md = tmp_path / "RESULTS.md"
    md.write_text("# Benchmark results\n\nHand-written header.\n\n"
                  "## Durable storage: QoS 1 throughput\n\nold table\n\n"
                  "## Durable storage: where the time goes (profile)\n\n0.53× by hand\n")
    benchlib.write_section(md, "## hbroker vs Mosquitto", "## hbroker vs Mosquitto\n\nnew\n")
    text = md.read_text()
    assert "0.53×" not in text and "where the time goes" not in text
    assert "Hand-written header" not in text
    assert text.index("## hbroker vs Mosquitto") < text.index("## Durable storage: QoS 1")
    assert "old table" in text


def test_readme_block_is_rewritten_from_the_results(repo: Path) -> None:
    commit = git(repo, "rev-parse", "HEAD")
    (repo / "bench" / "results" / "latest.json").write_text(json.dumps(compare_report(commit)))
    assert readme.update(repo, check=True)  # differs, nothing written
    assert "9.99×" in (repo / "README.md").read_text()

    assert readme.update(repo)
    text = (repo / "README.md").read_text()
    block = block_of(text)
    assert "9.99×" not in block
    assert f"commit `{commit[:12]}`" in block
    assert "| QoS 0, 1 → 1, batching clients | 5.00× | ≥ 3× | yes |" in block
    assert "| p99 latency at 10,000 msg/s, broker and client on separate CPUs | 1.50 ms " \
           "(0.50×) | ≤ 2 ms and ≤ 1.5× | yes |" in block
    assert "`storage.json` is missing" in block and "`micro.json` is missing" in block
    assert text.startswith("# hbroker\n\n## Performance\n\n")
    assert text.endswith("<!-- bench:end -->\n\n## Signals\n\nUnchanged text.\n")
    assert not readme.update(repo)  # the same results give the same block

    # results of another commit are left out, not mixed in
    micro = {"benchmarks": [], "datetime": "2026-01-02T03:20:00", "run": {"quick": False},
             "provenance": {"commit": "0" * 40, "clean": True, "changes": [],
                            "stale_extensions": []}}
    (repo / "bench" / "results" / "micro.json").write_text(json.dumps(micro))
    assert readme.update(repo)
    assert "`micro.json`: commit 000000000000 is not in this repository" in block_of(
        (repo / "README.md").read_text())


def test_an_included_pyx_is_checked_against_the_extension_that_includes_it(tmp_path):
    ext = tmp_path / "hbroker_ext"
    ext.mkdir()
    (ext / "session.pyx").write_text("cdef class Session:\n    pass\n")
    (ext / "routing.pyx").write_text('include "session.pyx"\n')
    built = ext / "routing.cpython-311-x86_64-linux-gnu.so"
    built.write_bytes(b"")
    os.utime(ext / "session.pyx", (1000, 1000))
    os.utime(ext / "routing.pyx", (1000, 1000))
    os.utime(built, (2000, 2000))
    assert benchlib.stale_extensions(tmp_path) == []
    os.utime(ext / "session.pyx", (3000, 3000))
    assert benchlib.stale_extensions(tmp_path) == ["session.pyx"]
