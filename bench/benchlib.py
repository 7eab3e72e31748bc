"""What the benchmark scripts of bench/ share: processes, the machine, where a run's figures
may be written (and from which work tree), rows bounded by the load generator, and
bench/RESULTS.md, made of one `## ` section per script."""

from __future__ import annotations

import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_MD = ROOT / "bench" / "RESULTS.md"

# The sections of RESULTS.md, in order, each written by one script. Any other `## ` section
# (a hand-written one) is dropped when a script rewrites the file: every figure in it comes
# from a run.
SECTIONS = ("## hbroker vs Mosquitto", "## Durable storage: QoS 1 throughput",
            "## Micro-benchmarks", "## Clustered over NATS JetStream")

RESULTS_HEADER = """\
# Benchmark results

Every section below is written by a script of `bench/` from one run (see `bench/README.md`);
nothing here is written by hand. Each section names the run its figures come from: the date
and the commit measured, whose work tree had no uncommitted changes to the code or the
benchmarks (the scripts refuse to write this file otherwise, and never from a `--quick` run).
`make bench` rewrites all of it, `bench/results/` and the Performance section of the top
README from one commit. Absolute rates depend on the machine and on whatever else it is doing:
on a shared or virtual machine only the ratios between rows measured in the same run are
meaningful.
"""

# What the figures depend on: an uncommitted change to any of these makes a run unfit for the
# committed results. The outputs the scripts write are not among them.
SOURCES = ("hbroker", "hbroker_ext", "bench", "setup.py", "pyproject.toml", "Makefile",
           "tests/pg_server.py")
OUTPUTS = ("bench/RESULTS.md", "bench/results", "README.md")

# loadgen CPU (share of one core) from which the load generator counts as the bound of a run:
# loadgen is one thread, so near 100 % it cannot offer more load, and on 2 CPUs a broker
# beside it has the rest of the machine.
CLIENT_BOUND = 0.85


@dataclass(frozen=True)
class Provenance:
    """Which code a run measured: the commit (`git rev-parse HEAD`) and what differs from it.
    `changes`: `git status` lines of SOURCES (untracked files included, ignored ones not);
    `stale`: compiled extensions older than their Cython sources (not rebuilt since)."""

    commit: str
    changes: tuple[str, ...] = ()
    stale: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        return bool(self.commit) and not self.changes and not self.stale

    def problems(self) -> list[str]:
        out = []
        if not self.commit:
            out.append("no git commit (not a git work tree?)")
        if self.changes:
            out.append("uncommitted changes: " + ", ".join(self.changes))
        if self.stale:
            out.append("extensions not rebuilt since their sources changed (`make build`): "
                       + ", ".join(self.stale))
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"commit": self.commit, "clean": self.clean, "changes": list(self.changes),
                "stale_extensions": list(self.stale)}


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "--no-optional-locks", *args], cwd=root, text=True,
                          capture_output=True, check=True).stdout


def provenance(root: Path | None = None) -> Provenance:
    """The commit checked out in `root` (the repository) and its uncommitted changes to
    SOURCES, leaving out OUTPUTS."""
    root = root or ROOT
    try:
        commit = _git(root, "rev-parse", "--verify", "HEAD").strip()
        status = _git(root, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--",
                      *SOURCES, *(f":(exclude){p}" for p in OUTPUTS))
    except (OSError, subprocess.CalledProcessError):
        return Provenance("", (), tuple(stale_extensions(root)))
    changes = []
    fields = iter(status.split("\0"))
    for entry in fields:
        if not entry:
            continue
        changes.append(entry.strip())
        if entry[:1] in "RC":  # a rename or copy: the next field is the old path
            next(fields, None)
    return Provenance(commit, tuple(changes), tuple(stale_extensions(root)))


def stale_extensions(root: Path | None = None) -> list[str]:
    """Cython sources newer than the extension built from them: a run would measure old
    code."""
    ext = (root or ROOT) / "hbroker_ext"
    # A .pyx compiled as part of another module (`include "session.pyx"` in routing.pyx) is
    # built into that module's extension.
    includer: dict[str, str] = {}
    for module in ext.glob("*.pyx"):
        for line in module.read_text(encoding="utf-8").splitlines():
            if line.startswith("include "):
                includer[line.split(None, 1)[1].strip().strip("\"'")] = module.stem
    stale = []
    for src in sorted([*ext.glob("*.pyx"), *ext.glob("*.pxd")]):
        built = list(ext.glob(includer.get(src.name, src.stem) + ".*.so"))
        if src.suffix == ".pxd" and not built:
            continue  # declarations only, cimported by modules checked on their own
        if not built or max(p.stat().st_mtime for p in built) < src.stat().st_mtime:
            stale.append(src.name)
    return stale


def commit_exists(commit: str, root: Path | None = None) -> bool:
    try:
        _git(root or ROOT, "cat-file", "-e", f"{commit}^{{commit}}")
        return True
    except (OSError, subprocess.CalledProcessError):
        return False


def report_provenance(report: Mapping[str, Any]) -> dict[str, Any]:
    """The provenance recorded in a results file. Files from before it was recorded hold
    only a commit string, with "+changes" or "-dirty" when the tree differed from it."""
    if "provenance" in report:
        return dict(report["provenance"])
    machine = report.get("machine") or report.get("machine_info") or {}
    commit = str(machine.get("commit") or machine.get("hbroker_commit") or "")
    for suffix in ("+changes", "-dirty"):
        if commit.endswith(suffix):
            return {"commit": commit[:-len(suffix)], "clean": False,
                    "changes": [f"recorded as {commit!r}"], "stale_extensions": []}
    if commit in ("", "unknown"):
        return {"commit": "", "clean": False, "changes": ["no commit recorded"],
                "stale_extensions": []}
    return {"commit": commit, "clean": True, "changes": [], "stale_extensions": []}


def unfit(report: Mapping[str, Any], root: Path | None = None) -> list[str]:
    """Why the figures of a results file may not stand in the committed results (empty: they
    may): a run with uncommitted changes, at a commit this repository does not have, or a
    smoke test."""
    prov = report_provenance(report)
    reasons = []
    if not prov.get("clean"):
        reasons += prov.get("changes") or []
        if prov.get("stale_extensions"):
            reasons.append("stale extensions " + ", ".join(prov["stale_extensions"]))
        if not reasons:
            reasons.append("not a clean work tree")
    if prov.get("commit") and not commit_exists(prov["commit"], root):
        reasons.append(f"commit {prov['commit'][:12]} is not in this repository")
    plan = report.get("plan") or {}
    if plan.get("quick") or (report.get("run") or {}).get("quick"):
        reasons.append("a --quick run")
    if (report.get("run") or {}).get("select"):
        reasons.append("a partial run (-k)")
    return reasons


def short(commit: str) -> str:
    return commit[:12] if re.fullmatch(r"[0-9a-f]{40}", commit or "") else (commit or "?")


def provenance_banner(report: Mapping[str, Any], root: Path | None = None) -> str:
    """A warning that opens a section whose run is unfit (see `unfit`), or ""."""
    reasons = unfit(report, root)
    if not reasons:
        return ""
    return ("**Not from a clean run** (" + "; ".join(reasons) + "): these figures do not "
            "measure a commit as it is; the next `make bench` replaces them.")


def is_committed_output(path: Path, root: Path | None = None) -> bool:
    """Whether `path` is one of the results kept in git (RESULTS.md, bench/results/, the
    README)."""
    root = (root or ROOT).resolve()
    path = Path(path).resolve()
    return any(path == root / o or path.is_relative_to(root / o) for o in OUTPUTS)


def check_render(source: Path, committed_json: Path, outputs: list[Path], flags: str) -> None:
    """`--render SOURCE` into `outputs` (the markdown first): allowed where check_outputs
    allows it, and into the committed RESULTS.md only from the committed results JSON."""
    check_outputs(outputs, provenance())
    md = outputs[0]
    if is_committed_output(md) and source.resolve() != committed_json:
        raise BenchError(f"{md} holds the figures of {committed_json.relative_to(ROOT)}"
                         f"; render {source} elsewhere ({flags})")


def check_outputs(paths: Iterable[Path | None], prov: Provenance, *, quick: bool = False,
                  root: Path | None = None) -> None:
    """Raise BenchError if a run (or a render) with this provenance may not write `paths`:
    the committed results are written only from a clean work tree and never by a smoke
    test."""
    committed = [p for p in paths if p is not None and is_committed_output(p, root)]
    if not committed:
        return
    names = ", ".join(sorted({os.path.relpath(p, root or ROOT) for p in committed}))
    if quick:
        raise BenchError(f"a --quick run does not write the committed results ({names})")
    if not prov.clean:
        raise BenchError(
            f"refusing to write {names}: " + "; ".join(prov.problems()) + ". Commit first; "
            "for an experiment run with --allow-dirty (results go to the temporary directory) "
            "or write outside the committed results (--output, --markdown).")


def settle(start: Provenance, root: Path | None = None) -> Provenance:
    """The provenance to record for a run that began at `start`: `start`, or, if the work tree
    changed meanwhile (another commit checked out, files edited), `start` with that change,
    which makes it unfit for the committed results."""
    now = provenance(root)
    if now == start:
        return start
    what = (f"the work tree changed during the run (then at commit {short(now.commit)}"
            + (f", changes: {', '.join(now.changes)}" if now.changes else "") + ")")
    return Provenance(start.commit, (*start.changes, what),
                      tuple(sorted(set(start.stale) | set(now.stale))))


def scratch_dir(name: str) -> Path:
    """Where --quick and --allow-dirty runs write their results."""
    return Path(tempfile.gettempdir()) / name


def fmt_time(seconds: float) -> str:
    """A duration with three significant digits in ns, µs or ms."""
    for unit, scale in (("ns", 1e9), ("µs", 1e6), ("ms", 1e3)):
        value = seconds * scale
        if value < 1000 or unit == "ms":
            break
    if value >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:.1f} {unit}" if value >= 10 else f"{value:.2f} {unit}"


# == rows bounded by the load generator ======================================================

def client_bound(rows: Mapping[str, Mapping[str, Any]], threshold: float = CLIENT_BOUND,
                 key: str = "client_cpu") -> dict[str, float]:
    """Of the medians of one scenario (broker or configuration -> metrics), those whose load
    generator used at least `threshold` of a core: their rate is a lower bound of what the
    broker could do."""
    out = {}
    for name, row in rows.items():
        cpu = row.get(key) if isinstance(row, Mapping) else None
        if isinstance(cpu, (int, float)) and cpu == cpu and cpu >= threshold:
            out[name] = float(cpu)
    return out


def ratio_bound(bound: Mapping[str, float], numerator: str, denominator: str) -> str | None:
    """What a client-bound run makes of the ratio numerator ÷ denominator: a run held down
    by the client understates its own rate. None when neither run was client-bound."""
    n, d = numerator in bound, denominator in bound
    if n and d:
        return "both"
    if n:
        return "lower bound"
    if d:
        return "upper bound"
    return None


def bound_text(bound: Mapping[str, float], numerator: str, denominator: str,
               label: Mapping[str, str] | None = None) -> str:
    """`client-bound: loadgen used 87 % of a core in Mosquitto's run; the ratio is an upper
    bound`, or "" when neither run was client-bound."""
    kind = ratio_bound(bound, numerator, denominator)
    if kind is None:
        return ""
    label = label or {}
    runs = [b for b in (numerator, denominator) if b in bound]
    used = " and ".join(f"{bound[b] * 100:.0f} % of a core in {label.get(b, b)}'s run"
                        for b in runs)
    what = {"lower bound": "the ratio is a lower bound",
            "upper bound": "the ratio is an upper bound",
            "both": "the ratio compares what the client allowed more than the brokers"}[kind]
    return f"client-bound: loadgen used {used}; {what}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (every thread), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median(values: list[float]) -> float:
    """The median of the values that are numbers (NaN left out), NaN if none."""
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def write_section(path: Path, title: str, section: str) -> None:
    """Replace the section headed `title` in `path` with `section` (or add it), keeping the
    other sections of SECTIONS; the file is the header and those sections in their order.
    Any other section is dropped, with a warning: RESULTS.md holds only what scripts wrote."""
    text = path.read_text() if path.exists() else ""
    found: dict[str, str] = {}
    for match in re.finditer(r"^(## [^\n]*)\n.*?(?=^## |\Z)", text, re.S | re.M):
        found[match.group(1)] = match.group(0).rstrip()
    found[title] = section.rstrip()
    order = [t for t in SECTIONS if t in found] + [title] * (title not in SECTIONS)
    dropped = [t for t in found if t not in order]
    if dropped:
        print(f"{path}: dropped sections not written by a script: " + "; ".join(dropped),
              file=sys.stderr)
    text = RESULTS_HEADER + "".join(f"\n{found[t]}\n" for t in order)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class BenchError(RuntimeError):
    """A run that did not do what it must: a broker that did not start or stop cleanly, lost
    messages, refusals, a load generator that failed."""


def hbroker_command() -> list[str]:
    """How to start hbroker from the virtualenv this script runs in."""
    hbroker = Path(sys.executable).parent / "hbroker"
    return [str(hbroker)] if hbroker.exists() else [sys.executable, "-m", "hbroker"]


def hbroker_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


class ServerProcess:
    """A broker (or relay) process in `workdir`, its output in broker.log, started and waited
    for until `port` on 127.0.0.1 accepts connections."""

    def __init__(self, name: str, command: list[str], workdir: Path, port: int,
                 env: dict[str, str] | None = None, limit: float = 20) -> None:
        self.name = name
        self.workdir = workdir
        self.port = port
        self.log_path = workdir / "broker.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(command, cwd=workdir, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + limit
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"{name} exited with {self.proc.returncode}:\n"
                                 f"{self.log()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise BenchError(f"{name} did not listen within {limit:g} s:\n"
                                     f"{self.log()[-2000:]}") from None
                time.sleep(0.02)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, and SIGKILL after 20 s; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode
