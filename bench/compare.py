#!/usr/bin/env python3
"""hbroker side by side with Mosquitto, amqtt and the C relay, driven by bench/loadgen.

    .venv/bin/python bench/compare.py [--quick] [--scenarios a,b] [--brokers a,b]
                                      [--repeats N] [--duration S] [--render JSON]

Every run starts a fresh broker process in a temporary directory on a free port of 127.0.0.1
and points the C load generator (`bench/loadgen/loadgen`, MQTT 5.0; 3.1.1 for amqtt, which
speaks nothing else) at it. hbroker and Mosquitto get the same limits: an outgoing window and
Receive Maximum of 100 (`limits.max_inflight` / `max_inflight_messages`), 1,000 queued
messages per client; otherwise each runs at its defaults (Mosquitto keeps Nagle's algorithm on:
`set_tcp_nodelay true` made it 20-30 % slower here). Publishers keep at most 100 messages
outstanding (the closed loop of loadgen), so no broker wins by buffering.

The scenarios (see SCENARIOS) cover issue 4: 1:1 at QoS 0/1/2, one-packet-per-write clients,
fan-out 1:8, many-to-many with wildcards, latency at 10,000 msg/s, 10,000 idle connections,
100,000 retained messages, and QoS 1 to a persistent session with durable storage. Within a
repetition the brokers of a scenario run one after the other, in an order rotated from one
repetition to the next; the report gives medians over repetitions (3) and the ratios hbroker /
Mosquitto next to the issue's targets, hbroker as a fraction of the relay, the broker's CPU
time per run (from /proc/PID/stat) and what the other processes of the machine used meanwhile.

Output: `bench/results/latest.json` (every run, machine, commit), the section
"## hbroker vs Mosquitto" of `bench/RESULTS.md`, `bench/results/compare.png` and the
Performance block of the top README (`bench/readme.py`). These are written only from a work
tree without uncommitted changes to the code or the benchmarks (see `benchlib.provenance`);
`--quick` and `--allow-dirty` runs write to the temporary directory instead.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import readme  # noqa: E402  (bench/readme.py: the README block)
from benchlib import (
    CLIENT_BOUND,
    BenchError,
    Provenance,
    ServerProcess,
    check_outputs,
    check_render,
    client_bound,
    cpu_seconds,
    free_port,
    hbroker_command,
    hbroker_env,
    median,
    provenance,
    provenance_banner,
    ratio_bound,
    report_provenance,
    scratch_dir,
    settle,
    short,
    unfit,
    write_section,
)

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
LOADGEN = BENCH / "loadgen" / "loadgen"
RELAY = BENCH / "relay" / "relay"
AMQTT_VENV = BENCH / ".venv-amqtt"
RESULTS_JSON = BENCH / "results" / "latest.json"
RESULTS_PNG = BENCH / "results" / "compare.png"
RESULTS_MD = BENCH / "RESULTS.md"
SECTION = "## hbroker vs Mosquitto"

WINDOW = 100  # messages outstanding per publisher (loadgen --window)
MAX_INFLIGHT = 100  # hbroker limits.max_inflight = Mosquitto max_inflight_messages
MAX_QUEUED = 1000  # hbroker limits.max_queued_messages = Mosquitto max_queued_messages
MAX_CONNECTIONS = 20000  # hbroker limits.max_connections (default 10,000); Mosquitto: no limit
IDLE_CONNECTIONS = 10000
AMQTT_IDLE_CONNECTIONS = 1000  # amqtt connects ~500 a second and uses ~50 MB per 1,000
RETAINED = 100000
RATE = 10000  # msg/s of the latency scenario
PAYLOAD = 64
SESSION_EXPIRY = 3600  # s: Session Expiry Interval of the subscriber in `durable`
MB = 1e6  # bytes; RSS is reported in MB of 10^6 bytes

BROKERS = ("hbroker", "mosquitto", "relay", "amqtt")

# == scenarios ===============================================================================

@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    kind: str  # load, latency, idle, retained
    args: tuple[str, ...]  # loadgen options of this scenario
    brokers: tuple[str, ...]
    durable: bool = False  # hbroker: sqlite in sync mode; Mosquitto: persistence true
    # (broker CPU, loadgen CPU) both processes are pinned to with taskset; None: not pinned
    cpus: tuple[int, int] | None = None


ALL = ("hbroker", "mosquitto", "relay", "amqtt")
NO_AMQTT = ("hbroker", "mosquitto", "relay")
NO_RELAY = ("hbroker", "mosquitto", "amqtt")  # the relay does no topic matching
load = ("--window", str(WINDOW), "--payload", str(PAYLOAD))
SCENARIOS: dict[str, Scenario] = {s.name: s for s in [
    Scenario("qos0", "QoS 0, 1 → 1, batch", "load",
             ("--qos", "0", "--write", "batch", *load), ALL),
    Scenario("qos1", "QoS 1, 1 → 1, batch", "load",
             ("--qos", "1", "--write", "batch", *load), ALL),
    Scenario("qos2", "QoS 2, 1 → 1, batch", "load",
             ("--qos", "2", "--write", "batch", *load), ALL),
    Scenario("qos0-single", "QoS 0, 1 → 1, single", "load",
             ("--qos", "0", "--write", "single", *load), ALL),
    Scenario("fanout8", "QoS 0, 1 → 8 (fan-out), batch", "load",
             ("--qos", "0", "--subs", "8", "--sub-mode", "all", "--write", "batch", *load), ALL),
    Scenario("m2m", "QoS 0, 16 → 16, 100 topics, wildcards, batch", "load",
             ("--qos", "0", "--pubs", "16", "--subs", "16", "--topics", "100", "--sub-mode",
              "wildcard", "--write", "batch", *load), NO_RELAY),
    Scenario("m2m-single", "QoS 0, 16 → 16, 100 topics, wildcards, single", "load",
             ("--qos", "0", "--pubs", "16", "--subs", "16", "--topics", "100", "--sub-mode",
              "wildcard", "--write", "single", *load), NO_RELAY),
    # Pinned: on a VM, waking a process on the other CPU costs an inter-processor interrupt,
    # which roughly quadruples the CPU per message of every broker (the relay's included) and
    # sets the tail; unpinned, where the scheduler happens to put broker and client decided
    # the p99 more than the broker did. Both placements, the same for every broker.
    Scenario("latency", f"QoS 0, 1 → 1 at {RATE:,} msg/s, separate CPUs", "latency",
             ("--qos", "0", "--rate", str(RATE), "--write", "batch", *load), ALL,
             cpus=(0, 1)),
    Scenario("latency-1cpu", f"QoS 0, 1 → 1 at {RATE:,} msg/s, one CPU", "latency",
             ("--qos", "0", "--rate", str(RATE), "--write", "batch", *load), NO_AMQTT,
             cpus=(0, 0)),
    Scenario("idle", f"{IDLE_CONNECTIONS:,} idle connections, keep alive 60 s", "idle",
             ("--keepalive", "60"), NO_RELAY),
    Scenario("retained", "retained messages to a # subscriber (QoS 0)",
             "retained", ("--qos", "0", "--window", str(WINDOW), "--payload", str(PAYLOAD)),
             ("hbroker", "mosquitto")),
    # the subscriber has a persistent session (5.0 Clean Start 0, Session Expiry Interval
    # SESSION_EXPIRY), so a durable broker must store what it queues for it
    Scenario("durable", "QoS 1, 1 → 1, batch, persistent session, durable storage", "load",
             ("--qos", "1", "--write", "batch", "--session-expiry", str(SESSION_EXPIRY), *load),
             ("hbroker", "mosquitto"), durable=True),
]}
NOT_RUN = {  # broker -> scenario -> why it is left out (see not_run_reason)
    "amqtt": {
        "retained": "the fill alone would take longer than its time limit at amqtt's QoS 1 "
                    "rate",
        "durable": "no persistence configured for amqtt",
    },
    "relay": {
        "m2m": "the relay does no topic matching", "m2m-single": "no topic matching",
        "idle": "not a broker (no sessions)", "retained": "stores nothing",
        "durable": "stores nothing",
    },
}


@dataclass(frozen=True)
class Target:
    scenario: str
    metric: str
    op: str  # ">=", "<=", "<"
    bound: float
    of: str  # "ratio" (hbroker / Mosquitto) or "hbroker" (the absolute value)
    text: str


TARGETS = [
    Target("qos0", "rate", ">=", 3.0, "ratio", "QoS 0 1:1, batching clients: ≥ 3× Mosquitto"),
    Target("fanout8", "rate", ">=", 3.0, "ratio", "fan-out 1:8, batching clients: ≥ 3×"),
    Target("qos1", "rate", ">=", 2.0, "ratio", "QoS 1 1:1, batching clients: ≥ 2×"),
    Target("qos0-single", "rate", ">=", 1.5, "ratio",
           "QoS 0 1:1, one packet per write: ≥ 1.5×"),
    Target("m2m-single", "rate", ">=", 1.5, "ratio",
           "many-to-many, one packet per write: ≥ 1.5×"),
    Target("latency", "p99", "<=", 2000.0, "hbroker",
           f"p99 at {RATE:,} msg/s ≤ 2 ms, broker and client on separate CPUs"),
    Target("latency", "p99", "<=", 1.5, "ratio", "… and ≤ 1.5× Mosquitto's p99"),
    Target("latency-1cpu", "p99", "<=", 2000.0, "hbroker",
           f"p99 at {RATE:,} msg/s ≤ 2 ms, broker and client on one CPU"),
    Target("latency-1cpu", "p99", "<=", 1.5, "ratio", "… and ≤ 1.5× Mosquitto's p99"),
    Target("idle", "rss_per_1000_mb", "<=", 3.0, "hbroker",
           "≤ 3 MB RSS per 1,000 idle connections"),
    Target("idle", "cpu_percent", "<", 5.0, "hbroker",
           f"{IDLE_CONNECTIONS:,} idle connections: broker < 5 % of a core"),
]

# scenario -> (metric compared, "higher" or "lower" is better)
COMPARED = {s: ("rate", "higher") for s in SCENARIOS}
COMPARED.update({"latency": ("p99", "lower"), "latency-1cpu": ("p99", "lower"),
                 "idle": ("rss_per_1000_mb", "lower"),
                 "retained": ("rate", "higher")})


# == processes ===============================================================================

def rss_kb(pid: int, field: str = "VmRSS") -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def machine_busy() -> tuple[float, float, float, float]:
    """(busy, total, steal, irq) CPU seconds of the whole machine so far. irq: hard and soft
    interrupts, charged to the process they interrupt, or to no process on an idle CPU."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    values = values[:8]  # user nice system idle iowait irq softirq steal (guest is in user)
    tick = os.sysconf("SC_CLK_TCK")
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    steal = values[7] if len(values) > 7 else 0
    irq = sum(values[5:7])
    return (sum(values) - idle) / tick, sum(values) / tick, steal / tick, irq / tick


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)),
        None)


def amqtt_binary() -> Path | None:
    path = AMQTT_VENV / "bin" / "amqtt"
    return path if path.exists() else None


class Broker(ServerProcess):
    """One broker process in a temporary directory, on a free port."""

    def __init__(self, name: str, scenario: Scenario, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        command = pinned(getattr(self, f"_{name}")(scenario), scenario, 0)
        super().__init__(name, command, workdir, self.port,
                         env=hbroker_env() if name == "hbroker" else None,
                         limit=30 if name == "amqtt" else 20)

    def _hbroker(self, scenario: Scenario) -> list[str]:
        lines = ["[[listeners]]", 'type = "tcp"', 'host = "127.0.0.1"', f"port = {self.port}",
                 "", "[limits]", f"max_inflight = {MAX_INFLIGHT}",
                 f"max_queued_messages = {MAX_QUEUED}", f"max_connections = {MAX_CONNECTIONS}",
                 "", "[logging]", 'level = "warning"']
        if scenario.durable:
            lines += ["", "[storage]", 'backend = "sqlite"', 'mode = "sync"',
                      "fsync = false", 'path = "data/hbroker.db"']
        config = self.workdir / "hbroker.toml"
        config.write_text("\n".join(lines) + "\n")
        return [*hbroker_command(), "serve", "-c", str(config)]

    def _mosquitto(self, scenario: Scenario) -> list[str]:
        binary = mosquitto_binary()
        if binary is None:
            raise BenchError("mosquitto is not installed (tools/install-bench-deps.sh)")
        lines = [
            "per_listener_settings false",
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"max_inflight_messages {MAX_INFLIGHT}",
            f"max_queued_messages {MAX_QUEUED}",
            "max_connections -1",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            # as root Mosquitto would switch to the user `mosquitto`, which cannot write here
            f"user {getpass.getuser()}",
        ]
        if scenario.durable:
            (self.workdir / "data").mkdir()
            lines += ["persistence true", f"persistence_location {self.workdir / 'data'}/"]
        else:
            lines.append("persistence false")
        config = self.workdir / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n")
        return [binary, "-c", str(config)]

    def _relay(self, scenario: Scenario) -> list[str]:
        return [str(RELAY), "--host", "127.0.0.1", "--port", str(self.port)]

    def _amqtt(self, scenario: Scenario) -> list[str]:
        binary = amqtt_binary()
        if binary is None:
            raise BenchError(f"amqtt is not installed in {AMQTT_VENV.relative_to(ROOT)}")
        config = self.workdir / "amqtt.yaml"
        config.write_text(
            "listeners:\n  default:\n    type: tcp\n"
            f"    bind: 127.0.0.1:{self.port}\n"
            "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
            "    allow_anonymous: true\n")
        return [str(binary), "-c", str(config)]

    def storage_bytes(self) -> int:
        data = self.workdir / "data"
        return sum(p.stat().st_size for p in data.rglob("*") if p.is_file()) \
            if data.exists() else 0


# == one run =================================================================================

@dataclass
class Plan:
    scenarios: list[str]
    brokers: list[str]
    repeats: int
    duration: float
    warmup: float
    amqtt_repeats: int
    amqtt_limit: float
    idle_settle: float
    retained: int
    quick: bool


class Sampler:
    """CPU of the broker and of loadgen, and of the whole machine, at named moments."""

    def __init__(self, broker_pid: int) -> None:
        self.broker_pid = broker_pid
        self.client_pid = 0
        self.samples: dict[str, dict[str, float]] = {}
        self.lock = threading.Lock()

    def sample(self, label: str) -> None:
        busy, total, steal, irq = machine_busy()
        s = {"t": time.perf_counter(), "broker": cpu_seconds(self.broker_pid),
             "client": cpu_seconds(self.client_pid) if self.client_pid else 0.0,
             "busy": busy, "total": total, "steal": steal, "irq": irq,
             "rss_kb": rss_kb(self.broker_pid)}
        with self.lock:
            self.samples.setdefault(label, s)

    def later(self, delay: float, label: str) -> None:
        timer = threading.Timer(delay, self.sample, (label,))
        timer.daemon = True
        timer.start()

    def interval(self, a: str, b: str) -> dict[str, float] | None:
        s0, s1 = self.samples.get(a), self.samples.get(b)
        if s0 is None or s1 is None or s1["t"] <= s0["t"]:
            return None
        elapsed = s1["t"] - s0["t"]
        share = (os.cpu_count() or 1) / (s1["total"] - s0["total"]) \
            if s1["total"] > s0["total"] else float("nan")
        machine = (s1["busy"] - s0["busy"]) * share
        broker = (s1["broker"] - s0["broker"]) / elapsed
        client = (s1["client"] - s0["client"]) / elapsed
        steal = (s1["steal"] - s0["steal"]) * share
        irq = (s1["irq"] - s0["irq"]) * share
        return {"seconds": elapsed, "broker_cpu": broker,
                "broker_cpu_s": s1["broker"] - s0["broker"], "client_cpu": client,
                "machine_cpu": machine, "steal_cpu": steal, "irq_cpu": irq,
                # everything not charged to the broker or loadgen: other users' processes, the
                # hypervisor (steal), interrupts handled on an otherwise idle CPU
                "other_cpu": machine - broker - client}


def usable_cpus() -> list[int]:
    """The CPUs this process may run on; a scenario's `cpus` index this list."""
    return sorted(os.sched_getaffinity(0))


def pinned(command: list[str], scenario: Scenario, which: int) -> list[str]:
    """`command` run on the scenario's CPU for the broker (0) or loadgen (1), if it has them
    (taskset execs the command: the pid is the command's)."""
    if scenario.cpus is None:
        return command
    cpu = usable_cpus()[scenario.cpus[which]]
    return ["taskset", "--cpu-list", str(cpu), *command]


def loadgen_command(scenario: Scenario, broker: str, port: int, plan: Plan) -> list[str]:
    cmd = pinned([str(LOADGEN), "--host", "127.0.0.1", "--port", str(port), *scenario.args],
                 scenario, 1)
    if broker != "amqtt":  # amqtt speaks MQTT 3.1.1 only
        cmd.append("--v5")
    if scenario.kind in ("load", "latency"):
        duration = plan.duration * (1.5 if scenario.kind == "latency" else 1)
        cmd += ["--duration", f"{duration:g}", "--warmup", f"{plan.warmup:g}"]
    elif scenario.kind == "idle":
        n = AMQTT_IDLE_CONNECTIONS if broker == "amqtt" else IDLE_CONNECTIONS
        cmd += ["--idle", str(n), "--duration", f"{plan.idle_settle + idle_window(plan) + 0.5:g}"]
    elif scenario.kind == "retained":
        cmd += ["--retained", str(plan.retained)]
    return cmd


def idle_window(plan: Plan) -> float:
    """Seconds over which the CPU of the idle broker is measured."""
    return 2 * plan.duration


def run_loadgen(cmd: list[str], sampler: Sampler, triggers: dict[str, list[tuple[float, str]]],
                limit: float) -> tuple[dict[str, Any] | None, int, str]:
    """Runs loadgen; `triggers` maps a stderr fragment to samples (delay, label) to take when a
    line holds it. Returns (its JSON, exit status, the tail of its stderr)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler.client_pid = proc.pid
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()),  # type: ignore
                              daemon=True)
    reader.start()
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        proc.kill()

    watchdog = threading.Timer(limit, kill)
    watchdog.daemon = True
    watchdog.start()
    tail: list[str] = []
    try:
        for line in proc.stderr:  # type: ignore[union-attr]
            tail = (tail + [line.rstrip()])[-8:]
            for fragment, samples in triggers.items():
                if fragment in line:
                    for delay, label in samples:
                        if delay:
                            sampler.later(delay, label)
                        else:
                            sampler.sample(label)
        proc.wait()
    finally:
        watchdog.cancel()
    reader.join(5)
    sampler.sample("exit")
    stderr = "\n".join(tail)
    if killed.is_set():
        return None, -9, f"time limit of {limit:g} s reached; {stderr}"
    try:
        report = json.loads(out[0]) if out and out[0].strip() else None
    except json.JSONDecodeError:
        report = None
    return report, proc.returncode, stderr


def run_one(scenario: Scenario, broker_name: str, plan: Plan) -> dict[str, Any]:
    limit = plan.amqtt_limit if broker_name == "amqtt" else 120.0
    with tempfile.TemporaryDirectory(prefix="hbroker-compare-") as tmp:
        broker = Broker(broker_name, scenario, Path(tmp))
        sampler = Sampler(broker.pid)
        try:
            cmd = loadgen_command(scenario, broker_name, broker.port, plan)
            if scenario.kind == "idle":
                time.sleep(0.3)
                sampler.sample("before")
                win = idle_window(plan)
                triggers = {"holding for": [(plan.idle_settle, "start"),
                                            (plan.idle_settle + win, "end")]}
            elif scenario.kind == "retained":
                sampler.sample("start")
                triggers = {"subscribing to retained": [(0, "delivery")]}
            else:
                triggers = {"connected; running": [(plan.warmup, "start")],
                            "; draining": [(0, "end")]}
            report, status, stderr = run_loadgen(cmd, sampler, triggers, limit)
            alive = broker.proc.poll() is None
        finally:
            hwm = rss_kb(broker.pid, "VmHWM")
            exit_status = broker.stop()
        storage = broker.storage_bytes()
        log_lines = broker.log().splitlines()

    run: dict[str, Any] = {
        "scenario": scenario.name, "broker": broker_name,
        "loadgen_status": status, "broker_alive": alive, "broker_exit": exit_status,
        "broker_peak_rss_kb": hwm, "broker_log_lines": len(log_lines),
        "protocol": "3.1.1" if broker_name == "amqtt" else "5.0",
    }
    if scenario.durable:
        run["storage_bytes"] = storage
    errors = []
    if report is None:
        errors.append(f"loadgen exit {status}, no report: {stderr}")
    else:
        if not report.get("ok") or status != 0:
            msgs = report.get("errors", {}).get("messages") or []
            errors.append(f"loadgen exit {status}, ok={report.get('ok')}: "
                          + "; ".join(msgs[:3] or [stderr]))
        report.pop("params", None)
        run["loadgen"] = report
    if not alive:
        errors.append(f"{broker_name} died during the run: " + " | ".join(log_lines[-5:]))
    elif exit_status != 0 and broker_name != "amqtt":
        errors.append(f"{broker_name} exited with {exit_status} on SIGTERM: "
                      + " | ".join(log_lines[-5:]))
    run["ok"] = not errors
    if errors:
        run["error"] = "; ".join(errors)[:1500]
    try:
        run["metrics"] = {k: sig(v) for k, v in metrics(scenario, report, sampler, plan).items()} \
            if report else {}
    except (KeyError, TypeError, ZeroDivisionError) as exc:
        run["metrics"] = {}
        run["ok"] = False
        run["error"] = (run.get("error", "") + f"; unexpected loadgen report ({exc!r})")[:1500]
    return run


def metrics(scenario: Scenario, r: dict[str, Any], sampler: Sampler,
            plan: Plan) -> dict[str, float]:
    m: dict[str, float] = {}
    if scenario.kind in ("load", "latency"):
        cpu = sampler.interval("start", "end")
        m["rate"] = r["delivered_per_s"]
        m["published_per_s"] = r["published_per_s"]
        lat = r.get("latency_us") or {}
        for k in ("p50", "p90", "p99", "p99_9", "max", "mean"):
            if k in lat:
                m[k] = float(lat[k])
        if scenario.kind == "latency" and r.get("rate"):
            m["achieved_per_s"] = r["rate"]["achieved_per_s"]
            m["held"] = 1.0 if r["rate"]["held"] else 0.0
        m["lost"] = r["totals"]["lost"] + r["totals"]["window_expired"]
        if cpu:
            m.update({k: cpu[k] for k in ("broker_cpu", "client_cpu", "other_cpu",
                                          "machine_cpu", "steal_cpu", "irq_cpu")})
            if m["rate"]:
                m["broker_cpu_us"] = cpu["broker_cpu"] / m["rate"] * 1e6
    elif scenario.kind == "idle":
        idle = r["idle"]
        before = sampler.samples.get("before", {}).get("rss_kb", 0)
        end = sampler.samples.get("end")
        after = end["rss_kb"] if end else sampler.samples.get("exit", {}).get("rss_kb", 0)
        m["connections"] = idle["connected"]
        m["connect_s"] = idle["connect_s"]
        m["rss_before_mb"] = before * 1024 / MB
        m["rss_after_mb"] = after * 1024 / MB
        if idle["connected"]:
            m["rss_per_1000_mb"] = (after - before) * 1024 / MB / (idle["connected"] / 1000)
        cpu = sampler.interval("start", "end")
        if cpu:
            m["cpu_percent"] = cpu["broker_cpu"] * 100
            m.update({k: cpu[k] for k in ("broker_cpu", "client_cpu", "other_cpu",
                                          "machine_cpu", "steal_cpu", "irq_cpu")})
            m["cpu_window_s"] = cpu["seconds"]
        m["pings_answered"] = idle["pings_answered"]
    elif scenario.kind == "retained":
        ret = r["retained"]
        m["messages"] = ret["messages"]
        m["fill_s"] = ret["fill_s"]
        m["delivery_s"] = ret["delivery_s"]
        m["rate"] = ret["delivered_per_s"]
        cpu = sampler.interval("delivery", "exit")
        whole = sampler.interval("start", "exit")
        if whole:  # loadgen has exited by then: its CPU comes from its report
            client = (r["cpu"]["total_user_s"] + r["cpu"]["total_sys_s"]) / whole["seconds"]
            m.update({k: whole[k] for k in ("broker_cpu", "machine_cpu", "steal_cpu",
                                            "irq_cpu")})
            m["client_cpu"] = client
            m["other_cpu"] = whole["machine_cpu"] - whole["broker_cpu"] - client
        if cpu:
            m["broker_cpu_delivery_s"] = cpu["broker_cpu_s"]
    return m


# == summary =================================================================================

def sig(v: float, digits: int = 5) -> float:
    """v rounded to a few significant digits (the JSON stays small; the noise is larger)."""
    return float(f"{v:.{digits}g}") if isinstance(v, float) and v == v else v


def summarize(plan: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    medians: dict[str, dict[str, Any]] = {}
    ratios: dict[str, Any] = {}
    for scenario in plan["scenarios"]:
        medians[scenario] = {}
        for broker in plan["brokers"]:
            mine = [r for r in runs if r["scenario"] == scenario and r["broker"] == broker]
            if not mine:
                continue
            good = [r for r in mine if r["ok"]]
            keys = sorted({k for r in good for k in r["metrics"]})
            med: dict[str, Any] = {
                k: sig(median([r["metrics"].get(k, float("nan")) for r in good])) for k in keys}
            med["runs"] = len(good)
            med["failed"] = len(mine) - len(good)
            if SCENARIOS[scenario].kind == "latency":
                med["all_held"] = all(r["metrics"].get("held") == 1.0 for r in good)
            medians[scenario][broker] = med
        metric, better = COMPARED[scenario]
        hb = medians[scenario].get("hbroker", {}).get(metric)
        mq = medians[scenario].get("mosquitto", {}).get(metric)
        per_rep = []
        for rep in range(plan["repeats"]):
            pair = {r["broker"]: r["metrics"].get(metric) for r in runs
                    if r["scenario"] == scenario and r["repeat"] == rep and r["ok"]
                    and r["broker"] in ("hbroker", "mosquitto")}
            if pair.get("hbroker") and pair.get("mosquitto"):
                per_rep.append(pair["hbroker"] / pair["mosquitto"])
        ratios[scenario] = {
            "metric": metric, "better": better,
            "ratio": hb / mq if hb and mq and hb == hb and mq == mq else None,
            "per_repetition": per_rep,
        }
    relay = {}
    for scenario in ("qos0", "qos0-single"):
        hb = medians.get(scenario, {}).get("hbroker", {}).get("rate")
        rl = medians.get(scenario, {}).get("relay", {}).get("rate")
        mq = medians.get(scenario, {}).get("mosquitto", {}).get("rate")
        if hb and rl:
            relay[scenario] = {"hbroker": hb / rl, "mosquitto": mq / rl if mq else None}
    targets = []
    for t in TARGETS:
        if t.of == "ratio":
            value = ratios.get(t.scenario, {}).get("ratio")
        else:
            value = medians.get(t.scenario, {}).get("hbroker", {}).get(t.metric)
        if value is None or value != value:
            passed = None
        else:
            passed = {">=": value >= t.bound, "<=": value <= t.bound, "<": value < t.bound}[t.op]
        targets.append({**t.__dict__, "value": value, "passed": passed})
    threshold = plan.get("client_bound", CLIENT_BOUND)
    bound = {n: client_bound(medians[n], threshold) for n in plan["scenarios"]
             if SCENARIOS[n].kind == "load"}
    return {"medians": medians, "ratios": ratios, "relay_fraction": relay, "targets": targets,
            "client_bound": {"threshold": threshold,
                             "runs": {n: b for n, b in bound.items() if b}}}


def bound_runs(report: dict[str, Any], scenario: str) -> dict[str, float]:
    """The brokers of a throughput scenario whose load generator used at least the plan's
    share of a core (median over their repetitions): for those, loadgen was the bound.
    Computed from the medians, so that results from before this was recorded show it too."""
    if SCENARIOS[scenario].kind != "load":
        return {}
    threshold = report["plan"].get("client_bound", CLIENT_BOUND)
    return client_bound(report["summary"]["medians"].get(scenario, {}), threshold)


NAMES = {"hbroker": "hbroker", "mosquitto": "Mosquitto", "relay": "the relay",
         "amqtt": "amqtt"}


def bound_cell(bound: dict[str, float]) -> str:
    """The throughput table's client-bound cell."""
    if not bound:
        return ""
    kind = ratio_bound(bound, "hbroker", "mosquitto")
    runs = ", ".join(f"{NAMES[b]} {bound[b] * 100:.0f} %" for b in BROKERS if b in bound)
    what = {"lower bound": "ratio a lower bound", "upper bound": "ratio an upper bound",
            "both": "ratio bounded by the client", None: "relay column only"}[kind]
    return f"**yes** ({runs}): {what}"


BOUND_WORDS = {"lower bound": "the ratio is a lower bound",
               "upper bound": "the ratio is an upper bound",
               "both": "the ratio is bounded by the client in both runs"}


FRACTION_WORDS = {"lower bound": "a lower bound", "upper bound": "an upper bound",
                  "both": "bounded by the client in both runs"}


def loadgen_cell(row: dict[str, Any]) -> str:
    """loadgen's CPU in the hbroker / Mosquitto / relay runs of a scenario, % of a core."""
    def pct(b: str) -> str:
        cpu = row.get(b, {}).get("client_cpu")
        return "–" if cpu is None or cpu != cpu else f"{cpu * 100:.0f}"
    return " / ".join(pct(b) for b in ("hbroker", "mosquitto", "relay")) + " %"


def client_bound_paragraph(report: dict[str, Any], rows: list[str]) -> str:
    """What *client-bound* means, and in which rows loadgen was the bound, from the data."""
    threshold = report["plan"].get("client_bound", CLIENT_BOUND)
    flagged = {n: bound_runs(report, n) for n in rows}
    flagged = {n: b for n, b in flagged.items() if b}
    med = report["summary"]["medians"]
    if not flagged:
        top = max((x["client_cpu"] for n in rows for x in med.get(n, {}).values()
                   if isinstance(x.get("client_cpu"), float)), default=float("nan"))
        return (f"*Client-bound*: no run was; loadgen (one thread) used at most "
                f"{fmt(top * 100, 0, ' %')} of a core (median per row), below the "
                f"{threshold * 100:.0f} % from which it counts as the bound.")
    listed = "; ".join(
        f"{SCENARIOS[n].title} (" + ", ".join(f"{NAMES[b]}'s run {c * 100:.0f} %"
                                              for b, c in b_.items()) + ")"
        for n, b_ in flagged.items())
    return (f"*Client-bound*: loadgen (one thread) used ≥ {threshold * 100:.0f} % of a core "
            "(median of the repetitions) in that broker's runs: one thread near a full core "
            "cannot offer more load, so the load generator, not only the broker, set the rate. "
            "Such a run understates that broker's rate: when it is hbroker's run "
            "the ratio is a lower bound, when it is Mosquitto's an upper bound (hbroker's lead "
            "may be smaller than shown), when it is both the ratio says more about the client "
            f"than about the brokers. Client-bound in this run: {listed}.")


def cpu_per_message_note(report: dict[str, Any]) -> str:
    """Broker CPU per message on separate CPUs ÷ on one CPU, per broker, in this run."""
    med = report["summary"]["medians"]
    apart, together = med.get("latency", {}), med.get("latency-1cpu", {})
    parts = []
    for b in ("hbroker", "mosquitto", "relay"):
        a = apart.get(b, {}).get("broker_cpu_us")
        o = together.get(b, {}).get("broker_cpu_us")
        if a and o and a == a and o == o:
            parts.append(f"{NAMES[b]} {a / o:.1f}×")
    if not parts:
        return ""
    return (" In this run the brokers' CPU time per message on separate CPUs was, against "
            "one CPU: " + ", ".join(parts) + ".")


def not_run_reason(report: dict[str, Any], broker: str, scenario: str) -> str:
    """Why `broker` did not run `scenario`, with this run's figures where they explain it."""
    why = NOT_RUN[broker][scenario]
    if (broker, scenario) == ("amqtt", "retained"):
        rate = report["summary"]["medians"].get("qos1", {}).get("amqtt", {}).get("rate")
        if rate and rate == rate:
            plan = report["plan"]
            why = (f"at amqtt's QoS 1 rate in this run ({rate:,.0f} msg/s, row *QoS 1*) the "
                   f"fill of {plan['retained']:,} retained messages alone would take "
                   f"{plan['retained'] / rate:.0f} s, beyond its limit of "
                   f"{plan['amqtt_limit']:g} s per run")
    return why


# == machine =================================================================================

def _first_line(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return ((p.stdout or p.stderr).strip().splitlines() or [""])[0]


def machine_info(prov: Provenance) -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mosquitto = mosquitto_binary()
    amqtt = amqtt_binary()
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "hbroker": _first_line([sys.executable, "-m", "hbroker", "--version"]),
        "mosquitto": _first_line([mosquitto, "-h"]) if mosquitto else None,
        "amqtt": _first_line([str(amqtt.parent / "python"), "-c",
                              "import importlib.metadata as m; print(m.version('amqtt'))"])
        if amqtt else None,
        "commit": prov.commit,
    }


# == report ==================================================================================

def fmt(v: float | None, digits: int = 0, suffix: str = "") -> str:
    if v is None or v != v:
        return "–"
    return f"{v:,.{digits}f}{suffix}"


def fmt_ratio(v: float | None) -> str:
    return "–" if v is None or v != v else f"{v:.2f}×"


def op_text(op: str) -> str:
    return {">=": "≥", "<=": "≤", "<": "<"}[op]


def markdown(report: dict[str, Any], chart: str | None) -> str:
    plan = report["plan"]
    m = report["machine"]
    s = report["summary"]
    med = s["medians"]
    rat = s["ratios"]
    scen = [n for n in plan["scenarios"]]
    banner = provenance_banner(report)
    lines = [
        SECTION, "",
        *([banner, ""] if banner else []),
        f"Written by {report['command']} on {report['date']} (took "
        f"{report['wall_s'] / 60:.1f} min), measuring commit "
        f"`{short(report_provenance(report)['commit'])}`. Machine: {m['cpu_count']} CPUs "
        f"({m['cpu_model']}), {m['memory_gb']:.0f} GB, {m['platform']}; "
        f"{m['hbroker'] or 'hbroker'}, {m['mosquitto'] or 'Mosquitto not installed'}, amqtt "
        f"{m['amqtt'] or 'not installed'}. Raw runs: `{report['output']}`.",
        "",
    ]
    if chart:
        lines += [f"![hbroker / Mosquitto ratios, latency and idle memory]({chart})", ""]

    lines += ["**Targets** (issue 4; medians of this run)", "",
              "| target | measured | |", "|---|---:|---|"]
    for t in s["targets"]:
        if t["scenario"] not in scen:
            continue
        v = t["value"]
        if t["of"] == "ratio":
            shown = fmt_ratio(v)
        elif t["metric"] == "p99":
            shown = fmt(v / 1000 if v is not None else None, 2, " ms")
        elif t["metric"] == "cpu_percent":
            shown = fmt(v, 2, " %")
        else:
            shown = fmt(v, 2, " MB")
        verdict = {True: "pass", False: "**fail**", None: "not measured"}[t["passed"]]
        kind = ratio_bound(bound_runs(report, t["scenario"]), "hbroker", "mosquitto") \
            if t["of"] == "ratio" else None
        if kind:
            verdict += f" (client-bound: {BOUND_WORDS[kind]})"
        lines.append(f"| {t['text']} | {shown} | {verdict} |")
    for name, label in (("qos0", "batch"), ("qos0-single", "single")):
        f = s["relay_fraction"].get(name)
        if f:
            bound = bound_runs(report, name)
            kind = ratio_bound(bound, "hbroker", "relay")
            runs = ", ".join(f"{NAMES[b]}'s run {bound[b] * 100:.0f} %"
                             for b in ("hbroker", "relay") if b in bound)
            note = f" (client-bound: {runs}; the fraction is {FRACTION_WORDS[kind]})" \
                if kind else ""
            lines.append(f"| hbroker as a fraction of the C relay, QoS 0 1:1 {label} "
                         f"(Mosquitto: {fmt(f['mosquitto'], 2)}) | {f['hbroker']:.2f} | "
                         f"reported{note} |")
    lines.append("")

    rate_rows = [n for n in scen if SCENARIOS[n].kind == "load"]
    if rate_rows:
        lines += [
            "**Throughput**: deliveries per second received by the subscribers (fan-out: 8 per "
            "message); *ratio*: hbroker ÷ Mosquitto of the medians, with the range of the "
            "per-repetition ratios; *µs/msg*: broker CPU time per delivery; *loadgen CPU*: "
            "the load generator's CPU in the hbroker / Mosquitto / relay runs, share of one "
            "core (median); *client-bound*: see below the table.", "",
            "| scenario | hbroker | Mosquitto | ratio | per rep. | relay | amqtt | "
            "hbroker µs/msg | Mosquitto µs/msg | loadgen CPU | client-bound |",
            "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---|"]
        for n in rate_rows:
            r = med[n]
            rr = rat[n]
            reps = rr["per_repetition"]
            span = f"{min(reps):.2f}–{max(reps):.2f}" if len(reps) > 1 else \
                (f"{reps[0]:.2f}" if reps else "–")
            lines.append(
                f"| {SCENARIOS[n].title} | {cell(r, 'hbroker', 'rate')} | "
                f"{cell(r, 'mosquitto', 'rate')} | {fmt_ratio(rr['ratio'])} | {span} | "
                f"{cell(r, 'relay', 'rate', n)} | {cell(r, 'amqtt', 'rate', n)} | "
                f"{fmt(r.get('hbroker', {}).get('broker_cpu_us'), 1)} | "
                f"{fmt(r.get('mosquitto', {}).get('broker_cpu_us'), 1)} | "
                f"{loadgen_cell(r)} | {bound_cell(bound_runs(report, n))} |")
        lines += ["", client_bound_paragraph(report, rate_rows), ""]

    for name in (n for n in ("latency", "latency-1cpu") if n in scen):
        r = med[name]
        where = ("the broker on one CPU, loadgen on another" if SCENARIOS[name].cpus[0]
                 != SCENARIOS[name].cpus[1] else "the broker and loadgen on the same CPU")
        lines += [f"**Latency at {RATE:,} msg/s, {where}** (QoS 0, 1 → 1, MQTT 5.0 except "
                  "amqtt), µs from the publisher's send to the subscriber's receive, medians "
                  "over the repetitions of each percentile:", "",
                  "| broker | p50 | p90 | p99 | p99.9 | max | rate held | broker CPU |",
                  "|---|---:|---:|---:|---:|---:|---|---:|"]
        for b in plan["brokers"]:
            x = r.get(b)
            if not x or not x["runs"]:
                if x:
                    lines.append(f"| {b} | failed | | | | | | |")
                continue
            lines.append(f"| {b} | {fmt(x.get('p50'))} | {fmt(x.get('p90'))} | "
                         f"{fmt(x.get('p99'))} | {fmt(x.get('p99_9'))} | {fmt(x.get('max'))} | "
                         f"{'yes' if x.get('all_held') else 'no'} | "
                         f"{fmt(x.get('broker_cpu', float('nan')) * 100, 0, ' %')} |")
        rr = rat[name]
        floor = r.get("relay", {}).get("p99")
        lines += ["", f"p99 hbroker ÷ Mosquitto: {fmt_ratio(rr['ratio'])}."
                  + (f" The relay, which only forwards, had a p99 of {fmt(floor)} µs in the "
                     "same run: the floor that the machine and the client set."
                     if floor and floor == floor else ""), ""]

    if "idle" in scen:
        r = med["idle"]
        lines += ["**Idle connections** (keep alive 60 s): RSS (VmRSS) before connecting and "
                  f"with every connection open, CPU of the broker over {idle_window_of(plan):g} "
                  "s of the hold.", "",
                  "| broker | connections | connect s | RSS before MB | RSS after MB | "
                  "MB per 1,000 | CPU % of a core |", "|---|---:|---:|---:|---:|---:|---:|"]
        for b in plan["brokers"]:
            x = r.get(b)
            if not x or not x["runs"]:
                if x:
                    lines.append(f"| {b} | failed | | | | | |")
                continue
            lines.append(f"| {b} | {fmt(x.get('connections'))} | {fmt(x.get('connect_s'), 2)} "
                         f"| {fmt(x.get('rss_before_mb'), 1)} | {fmt(x.get('rss_after_mb'), 1)} "
                         f"| {fmt(x.get('rss_per_1000_mb'), 2)} | "
                         f"{fmt(x.get('cpu_percent'), 2)} |")
        lines += ["", f"RSS per 1,000 hbroker ÷ Mosquitto: {fmt_ratio(rat['idle']['ratio'])}.",
                  ""]

    if "retained" in scen:
        r = med["retained"]
        lines += [f"**Retained**: {plan['retained']:,} retained messages published at QoS 1 "
                  "(the fill), then a new client subscribes to `retained/#` at QoS 0; "
                  "delivery is timed from its SUBSCRIBE to the last message.", "",
                  "| broker | fill s | delivery s | delivered/s | broker CPU s (delivery) |",
                  "|---|---:|---:|---:|---:|"]
        for b in plan["brokers"]:
            x = r.get(b)
            if not x or not x["runs"]:
                if x:
                    lines.append(f"| {b} | failed | | | |")
                continue
            lines.append(f"| {b} | {fmt(x.get('fill_s'), 2)} | {fmt(x.get('delivery_s'), 3)} | "
                         f"{fmt(x.get('rate'))} | {fmt(x.get('broker_cpu_delivery_s'), 2)} |")
        lines += ["", f"Delivery rate hbroker ÷ Mosquitto: {fmt_ratio(rat['retained']['ratio'])}"
                  ".", ""]

    lines += ["**How the runs were made.**", ""]
    lines += [
        f"- Load: `bench/loadgen` (C, one epoll thread; its CPU use is in the JSON), MQTT 5.0, "
        f"{PAYLOAD}-byte payloads, each publisher at most {WINDOW} messages outstanding (not yet "
        "received by all their subscribers and, at QoS 1/2, not acknowledged). *batch*: a "
        "client writes all it has ready in one write(); *single*: one write() per MQTT packet. "
        f"Counted for {plan['duration']:g} s after {plan['warmup']:g} s of warm-up "
        f"({plan['duration'] * 1.5:g} s for latency).",
        f"- Limits, equal for both brokers: hbroker `limits.max_inflight = {MAX_INFLIGHT}` and "
        f"`max_queued_messages = {MAX_QUEUED}`; Mosquitto `max_inflight_messages {MAX_INFLIGHT}`"
        f" and `max_queued_messages {MAX_QUEUED}`. Both announce Receive Maximum {MAX_INFLIGHT},"
        f" so the window of {WINDOW} fits (the defaults, 20, would refuse it). Otherwise both "
        "run at their defaults (log level warning, `$SYS` on): hbroker's sockets have "
        "TCP_NODELAY (uvloop sets it), Mosquitto's keep Nagle's algorithm "
        "(`set_tcp_nodelay false`, its default).",
        *(["- Many-to-many: 16 publishers, 16 subscribers, 100 topics `bench/<t % 16>/<t>`, "
           "subscriber j subscribed to `bench/j/+`; fan-out: 8 subscribers of `bench/#`."]
          if {"m2m", "m2m-single", "fanout8"} & set(scen) else []),
        *([f"- Idle: {IDLE_CONNECTIONS:,} MQTT 5.0 connections (CONNECT, keep alive 60 s, then "
           f"nothing), held {plan['idle_settle']:g} s before the RSS and CPU are read. The "
           "first PINGREQ of a connection is due 60 s after its CONNACK, so none falls in the "
           "measured window: the CPU is what the broker spends on open, silent connections "
           f"(its timers); in a steady state the {IDLE_CONNECTIONS:,} connections would add "
           f"{IDLE_CONNECTIONS / 60:.0f} PINGREQ/s."] if "idle" in scen else []),
        *(["- Latency: the broker and loadgen are pinned (`taskset`) to two different CPUs, "
           "and in the *one CPU* table both to the same one; every broker alike. On a "
           "virtual machine, waking a process that sleeps on the other CPU costs an "
           "inter-processor interrupt, so on separate CPUs a broker spends more CPU per "
           "message and the tail follows; left to the scheduler, where it put broker and "
           "client (on one CPU or two) would decide the p99 more than the broker."
           + cpu_per_message_note(report)] if {"latency", "latency-1cpu"} & set(scen)
          else []),
        *([durable_note(report)] if "durable" in scen else []),
        *(["- The relay (`bench/relay`, C) forwards PUBLISH bytes to every subscriber and "
           "acknowledges, nothing else: the machine's ceiling for 1:1 and fan-out."]
          if "relay" in plan["brokers"] else []),
        f"- Every run starts a fresh broker process; within a repetition the brokers of a "
        f"scenario run one after the other, in an order rotated from one repetition to the "
        f"next; medians over {plural(plan['repeats'], 'repetition')}. A run counts only if "
        "loadgen's checks passed (nothing lost, duplicated or misrouted at QoS 1/2, every QoS 2 "
        "exactly once; at QoS 0 MQTT allows loss, counted in the JSON) and hbroker and "
        "Mosquitto exited with status 0 on SIGTERM.",
        *([f"- amqtt (in `bench/.venv-amqtt`): MQTT 3.1.1 (it speaks nothing else), "
           f"{plural(plan['amqtt_repeats'], 'repetition')} per scenario, a limit of "
           f"{plan['amqtt_limit']:g} s per run, {AMQTT_IDLE_CONNECTIONS:,} idle connections "
           f"instead of {IDLE_CONNECTIONS:,}{amqtt_connect_note(report)}. "
           + " ".join(f"Not run for `{sc}`: {not_run_reason(report, 'amqtt', sc)}."
                      for sc in NOT_RUN["amqtt"] if sc in scen)]
          if "amqtt" in plan["brokers"] else []),
        "",
    ]
    others = sorted(r["metrics"]["other_cpu"] for r in report["runs"]
                    if r["ok"] and "other_cpu" in r["metrics"])
    if others:
        lines += [
            f"**Noise.** Everything but the broker and loadgen used "
            f"{median(others) * 100:.0f} % of a CPU during the measured intervals (median over "
            f"the runs; from {max(0.0, others[0]) * 100:.0f} to {others[-1] * 100:.0f} %) on "
            f"{m['cpu_count']} CPUs.{kernel_note(report)} Absolute rates move with that; the "
            "ratios come from runs made seconds apart.", ""]
    failed = [r for r in report["runs"] if not r["ok"]]
    if failed:
        lines += ["**Failed runs** (left out of the medians):", ""]
        for r in failed:
            lines.append(f"- {r['scenario']} / {r['broker']} (repetition {r['repeat'] + 1}): "
                         f"{r.get('error', '')[:300]}")
        lines.append("")
    return "\n".join(lines)


def kernel_note(report: dict[str, Any]) -> str:
    def med(key: str) -> float:
        return median([r["metrics"][key] for r in report["runs"]
                       if r["ok"] and key in r["metrics"]])
    irq, steal = med("irq_cpu"), med("steal_cpu")
    if irq != irq:
        return ""
    return (f" That share includes time taken by the hypervisor (steal, median "
            f"{steal * 100:.0f} % of a CPU) and the part of the interrupt handling of the "
            "benchmark's own loopback traffic that ran on an otherwise idle CPU (interrupts "
            f"in all: median {irq * 100:.0f} %, most of it charged to the broker and loadgen).")


def durable_note(report: dict[str, Any]) -> str:
    args = report["plan"].get("loadgen_args", {}).get("durable", [])
    head = ("- Durable (`durable` row): hbroker with `[storage] backend = \"sqlite\"`, "
            "`mode = \"sync\"`, `fsync = false` (the default); Mosquitto with "
            "`persistence true` (`autosave_interval` 1,800 s and `autosave_on_changes false`, "
            "the defaults). ")
    if "--session-expiry" not in args:  # results from before loadgen had persistent sessions
        return (head + "The subscriber's session was clean, so neither broker had a persistent "
                "session to store messages for: the row measures what configuring the durable "
                "backend costs on a QoS 1 path with clean sessions (database size after a run: "
                f"hbroker {durable_bytes(report, 'hbroker')}, Mosquitto "
                f"{durable_bytes(report, 'mosquitto')}). Per-message "
                "durable costs are in the section *Durable storage* (`bench/storage_qos1.py`).")
    expiry = args[args.index("--session-expiry") + 1]
    return (head + "The subscriber has a persistent session (`loadgen --session-expiry "
            f"{expiry}`: Clean Start 0, Session Expiry Interval {int(expiry):,} s; the "
            "publisher's is clean), so both brokers must keep the messages queued for it. "
            "hbroker, per message: the message and its delivery to the session are committed "
            "to SQLite before the PUBACK (commits grouped per loop iteration; with "
            "`fsync = false` a commit is in the operating system's hands, so a `kill -9` of "
            "the broker loses nothing acknowledged), and the rows are deleted once the "
            "subscriber has acknowledged. Mosquitto, per message: nothing on disk; it keeps "
            "the session's messages in memory and writes its whole database only every "
            "`autosave_interval` and at shutdown, so a crash loses what arrived since the last "
            "save. The row therefore compares a store per message with none. At the end of "
            "each run loadgen ends the session (DISCONNECT with Session Expiry Interval 0); "
            f"database size after a run: hbroker {durable_bytes(report, 'hbroker')}, Mosquitto "
            f"{durable_bytes(report, 'mosquitto')}. The per-message costs of each storage "
            "configuration are in the section *Durable storage* (`bench/storage_qos1.py`).")


def amqtt_connect_note(report: dict[str, Any]) -> str:
    idle = report["summary"]["medians"].get("idle", {}).get("amqtt", {})
    n, secs = idle.get("connections"), idle.get("connect_s")
    if not n or not secs or n != n or secs != secs:
        return ""
    return f" (in this run it took {secs:.2f} s to accept {n:,.0f}, {n / secs:,.0f} a second)"


def durable_bytes(report: dict[str, Any], broker: str) -> str:
    sizes = [r["storage_bytes"] for r in report["runs"]
             if r["broker"] == broker and "storage_bytes" in r]
    return f"{max(sizes):,} bytes" if sizes else "–"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def idle_window_of(plan: dict[str, Any]) -> float:
    return 2 * plan["duration"]


def cell(row: dict[str, Any], broker: str, key: str, scenario: str | None = None) -> str:
    x = row.get(broker)
    if x is None:
        if scenario and broker in NOT_RUN and scenario in NOT_RUN[broker]:
            return "n/a"
        return "–"
    if not x["runs"]:
        return "failed"
    return fmt(x.get(key))


# == chart ===================================================================================

def chart(report: dict[str, Any], path: Path) -> bool:
    """Ratios per scenario with the targets, latency percentiles, idle memory: one PNG."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart", file=sys.stderr)
        return False
    s = report["summary"]
    plan = report["plan"]
    colors = {"hbroker": "#1f6fb4", "mosquitto": "#5a9e3a", "relay": "#888888",
              "amqtt": "#d9822b"}
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.6),
                             gridspec_kw={"width_ratios": [1.5, 1.1, 0.8]})

    ax = axes[0]
    names = [n for n in plan["scenarios"] if COMPARED[n][1] == "higher"
             and s["ratios"][n]["ratio"]]
    targets = {t["scenario"]: t["bound"] for t in s["targets"]
               if t["of"] == "ratio" and t["op"] == ">="}
    ys = list(range(len(names)))[::-1]
    for y, n in zip(ys, names, strict=True):
        r = s["ratios"][n]
        target = targets.get(n)
        good = target is None or r["ratio"] >= target
        bound = ratio_bound(bound_runs(report, n), "hbroker", "mosquitto")
        ax.barh(y, r["ratio"], color=colors["hbroker"] if good else "#c0392b", height=0.6,
                hatch="//" if bound else None, edgecolor="white" if bound else None)
        reps = r["per_repetition"]
        if len(reps) > 1:
            ax.plot([min(reps), max(reps)], [y, y], color="black", lw=1)
        ax.text(max(r["ratio"], target or 0, *reps) + 0.06, y, f"{r['ratio']:.2f}×",
                va="center", fontsize=8)
        if target:
            ax.plot([target, target], [y - 0.4, y + 0.4], color="black", lw=2, ls=":")
    ax.axvline(1.0, color="#5a9e3a", lw=1.5)
    ax.set_yticks(ys, [SCENARIOS[n].title + {"lower bound": " (client-bound: lower bound)",
                                              "upper bound": " (client-bound: upper bound)",
                                              "both": " (client-bound)", None: ""}[
        ratio_bound(bound_runs(report, n), "hbroker", "mosquitto")] for n in names], fontsize=8)
    ax.set_xlabel("hbroker ÷ Mosquitto (deliveries/s); green line: parity, dotted: target; "
                  "hatched: loadgen was the bound")
    ax.set_title("Throughput ratio (bars: median, lines: range of repetitions)", fontsize=10)
    ax.set_xlim(0, max([3.5, *[max(s["ratios"][n]["ratio"], *s["ratios"][n]["per_repetition"])
                               + 0.6 for n in names]]))

    ax = axes[1]
    pct = [("p50", 50), ("p90", 90), ("p99", 99), ("p99_9", 99.9)]
    xs = [1 / (1 - p / 100) for _, p in pct]
    for name, style, where in (("latency", "-", "separate CPUs"), ("latency-1cpu", "--",
                                                                    "one CPU")):
        lat = s["medians"].get(name, {})
        for b in ("hbroker", "mosquitto", "relay", "amqtt"):
            x = lat.get(b)
            if not x or not x.get("runs"):
                continue
            label = f"{b}, {where}" + ("" if x.get("all_held") else " (rate not held)")
            ax.plot(xs, [x.get(k, float("nan")) / 1000 for k, _ in pct], marker="o", ls=style,
                    color=colors[b], label=label)
    ax.axhline(2.0, color="black", ls=":", lw=1.5, label="target p99 ≤ 2 ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(xs, [f"p{p:g}" for _, p in pct])
    ax.minorticks_off()
    lo, hi = ax.get_ylim()
    ticks = [t for t in (0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
             if lo <= t <= hi]
    ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_ylabel("latency, ms (log)")
    ax.set_title(f"Latency at {RATE:,} msg/s, QoS 0 1:1 (medians; solid: separate CPUs, "
                 "dashed: one CPU)", fontsize=9)
    ax.legend(fontsize=7)

    ax = axes[2]
    idle = s["medians"].get("idle", {})
    bars = [(b, idle[b]["rss_per_1000_mb"]) for b in ("hbroker", "mosquitto", "amqtt")
            if b in idle and idle[b].get("runs") and "rss_per_1000_mb" in idle[b]]
    if bars:
        ax.bar([b for b, _ in bars], [v for _, v in bars], color=[colors[b] for b, _ in bars])
        for i, (_, v) in enumerate(bars):
            ax.text(i, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
        ax.axhline(3.0, color="black", ls=":", lw=1.5, label="target ≤ 3 MB")
        ax.set_yscale("log")
        ax.minorticks_off()
        lo, hi = ax.get_ylim()
        ticks = [t for t in (0.1, 0.2, 0.5, 1, 2, 3, 5, 10, 20, 50, 100, 200) if lo <= t <= hi]
        ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
        ax.legend(fontsize=8)
    ax.set_ylabel("MB RSS per 1,000 idle connections (log)")
    ax.set_title("Idle connections: memory", fontsize=10)

    m = report["machine"]
    commit = short(report_provenance(report)["commit"]) + ("" if not unfit(report)
                                                           else " (not a clean run)")
    fig.suptitle(f"hbroker vs Mosquitto — {report['date']}, {m['cpu_count']} CPUs, commit "
                 f"{commit}, medians of {plural(plan['repeats'], 'repetition')}",
                 fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


# == main ====================================================================================

def ensure_tools() -> None:
    for tool in (LOADGEN, RELAY):
        if not tool.exists():
            subprocess.run(["make", "-s", "-C", str(tool.parent)], check=True)


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = IDLE_CONNECTIONS * 2 + 1000
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def render(report: dict[str, Any], md_path: Path | None, png: Path | None) -> str:
    chart_ok = chart(report, png) if png is not None else False
    rel = None
    if chart_ok and png is not None and md_path is not None:
        rel = os.path.relpath(png, md_path.parent)
    section = markdown(report, rel)
    if md_path is not None:
        write_section(md_path, SECTION, section)
    return section


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="one short repetition of each scenario, a smoke test: outputs in "
                             "a temporary directory, RESULTS.md left alone")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="a local experiment: run although the code or the benchmarks "
                             "have uncommitted changes; outputs in a temporary directory, "
                             "never the committed results")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument("--brokers", default=",".join(BROKERS),
                        help=f"comma-separated subset of {','.join(BROKERS)}")
    parser.add_argument("--repeats", type=int, default=None,
                        help="repetitions (default 3; 1 with --quick)")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds measured per load run (default 2; 1 with --quick); the "
                             "latency runs last 1.5×, the idle CPU window 2× this")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds of load before measuring (default 0.5; 0.3 with --quick)")
    parser.add_argument("--amqtt-repeats", type=int, default=1,
                        help="repetitions in which amqtt runs (default 1: the first)")
    parser.add_argument("--amqtt-limit", type=float, default=20.0,
                        help="seconds an amqtt run may take before it is stopped (20)")
    parser.add_argument("--output", type=Path, default=None, help="JSON results file")
    parser.add_argument("--chart", type=Path, default=None, help="PNG chart")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="Markdown file whose section is replaced (default bench/RESULTS.md;"
                             " not written with --quick unless given)")
    parser.add_argument("--render", type=Path, default=None, metavar="JSON",
                        help="run nothing: rewrite the Markdown section and the chart from a "
                             "results file (the committed RESULTS.md only from "
                             "bench/results/latest.json)")
    args = parser.parse_args()

    if args.render is not None:
        report = json.loads(args.render.read_text())
        md = args.markdown or RESULTS_MD
        png = args.chart or RESULTS_PNG
        try:
            check_render(args.render, RESULTS_JSON, [md, png], "--markdown, --chart")
        except BenchError as exc:
            print(f"compare.py: {exc}", file=sys.stderr)
            return 2
        print(render(report, md, png))
        if md.resolve() == RESULTS_MD:
            return readme.readme_after_run()
        return 0

    scenarios = [s for s in args.scenarios.split(",") if s]
    brokers = [b for b in args.brokers.split(",") if b]
    for s in scenarios:
        if s not in SCENARIOS:
            parser.error(f"unknown scenario {s!r}")
    unpinnable = [s for s in scenarios if SCENARIOS[s].cpus and (
        shutil.which("taskset") is None or max(SCENARIOS[s].cpus) >= len(usable_cpus()))]
    for s in unpinnable:
        print(f"{s} skipped: it needs taskset and {max(SCENARIOS[s].cpus) + 1} CPUs",
              file=sys.stderr)
    scenarios = [s for s in scenarios if s not in unpinnable]
    for b in brokers:
        if b not in BROKERS:
            parser.error(f"unknown broker {b!r}")
    q = args.quick
    scratch = q or args.allow_dirty
    plan = Plan(scenarios=scenarios, brokers=brokers,
                repeats=args.repeats or (1 if q else 3),
                duration=args.duration or (1.0 if q else 2.0),
                warmup=args.warmup if args.warmup is not None else (0.3 if q else 0.5),
                amqtt_repeats=args.amqtt_repeats, amqtt_limit=args.amqtt_limit,
                idle_settle=0.5 if q else 1.0, retained=RETAINED // 5 if q else RETAINED,
                quick=q)
    tmp = scratch_dir("hbroker-bench-compare-quick" if q else "hbroker-bench-compare")
    output = (args.output or (tmp / "latest.json" if scratch else RESULTS_JSON)).resolve()
    png = (args.chart or (tmp / "compare.png" if scratch else RESULTS_PNG)).resolve()
    md_path = args.markdown or (None if scratch else RESULTS_MD)
    start = provenance()
    try:
        check_outputs([output, png, md_path], start, quick=q)
    except BenchError as exc:
        print(f"compare.py: {exc}", file=sys.stderr)
        return 2

    ensure_tools()
    raise_fd_limit()
    skipped: dict[str, str] = {}
    if "mosquitto" in brokers and mosquitto_binary() is None:
        skipped["mosquitto"] = "not installed (run tools/install-bench-deps.sh)"
    if "amqtt" in brokers and amqtt_binary() is None:
        skipped["amqtt"] = f"not installed in {AMQTT_VENV.relative_to(ROOT)} " \
                           "(tools/install-bench-deps.sh could not install it)"
    for b, why in skipped.items():
        print(f"{b} skipped: {why}", file=sys.stderr)
    active = [b for b in brokers if b not in skipped]

    started = time.monotonic()
    runs: list[dict[str, Any]] = []
    todo = [(rep, sc, b) for rep in range(plan.repeats) for sc in scenarios
            for b in rotate([b for b in active if b in SCENARIOS[sc].brokers
                             and (b != "amqtt" or rep < plan.amqtt_repeats)], rep)]
    for i, (rep, sc, b) in enumerate(todo):
        t0 = time.monotonic()
        try:
            run = run_one(SCENARIOS[sc], b, plan)
        except BenchError as exc:
            run = {"scenario": sc, "broker": b, "ok": False, "error": str(exc)[:1500],
                   "metrics": {}}
        run = {"repeat": rep, **run, "wall_s": round(time.monotonic() - t0, 2)}
        runs.append(run)
        print(progress(i + 1, len(todo), run), file=sys.stderr, flush=True)
    wall = time.monotonic() - started

    prov = settle(start)
    status = 0
    try:
        check_outputs([output, png, md_path], prov, quick=q)
    except BenchError as exc:  # the tree changed during the run: keep the runs elsewhere
        print(f"compare.py: {exc}", file=sys.stderr)
        output, png, md_path, status = tmp / "latest.json", tmp / "compare.png", None, 1
    machine = machine_info(prov)
    plan_dict = {**plan.__dict__, "skipped": skipped, "window": WINDOW,
                 "client_bound": CLIENT_BOUND,
                 "max_inflight": MAX_INFLIGHT, "max_queued": MAX_QUEUED, "payload": PAYLOAD,
                 "idle_connections": IDLE_CONNECTIONS,
                 "amqtt_idle_connections": AMQTT_IDLE_CONNECTIONS, "rate": RATE,
                 "loadgen_args": {n: list(SCENARIOS[n].args) for n in scenarios}}
    report = {
        "benchmark": "compare",
        "output": str(output.relative_to(ROOT) if output.is_relative_to(ROOT) else output),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "command": "`" + " ".join(["bench/compare.py", *sys.argv[1:]]) + "`",
        "wall_s": wall,
        "machine": machine,
        "provenance": prov.as_dict(),
        "plan": plan_dict,
        "summary": summarize(plan_dict, runs),
        "runs": runs,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(dump(report))
    section = render(report, md_path, png)
    print(section)
    print(f"results: {report['output']}, {png}{f', {md_path}' if md_path else ''}; "
          f"took {wall:.0f} s ({wall / 60:.1f} min)", file=sys.stderr)
    if md_path is not None and Path(md_path).resolve() == RESULTS_MD and output == RESULTS_JSON:
        status = readme.readme_after_run() or status
    bad = [r for r in runs if not r["ok"] and r["broker"] != "amqtt"]
    if bad:
        print(f"{len(bad)} run(s) failed (see the report)", file=sys.stderr)
        return 1
    return status


def dump(report: dict[str, Any]) -> str:
    """JSON with one line per run, so that the file stays small and diffs stay readable."""
    head = json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=1)
    runs = ",\n".join("  " + json.dumps(r, separators=(",", ":")) for r in report["runs"])
    return head[:-2] + ',\n "runs": [\n' + runs + "\n ]\n}\n"


def rotate(items: list[str], k: int) -> list[str]:
    if not items:
        return items
    k %= len(items)
    return items[k:] + items[:k]


def progress(i: int, n: int, run: dict[str, Any]) -> str:
    m = run.get("metrics", {})
    head = f"[{i:3d}/{n}] rep {run['repeat'] + 1} {run['scenario']:<12} {run['broker']:<10}"
    if not run["ok"]:
        return f"{head} FAILED: {run.get('error', '')[:300]}"
    if "rss_per_1000_mb" in m:
        body = (f"{m['rss_per_1000_mb']:6.2f} MB/1000 conn, CPU {m.get('cpu_percent', 0):5.2f} %"
                f", connect {m['connect_s']:.2f} s")
    elif "delivery_s" in m:
        body = f"fill {m['fill_s']:.2f} s, delivery {m['delivery_s']:.3f} s"
    elif SCENARIOS[run["scenario"]].kind == "latency":
        body = f"p50 {m.get('p50', 0):,.0f} p99 {m.get('p99', 0):,.0f} us"
    else:
        body = f"{m.get('rate', 0):>11,.0f} deliveries/s"
    return (f"{head} {body}  CPU: broker {m.get('broker_cpu', float('nan')) * 100:3.0f} %, "
            f"client {m.get('client_cpu', float('nan')) * 100:3.0f} %, "
            f"others {m.get('other_cpu', float('nan')) * 100:3.0f} %, "
            f"irq {m.get('irq_cpu', float('nan')) * 100:3.0f} %  ({run['wall_s']:.1f} s)")


if __name__ == "__main__":
    sys.exit(main())
