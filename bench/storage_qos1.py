#!/usr/bin/env python3
"""Durable storage benchmark: QoS 1 throughput of hbroker per storage configuration.

    .venv/bin/python bench/storage_qos1.py [--duration S] [--repeats N] [--quick]

For every measurement a fresh `hbroker serve -c <config>` process is started in a temporary
directory on a free port (log level warning, `limits.max_inflight = 1000` so that the
broker's Receive Maximum admits the publisher's window), and a load generator in this process
(asyncio + uvloop over raw sockets, packets from `hbroker_ext.codec`) drives it:

- one or more publisher/subscriber pairs (MQTT 5.0). Each publisher sends QoS 1 PUBLISHes of
  64 bytes in a closed loop: at most `--window` (100) unacknowledged PUBLISHes. The PUBLISHes
  are encoded once per packet id before the run, so sending is a list slice and a join. Each
  subscriber is subscribed at QoS 1 (to `bench/#`, or `bench/<i>/#` with several pairs) and
  acknowledges every message at once.
- scenario "durable": the subscriber connects with Clean Start 0 and Session Expiry Interval
  3600, so in `sync` mode every PUBLISH is committed to storage before its PUBACK.
- scenario "clean": the subscriber's session ends with its connection: nothing is stored.

After `--warmup` seconds the messages received by the subscribers are counted for
`--duration` seconds. Then the publishers stop, and the run fails loudly unless every PUBLISH
was acknowledged with reason code 0 and each subscriber received exactly as many messages as
its publisher had acknowledged (nothing lost, nothing twice).

Configurations (the `[storage]` section) are alternated within each repetition, so that a
slow phase of a noisy machine hits all of them; the report gives medians over repetitions and
ratios to `memory`. Results: `bench/results/storage.json` (raw runs, medians, ratios, machine)
and the section "## Durable storage: QoS 1 throughput" of `bench/RESULTS.md`, written only
from a work tree without uncommitted changes to the code or the benchmarks (`--quick` and
`--allow-dirty` runs write to the temporary directory instead).

PostgreSQL runs as a throwaway server (`tests/pg_server.py`) on this machine, with its
durability settings left on (fsync, synchronous_commit, full_page_writes), reached over TCP on
127.0.0.1; without PostgreSQL installed the postgres row is skipped and says why.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import readme  # noqa: E402  (bench/readme.py: the README block)
import uvloop
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
    write_section,
)
from hbroker_ext.codec import (
    CONNACK,
    PUBACK,
    PUBLISH,
    RECEIVE_MAXIMUM,
    SESSION_EXPIRY_INTERVAL,
    SUBACK,
    Connect,
    Disconnect,
    Framer,
    Puback,
    Publish,
    Subscribe,
    Subscription,
    encode,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS_JSON = ROOT / "bench" / "results" / "storage.json"
RESULTS_MD = ROOT / "bench" / "RESULTS.md"
SECTION = "## Durable storage: QoS 1 throughput"

MAX_INFLIGHT = 1000  # limits.max_inflight of the bench broker: its Receive Maximum
PAYLOAD_SIZE = 64
SESSION_EXPIRY = 3600

# name -> [storage] section (postgres gets its dsn when the server is up)
# Every option that matters is spelled out, so that a change of a default does not change what
# a row measures.
CONFIGS: dict[str, dict[str, Any]] = {
    "memory": {"backend": "memory"},
    "sqlite-sync": {"backend": "sqlite", "mode": "sync", "fsync": True},
    "postgres-sync": {"backend": "postgres", "mode": "sync", "fsync": True},
    "sqlite-periodic": {"backend": "sqlite", "mode": "periodic", "flush_interval_ms": 1000,
                        "fsync": True},
    "sqlite-sync-nofsync": {"backend": "sqlite", "mode": "sync", "fsync": False},
    "postgres-sync-nofsync": {"backend": "postgres", "mode": "sync", "fsync": False},
}
CONFIG_NOTES = {
    "memory": "`backend = \"memory\"`: nothing stored (the reference)",
    "sqlite-sync": "`backend = \"sqlite\"`, `mode = \"sync\"`, `fsync = true`: every group "
                   "commit flushed to the disk (SQLite `synchronous=FULL`)",
    "postgres-sync": "`backend = \"postgres\"`, `mode = \"sync\"`, `fsync = true` "
                     "(`synchronous_commit=on`); local server over TCP",
    "sqlite-periodic": "`backend = \"sqlite\"`, `mode = \"periodic\"`, "
                       "`flush_interval_ms = 1000`, `fsync = true`",
    "sqlite-sync-nofsync": "`backend = \"sqlite\"`, `mode = \"sync\"`, `fsync = false` "
                           "(`synchronous=NORMAL`)",
    "postgres-sync-nofsync": "`backend = \"postgres\"`, `mode = \"sync\"`, `fsync = false` "
                             "(`synchronous_commit=off`)",
}

# name -> (durable subscriber, pairs)
SCENARIOS: dict[str, tuple[bool, int]] = {
    "durable": (True, 1),
    "clean": (False, 1),
    "durable-4": (True, 4),
    "clean-4": (False, 4),
}


# == the load generator ======================================================================

PUBACKS = [b""] + [encode(Puback(pid), 5) for pid in range(1, 65536)]


class Client(asyncio.Protocol):
    """One MQTT 5.0 connection over a raw socket; packets decoded by the Cython framer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str) -> None:
        self.loop = loop
        self.name = name
        self.framer = Framer(protocol_version=5)
        self.transport: asyncio.Transport | None = None
        self.connack: asyncio.Future = loop.create_future()
        self.suback: asyncio.Future = loop.create_future()
        self.closed: asyncio.Future = loop.create_future()
        self.errors: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)
        for fut in (self.connack, self.suback):
            if not fut.done():
                fut.set_exception(BenchError(f"{self.name}: connection lost ({exc})"))
                fut.exception()  # not an error if nobody waits for it any more

    def data_received(self, data: bytes) -> None:
        self.handle(self.framer.feed(data))

    def handle(self, packets: list) -> None:
        for p in packets:
            self.control(p)

    def control(self, p: Any) -> None:
        t = p.packet_type
        if t == CONNACK:
            self.connack.set_result(p)
        elif t == SUBACK:
            self.suback.set_result(p)
        else:
            self.errors.append(f"unexpected {p!r}")

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def mqtt_connect(self, clean_start: bool, expiry: int) -> Any:
        props = {SESSION_EXPIRY_INTERVAL: expiry} if expiry else None
        self.write(encode(Connect(self.name, protocol_version=5, clean_start=clean_start,
                                  keepalive=0, properties=props), 5))
        connack = await asyncio.wait_for(self.connack, 10)
        if connack.reason_code != 0:
            raise BenchError(f"{self.name}: CONNACK {connack.reason_code:#x}")
        return connack

    async def mqtt_disconnect(self, props: dict | None = None) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.write(encode(Disconnect(0, props), 5))
        self.transport.close()
        await asyncio.wait_for(asyncio.shield(self.closed), 5)


class Subscriber(Client):
    def __init__(self, loop: asyncio.AbstractEventLoop, name: str) -> None:
        super().__init__(loop, name)
        self.received = 0
        self.dups = 0

    def handle(self, packets: list) -> None:
        acks = []
        received = 0
        for p in packets:
            if p.packet_type == PUBLISH:
                received += 1
                if p.dup:
                    self.dups += 1
                acks.append(PUBACKS[p.packet_id])
            else:
                self.control(p)
        if received:
            self.received += received
            self.transport.write(b"".join(acks))  # type: ignore[union-attr]

    async def subscribe(self, topic_filter: str) -> None:
        self.write(encode(Subscribe(1, [Subscription(topic_filter, qos=1)]), 5))
        suback = await asyncio.wait_for(self.suback, 10)
        if list(suback.reason_codes) != [1]:
            raise BenchError(f"{self.name}: SUBACK {list(suback.reason_codes)}")


class Publisher(Client):
    def __init__(self, loop: asyncio.AbstractEventLoop, name: str, topic: str,
                 window: int) -> None:
        super().__init__(loop, name)
        self.window = window
        # One encoded PUBLISH per packet id: table[i] carries packet id i + 1.
        template = encode(Publish(topic, bytes(PAYLOAD_SIZE), qos=1, packet_id=1), 5)
        pid_at = len(template) - PAYLOAD_SIZE - 3  # packet id, then properties length 0
        assert template[pid_at:pid_at + 3] == b"\x00\x01\x00"
        head, tail = template[:pid_at], template[pid_at + 2:]
        self.table = [head + pid.to_bytes(2, "big") + tail for pid in range(1, 65536)]
        self.outstanding = bytearray(65536)  # 1 while packet id i is unacknowledged
        self.next = 0  # index into table
        self.inflight = 0
        self.sent = 0
        self.acked = 0
        self.running = False
        self.bad_acks: dict[int, int] = {}  # reason code -> count
        self.unknown_acks = 0

    def handle(self, packets: list) -> None:
        outstanding = self.outstanding
        n = 0
        for p in packets:
            if p.packet_type == PUBACK:
                pid = p.packet_id
                if outstanding[pid]:
                    outstanding[pid] = 0
                    n += 1
                    if p.reason_code:
                        self.bad_acks[p.reason_code] = self.bad_acks.get(p.reason_code, 0) + 1
                else:
                    self.unknown_acks += 1
            else:
                self.control(p)
        if n:
            self.acked += n
            self.inflight -= n
            if self.running:
                self.fill()

    def fill(self) -> None:
        k = self.window - self.inflight
        if k <= 0:
            return
        i = self.next
        end = i + k
        if end <= 65535:
            chunk = self.table[i:end]
            self.next = end if end < 65535 else 0
        else:
            end -= 65535
            chunk = self.table[i:] + self.table[:end]
            self.next = end
        outstanding = self.outstanding
        for j in range(i, i + k):
            pid = j % 65535 + 1
            if outstanding[pid]:
                raise BenchError(f"{self.name}: packet id {pid} reused while unacknowledged")
            outstanding[pid] = 1
        self.inflight += k
        self.sent += k
        self.transport.write(b"".join(chunk))  # type: ignore[union-attr]

    async def receive_maximum(self) -> int:
        connack = await self.mqtt_connect(True, 0)
        return (connack.properties or {}).get(RECEIVE_MAXIMUM, 65535)


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values) - idle) / tick, sum(values) / tick


async def drive(port: int, broker_pid: int, durable: bool, pairs: int, window: int,
                warmup: float, duration: float, profile: Path | None = None,
                server_pids: list[int] | None = None) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    tag = f"{'d' if durable else 'c'}{pairs}-{os.getpid()}"
    subs: list[Subscriber] = []
    pubs: list[Publisher] = []
    for i in range(pairs):
        sub = Subscriber(loop, f"bench-sub-{tag}-{i}")
        await loop.create_connection(lambda s=sub: s, "127.0.0.1", port)
        connack = await sub.mqtt_connect(not durable, SESSION_EXPIRY if durable else 0)
        if connack.session_present:
            raise BenchError(f"{sub.name}: a session was already present")
        await sub.subscribe("bench/#" if pairs == 1 else f"bench/{i}/#")
        subs.append(sub)
    for i in range(pairs):
        pub = Publisher(loop, f"bench-pub-{tag}-{i}", f"bench/{i}/data", window)
        await loop.create_connection(lambda p=pub: p, "127.0.0.1", port)
        receive_maximum = await pub.receive_maximum()
        if window > receive_maximum:
            raise BenchError(f"window {window} above the broker's Receive Maximum "
                             f"{receive_maximum} (limits.max_inflight)")
        pubs.append(pub)

    for pub in pubs:
        pub.running = True
        pub.fill()
    await asyncio.sleep(warmup)
    spy = None
    if profile is not None:  # py-spy samples the broker over the measured interval
        spy = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(broker_pid),
            "--duration", str(max(1, round(duration))), "--rate", "200", "--threads",
            "--nonblocking", "--format", "raw", "-o", str(profile),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    r0, a0 = sum(s.received for s in subs), sum(p.acked for p in pubs)
    server_pids = server_pids or []
    b0, c0, m0 = cpu_seconds(broker_pid), time.process_time(), machine_busy()
    s0 = sum(cpu_seconds(pid) for pid in server_pids)
    t0 = time.perf_counter()
    await asyncio.sleep(duration)
    t1 = time.perf_counter()
    r1, a1 = sum(s.received for s in subs), sum(p.acked for p in pubs)
    b1, c1, m1 = cpu_seconds(broker_pid), time.process_time(), machine_busy()
    s1 = sum(cpu_seconds(pid) for pid in server_pids)
    for pub in pubs:
        pub.running = False

    # Drain: every PUBLISH acknowledged, every acknowledged message received.
    deadline = time.monotonic() + 30
    progress = (-1, -1)
    stalled_since = time.monotonic()
    while any(p.inflight for p in pubs) or any(
            s.received < p.acked for s, p in zip(subs, pubs, strict=True)):
        now = time.monotonic()
        counts = (sum(p.acked for p in pubs), sum(s.received for s in subs))
        if counts != progress:
            progress, stalled_since = counts, now
        if now > deadline or now - stalled_since > 3:
            raise BenchError("drain stalled (messages lost?): " + ", ".join(
                f"{p.name} sent {p.sent} acked {p.acked}, {s.name} received {s.received}"
                for s, p in zip(subs, pubs, strict=True)))
        for c in (*subs, *pubs):
            if c.closed.done():
                raise BenchError(f"{c.name}: connection closed by the broker during the run")
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # anything arriving now would be a duplicate
    problems = []
    for s, p in zip(subs, pubs, strict=True):
        if s.received != p.acked or p.acked != p.sent:
            problems.append(f"{p.name} sent {p.sent}, acked {p.acked}; "
                            f"{s.name} received {s.received}")
        if p.bad_acks or p.unknown_acks:
            problems.append(f"{p.name}: PUBACK reason codes {p.bad_acks}, "
                            f"{p.unknown_acks} unknown packet ids")
        if s.dups:
            problems.append(f"{s.name}: {s.dups} PUBLISHes with DUP set")
        for c in (s, p):
            if c.errors:
                problems.append(f"{c.name}: {c.errors[:3]}")
    if problems:
        raise BenchError("; ".join(problems))
    if spy is not None:
        await spy.wait()

    for sub in subs:  # a durable session ends here rather than staying in the broker
        await sub.mqtt_disconnect({SESSION_EXPIRY_INTERVAL: 0} if durable else None)
    for pub in pubs:
        await pub.mqtt_disconnect()
    elapsed = t1 - t0
    busy = m1[0] - m0[0]
    total = m1[1] - m0[1]
    machine = busy / total * (os.cpu_count() or 1) if total else float("nan")
    broker_cpu = (b1 - b0) / elapsed
    client_cpu = (c1 - c0) / elapsed
    server_cpu = (s1 - s0) / elapsed
    return {
        "msgs_per_s": (r1 - r0) / elapsed,
        "acked_per_s": (a1 - a0) / elapsed,
        "measured_s": elapsed,
        "messages": sum(p.acked for p in pubs),
        "broker_cpu": broker_cpu,
        "broker_cpu_us_per_msg": broker_cpu / ((r1 - r0) / elapsed) * 1e6 if r1 > r0
        else float("nan"),
        "client_cpu": client_cpu,
        "postgres_cpu": server_cpu if server_pids else None,
        # everything else running on the machine meanwhile (other users, the kernel)
        "other_cpu": machine - broker_cpu - client_cpu - server_cpu,
        "machine_cpu": machine,
    }


# == the broker process ======================================================================

def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


class Broker(ServerProcess):
    """`hbroker serve` in a temporary directory on a free port."""

    def __init__(self, storage: dict[str, Any], workdir: Path) -> None:
        port = free_port()
        sections = {
            "limits": {"max_inflight": MAX_INFLIGHT},
            "logging": {"level": "warning"},
            "storage": {**storage, "path": "data/hbroker.db"} if storage["backend"] == "sqlite"
            else storage,
        }
        lines = ["[[listeners]]", 'type = "tcp"', 'host = "127.0.0.1"', f"port = {port}"]
        for name, values in sections.items():
            lines += ["", f"[{name}]", *(f"{k} = {_toml(v)}" for k, v in values.items())]
        config = workdir / "hbroker.toml"
        config.write_text("\n".join(lines) + "\n")
        super().__init__("broker", [*hbroker_command(), "serve", "-c", str(config)], workdir,
                         port, env=hbroker_env())


# == PostgreSQL ===============================================================================

class Postgres:
    """A throwaway server from tests/pg_server.py, with PostgreSQL's durability settings (the
    test helper turns fsync off to make tests fast; a benchmark of durable storage must not)."""

    def __init__(self) -> None:
        sys.path.insert(0, str(ROOT))
        try:
            import asyncpg  # noqa: F401  (the backend's driver)

            from tests import pg_server
        finally:
            sys.path.remove(str(ROOT))
        self.mod = pg_server
        self.server = pg_server.PostgresServer()
        self.databases = 0
        try:
            self._start()
            self.version = self.server.psql("SHOW server_version").strip()
            self.settings = {name: self.server.psql(f"SHOW {name}").strip() for name in
                             ("fsync", "full_page_writes", "wal_sync_method", "shared_buffers")}
        except BaseException:
            self.server.cleanup()
            raise

    def _start(self) -> None:
        server = self.server
        for attempt in range(5):
            port = self.mod.free_port()
            options = shlex.join([
                "-c", "listen_addresses=127.0.0.1", "-p", str(port), "-k", str(server.sockets),
                "-c", "max_connections=30", "-c", "shared_buffers=128MB",
                "-c", "dynamic_shared_memory_type=mmap",
            ])
            try:
                server._run("pg_ctl", "-D", str(server.data), "-l", str(server.logfile), "-w",
                            "-t", "60", "-o", options, "start", timeout=90)
            except RuntimeError:
                if attempt == 4:
                    raise
                time.sleep(0.2)
                continue
            server.port = port
            server.running = True
            return

    def new_database(self) -> tuple[str, str]:
        self.databases += 1
        name = f"bench{self.databases}"
        return name, self.server.create_database(name)

    def pids(self) -> list[int]:
        """The server's processes: the postmaster and its children (the backends)."""
        try:
            postmaster = int((self.server.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        pids = [postmaster]
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster:
                    pids.append(int(entry.name))
        return pids

    def drop(self, name: str) -> None:
        self.server.drop_database(name)

    def close(self) -> None:
        self.server.cleanup()


# == the runs =================================================================================

@dataclass
class Plan:
    configs: list[str]
    scenarios: list[str]
    repeats: int
    warmup: float
    duration: float
    window: int
    skipped: dict[str, str] = field(default_factory=dict)


def run_one(config: str, scenario: str, plan: Plan, pg: Postgres | None,
            profile: Path | None = None) -> dict[str, Any]:
    storage = dict(CONFIGS[config])
    durable, pairs = SCENARIOS[scenario]
    database = None
    with tempfile.TemporaryDirectory(prefix="hbroker-bench-") as tmp:
        if storage["backend"] == "postgres":
            assert pg is not None
            database, storage["dsn"] = pg.new_database()
        broker = Broker(storage, Path(tmp))
        try:
            result = uvloop.run(drive(broker.port, broker.proc.pid, durable, pairs, plan.window,
                                      plan.warmup, plan.duration, profile,
                                      pg.pids() if database is not None and pg else None))
        except BaseException as exc:
            broker.stop()
            log = broker.log()
            if isinstance(exc, BenchError) and log:
                raise BenchError(f"{exc}\n--- broker log ---\n{log}") from exc
            raise
        if broker.proc.poll() is not None:
            raise BenchError(f"broker died during the run:\n{broker.log()}")
        broker.stop()
        log = broker.log()
        if broker.proc.returncode != 0:
            raise BenchError(f"broker exited with {broker.proc.returncode}:\n{log}")
        if database is not None and pg is not None:
            pg.drop(database)
    result["broker_log_lines"] = len(log.splitlines())
    return result


def summarize(plan: Plan, runs: list[dict[str, Any]]) -> dict[str, Any]:
    medians: dict[str, dict[str, Any]] = {}
    ratios: dict[str, dict[str, float]] = {}
    paired: dict[str, dict[str, float]] = {}
    for scenario in plan.scenarios:
        medians[scenario] = {}
        for config in plan.configs:
            mine = [r for r in runs if r["scenario"] == scenario and r["config"] == config]
            if not mine:
                continue
            medians[scenario][config] = {
                key: median([r[key] for r in mine])
                for key in ("msgs_per_s", "broker_cpu", "broker_cpu_us_per_msg", "client_cpu",
                            "other_cpu", "machine_cpu")}
            medians[scenario][config]["runs"] = len(mine)
        base = medians[scenario].get("memory", {}).get("msgs_per_s")
        ratios[scenario] = {c: m["msgs_per_s"] / base for c, m in medians[scenario].items()} \
            if base else {}
        # The ratio within each repetition, then its median: robust to slow phases.
        paired[scenario] = {}
        for config in medians[scenario]:
            per_rep = []
            for rep in range(plan.repeats):
                a = [r for r in runs if (r["scenario"], r["config"], r["repeat"]) ==
                     (scenario, config, rep)]
                b = [r for r in runs if (r["scenario"], r["config"], r["repeat"]) ==
                     (scenario, "memory", rep)]
                if a and b:
                    per_rep.append(a[0]["msgs_per_s"] / b[0]["msgs_per_s"])
            if per_rep:
                paired[scenario][config] = median(per_rep)
    bound = {s: client_bound(medians[s], CLIENT_BOUND) for s in plan.scenarios}
    return {"medians": medians, "ratios": ratios, "paired_ratios": paired,
            "client_bound": {"threshold": CLIENT_BOUND,
                             "runs": {s: b for s, b in bound.items() if b}}}


def bound_runs(report: dict[str, Any], scenario: str) -> dict[str, float]:
    """The configurations of a scenario whose load generator (this script's process) used at
    least the plan's share of a core, median over the repetitions."""
    threshold = report["plan"].get("client_bound", CLIENT_BOUND)
    return client_bound(report["summary"]["medians"].get(scenario, {}), threshold)


def machine_info(pg: Postgres | None, prov: Provenance) -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        hb = subprocess.run([sys.executable, "-m", "hbroker", "--version"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    except OSError:
        hb = ""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "uvloop": uvloop.__version__,
        "hbroker": hb,
        "commit": prov.commit,
        "postgres": pg.version if pg is not None else None,
        "postgres_settings": pg.settings if pg is not None else None,
    }
    return info


def fmt_rate(v: float) -> str:
    return "–" if v != v else f"{v:,.0f}"


def markdown(report: dict[str, Any]) -> str:
    plan = report["plan"]
    m = report["machine"]
    summary = report["summary"]
    banner = provenance_banner(report)
    lines = [
        SECTION,
        "",
        *([banner, ""] if banner else []),
        f"Written by {report['command']} on {report['date']} "
        f"(took {report['wall_s'] / 60:.1f} min), measuring commit "
        f"`{short(report_provenance(report)['commit'])}`. Machine: {m['cpu_count']} CPUs "
        f"({m['cpu_model']}), "
        f"{m['platform']}; Python {m['python']}, SQLite {m['sqlite']}, "
        f"PostgreSQL {m['postgres'] or 'not run'}. "
        f"Raw runs: `{report['output']}`.",
        "",
        f"QoS 1, {PAYLOAD_SIZE}-byte payloads, MQTT 5.0. Each publisher keeps at most "
        f"{plan['window']} PUBLISHes unacknowledged (the broker runs with "
        f"`limits.max_inflight = {MAX_INFLIGHT}` so that its Receive Maximum admits them; the "
        f"default, 20, would cap the window). Messages per second received by the subscribers, "
        f"counted for {plan['duration']:g} s after {plan['warmup']:g} s of warm-up; median of "
        f"{plan['repeats']} repetitions, configurations alternated within each repetition, a "
        f"fresh broker (and database) per run. Every run checked that each subscriber received "
        f"exactly the messages its publisher had acknowledged.",
        "",
        "- **durable**: the subscriber has a persistent session (Clean Start 0, Session Expiry "
        f"Interval {SESSION_EXPIRY}), so with a durable backend every message is stored and, in "
        "`sync` mode, committed before its PUBACK (commits grouped per loop iteration).",
        "- **clean**: the subscriber's session ends with its connection; nothing needs storing.",
        "- *× memory*: median rate divided by the median rate of `memory` in the same scenario"
        + ("; ‡: a client-bound ratio (below the tables)."
           if any(bound_runs(report, s) for s in plan["scenarios"]) else "."),
        "",
    ]
    for pairs in sorted({SCENARIOS[s][1] for s in plan["scenarios"]}):
        names = [s for s in plan["scenarios"] if SCENARIOS[s][1] == pairs]
        title = "1 publisher → 1 subscriber" if pairs == 1 else \
            f"{pairs} publisher/subscriber pairs (topics `bench/<i>/…`, one client process)"
        lines += [f"**{title}**", ""]
        head = "| configuration |"
        rule = "|---|"
        for s in names:
            kind = "durable" if SCENARIOS[s][0] else "clean"
            head += f" {kind} msg/s | × memory | µs/msg |"
            rule += "---:|---:|---:|"
        lines += [head, rule]
        for config in plan["configs"]:
            if config in plan["skipped"]:
                continue
            row = f"| {config} |"
            for s in names:
                med = summary["medians"].get(s, {}).get(config)
                if med is None:
                    row += " – | – | – |"
                    continue
                ratio = summary["ratios"].get(s, {}).get(config, float("nan"))
                mark = " ‡" if config != "memory" and ratio_bound(
                    bound_runs(report, s), config, "memory") else ""
                row += (f" {fmt_rate(med['msgs_per_s'])} | {ratio:.2f}{mark} |"
                        f" {med['broker_cpu_us_per_msg']:.1f} |")
            lines.append(row)
        lines.append("")
    lines += ["Configurations (the `[storage]` section):", ""]
    for config in plan["configs"]:
        note = CONFIG_NOTES[config]
        if config in plan["skipped"]:
            note += f" — **skipped**: {plan['skipped'][config]}"
        lines.append(f"- `{config}`: {note}")
    lines.append("")
    if m.get("postgres_settings"):
        settings = ", ".join(f"{k}={v}" for k, v in m["postgres_settings"].items())
        lines += [f"PostgreSQL server: {settings}, data directory on the same disk as the "
                  "SQLite file; the broker's connection sets `synchronous_commit` from hbroker's "
                  "`fsync`.", ""]
    others = sorted(r["other_cpu"] for r in report["runs"])
    lines += [
        "*µs/msg*: CPU time of the broker process (all its threads, the SQLite writer "
        "included) per message received, median; less sensitive to a busy machine than the "
        "rate. The load generator and, for postgres, the PostgreSQL server run on the same "
        "machine (their CPU use, and the broker's, per run: in the JSON).",
        "",
    ]
    if others:
        lines += [
            f"Other processes used {median(others) * 100:.0f} % of a CPU (median over the "
            f"runs; from {max(0.0, others[0]) * 100:.0f} to {others[-1] * 100:.0f} %) while "
            f"this ran on "
            f"{m['cpu_count']} CPUs.",
            "",
        ]
    lines += [client_bound_paragraph(report), ""]
    return "\n".join(lines)


def client_bound_paragraph(report: dict[str, Any]) -> str:
    """Where the load generator was the bound, from the data (see benchlib.CLIENT_BOUND)."""
    threshold = report["plan"].get("client_bound", CLIENT_BOUND)
    scenarios = report["plan"]["scenarios"]
    flagged = {s: bound_runs(report, s) for s in scenarios}
    flagged = {s: b for s, b in flagged.items() if b}
    if not flagged:
        top = max((m["client_cpu"] for s in scenarios
                   for m in report["summary"]["medians"].get(s, {}).values()
                   if m.get("client_cpu") == m.get("client_cpu")), default=float("nan"))
        return (f"The load generator (this script, one process) used at most {top * 100:.0f} % "
                f"of a core (median per row): no row was client-bound (from "
                f"{threshold * 100:.0f} %).")
    listed = "; ".join(f"{s}: " + ", ".join(f"{c} {v * 100:.0f} %" for c, v in b.items())
                       for s, b in flagged.items())
    return (f"‡ *Client-bound*: the load generator (this script, one process) used ≥ "
            f"{threshold * 100:.0f} % of a core (median of the repetitions) in {listed}. There "
            "the client, not only the broker, set the rate, so that rate understates the "
            "broker: a configuration's × memory is a lower bound when its own runs were "
            "client-bound, an upper bound when `memory`'s were, and says little when both "
            "were.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds measured per run (default 2; 1 with --quick)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds of load before measuring (default 0.75; 0.5 with --quick)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="repetitions of every configuration (default 3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="one short repetition, a smoke test: the JSON goes to the "
                             "temporary directory, the repository's results are left alone")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="a local experiment: run although the code or the benchmarks "
                             "have uncommitted changes; outputs in the temporary directory, "
                             "never the committed results")
    parser.add_argument("--window", type=int, default=100,
                        help="unacknowledged PUBLISHes per publisher (default 100)")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"comma-separated subset of {','.join(CONFIGS)}")
    parser.add_argument("--scenarios", default="durable,durable-4,clean",
                        help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument("--output", type=Path, default=None, help="JSON results file")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="Markdown file whose section is replaced (default bench/RESULTS.md;"
                             " not written with --quick unless given)")
    parser.add_argument("--py-spy", type=Path, default=None, metavar="DIR",
                        help="profile the broker with py-spy (installed in the virtualenv) over "
                             "each measured interval: collapsed stacks in DIR/<scenario>-"
                             "<config>-<repetition>.txt (the profiler slows the broker a little)")
    parser.add_argument("--render", type=Path, default=None, metavar="JSON",
                        help="run nothing: rewrite the Markdown section from a results file "
                             "(the committed RESULTS.md only from bench/results/storage.json)")
    args = parser.parse_args()

    if args.render is not None:
        report = json.loads(args.render.read_text())
        md = args.markdown or RESULTS_MD
        try:
            check_render(args.render, RESULTS_JSON, [md], "--markdown")
        except BenchError as exc:
            print(f"storage_qos1.py: {exc}", file=sys.stderr)
            return 2
        write_section(md, SECTION, markdown(report))
        return readme.readme_after_run() if Path(md).resolve() == RESULTS_MD else 0

    configs = [c for c in args.configs.split(",") if c]
    scenarios = [s for s in args.scenarios.split(",") if s]
    for c in configs:
        if c not in CONFIGS:
            parser.error(f"unknown configuration {c!r}")
    for s in scenarios:
        if s not in SCENARIOS:
            parser.error(f"unknown scenario {s!r}")
    if "memory" not in configs:
        configs.insert(0, "memory")  # the reference of every ratio
    plan = Plan(configs=configs, scenarios=scenarios,
                repeats=(args.repeats or 1) if args.quick else (args.repeats or 3),
                warmup=args.warmup if args.warmup is not None else (0.5 if args.quick else 0.75),
                duration=args.duration or (1.0 if args.quick else 2.0),
                window=args.window)
    if plan.window > MAX_INFLIGHT:
        parser.error(f"--window above limits.max_inflight ({MAX_INFLIGHT})")
    scratch = args.quick or args.allow_dirty
    quick_json = scratch_dir("hbroker-bench-storage-quick.json" if args.quick
                             else "hbroker-bench-storage.json")
    output = (args.output or (quick_json if scratch else RESULTS_JSON)).resolve()
    md_path = args.markdown or (None if scratch else RESULTS_MD)
    start = provenance()
    try:
        check_outputs([output, md_path], start, quick=args.quick)
    except BenchError as exc:
        print(f"storage_qos1.py: {exc}", file=sys.stderr)
        return 2

    started = time.monotonic()
    pg: Postgres | None = None
    if any(CONFIGS[c]["backend"] == "postgres" for c in configs):
        try:
            pg = Postgres()
        except Exception as exc:  # not installed, or asyncpg missing: the row says why
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            for c in configs:
                if CONFIGS[c]["backend"] == "postgres":
                    plan.skipped[c] = reason
            print(f"postgres skipped: {reason}", file=sys.stderr)
    active = [c for c in configs if c not in plan.skipped]
    total = plan.repeats * len(scenarios) * len(active)
    runs: list[dict[str, Any]] = []
    try:
        for rep in range(plan.repeats):
            for scenario in scenarios:
                order = active[rep % len(active):] + active[:rep % len(active)]
                for config in order:
                    profile = None
                    if args.py_spy is not None:
                        args.py_spy.mkdir(parents=True, exist_ok=True)
                        profile = args.py_spy.resolve() / f"{scenario}-{config}-{rep + 1}.txt"
                    result = run_one(config, scenario, plan, pg, profile)
                    runs.append({"repeat": rep, "scenario": scenario, "config": config,
                                 **result})
                    pg_cpu = result["postgres_cpu"]
                    print(f"[{len(runs):3d}/{total}] rep {rep + 1} {scenario:<10} "
                          f"{config:<20} {result['msgs_per_s']:>9,.0f} msg/s  CPU: broker "
                          f"{result['broker_cpu'] * 100:3.0f} % "
                          f"({result['broker_cpu_us_per_msg']:5.1f} us/msg), client "
                          f"{result['client_cpu'] * 100:3.0f} %, "
                          + (f"postgres {pg_cpu * 100:3.0f} %, " if pg_cpu is not None else "")
                          + f"others {result['other_cpu'] * 100:3.0f} %",
                          file=sys.stderr, flush=True)
        prov = settle(start)
        machine = machine_info(pg, prov)
    finally:
        if pg is not None:
            pg.close()
    wall = time.monotonic() - started
    status = 0
    try:
        check_outputs([output, md_path], prov, quick=args.quick)
    except BenchError as exc:  # the tree changed during the run: keep the runs elsewhere
        print(f"storage_qos1.py: {exc}", file=sys.stderr)
        output, md_path, status = quick_json, None, 1

    report = {
        "benchmark": "storage_qos1",
        "output": str(output.relative_to(ROOT) if output.is_relative_to(ROOT) else output),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "command": "`" + " ".join(["bench/storage_qos1.py", *sys.argv[1:]]) + "`",
        "wall_s": wall,
        "machine": machine,
        "provenance": prov.as_dict(),
        "plan": {**plan.__dict__, "payload_size": PAYLOAD_SIZE, "max_inflight": MAX_INFLIGHT,
                 "session_expiry": SESSION_EXPIRY, "quick": args.quick,
                 "client_bound": CLIENT_BOUND,
                 "storage": {c: CONFIGS[c] for c in configs}},
        "summary": summarize(plan, runs),
        "runs": runs,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=1) + "\n")
    section = markdown(report)
    if md_path is not None:
        write_section(md_path, SECTION, section)
    print(section)
    print(f"results: {report['output']}{f', {md_path}' if md_path else ''}; {wall:.0f} s",
          file=sys.stderr)
    if md_path is not None and Path(md_path).resolve() == RESULTS_MD and output == RESULTS_JSON:
        status = readme.readme_after_run() or status
    return status


if __name__ == "__main__":
    sys.exit(main())
