"""What the benchmark scripts of bench/ share: processes, the machine, and bench/RESULTS.md,
made of one `## ` section per script."""

from __future__ import annotations

import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS_MD = ROOT / "bench" / "RESULTS.md"

RESULTS_HEADER = """\
# Benchmark results

Every section below is written by a script of `bench/` (see `bench/README.md`); rerun it to
reproduce the numbers (`make bench`). Absolute rates depend on the machine and on whatever else
it is doing: on a shared or virtual machine only the ratios between rows measured in the same
run are meaningful.
"""


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


def git_describe() -> str:
    """The commit measured: short hash, "+changes" if the work tree differs from it."""
    try:
        sha = subprocess.run(["git", "--no-optional-locks", "rev-parse", "--short", "HEAD"],
                             cwd=ROOT, text=True, capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "--no-optional-locks", "status", "--porcelain",
                                "--untracked-files=no"], cwd=ROOT, text=True,
                               capture_output=True).stdout.strip()
        return sha + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_section(path: Path, title: str, section: str, first: bool = False) -> None:
    """Replace the section headed `title` in `path` with `section`, or add it (at the end, or
    before every other section with `first`); the other sections are kept as they are."""
    text = path.read_text() if path.exists() else RESULTS_HEADER
    pattern = re.compile(rf"^{re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section.rstrip() + "\n\n", text, count=1)
    else:
        head = re.search(r"^## ", text, re.M) if first else None
        if head:
            text = text[:head.start()] + section.rstrip() + "\n\n" + text[head.start():]
        else:
            text = text.rstrip() + "\n\n" + section.rstrip() + "\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text.rstrip() + "\n")
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
