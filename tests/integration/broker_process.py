"""The real broker as a process on a free port, with its own configuration file."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _toml(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table, e.g. an entry of [[admin.tokens]]
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def _probe(lc: dict[str, Any]) -> None:
    """Connect to a listener and close at once (OSError while it does not listen)."""
    if lc.get("type") == "unix":
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(0.2)
            s.connect(lc["path"])
        return
    socket.create_connection((lc["host"], lc["port"]), timeout=0.2).close()


class BrokerProcess:
    """One `hbroker serve` process on a free port, with its own configuration file."""

    def __init__(self, workdir: Path, sections: dict[str, dict[str, Any]],
                 wrapper: list[str] | None = None,
                 listeners: list[dict[str, Any]] | None = None,
                 args: list[str] | None = None) -> None:
        """`wrapper`: a command prefix the broker runs under (it must exec the rest).
        `listeners`: the [[listeners]] tables; a listener other than `unix` without a port
        gets a free one, on 127.0.0.1 unless it names a host. Default: one tcp listener.
        `self.listeners` holds them as written; `host`/`port` are the first one's with a
        port. `args`: more arguments for `hbroker serve` (e.g. `--hook`)."""
        self.wrapper = wrapper or []
        self.args = args or []
        self.workdir = workdir
        self.config_path = workdir / "hbroker.toml"
        self.listeners: list[dict[str, Any]] = []
        for given in listeners or [{"type": "tcp"}]:
            lc = dict(given)
            if lc.get("type", "tcp") != "unix":
                lc.setdefault("host", "127.0.0.1")
                lc.setdefault("port", free_port())
            self.listeners.append(lc)
        first = next((lc for lc in self.listeners if "port" in lc), None)
        self.host = first["host"] if first else "127.0.0.1"
        self.port = first["port"] if first else 0
        lines = []
        for lc in self.listeners:
            lines.append("[[listeners]]")
            lines += [f"{k} = {_toml(v)}" for k, v in lc.items()]
            lines.append("")
        sections = {"logging": {"level": "debug"}, **sections}
        for name, values in sections.items():
            lines.append(f"[{name}]")
            lines += [f"{k} = {_toml(v)}" for k, v in values.items()]
            lines.append("")
        self.config_path.write_text("\n".join(lines))
        self.log_path = workdir / "broker.log"
        self._log = open(self.log_path, "wb")
        self._spawn()

    def _spawn(self) -> None:
        if self._log.closed:
            self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*self.wrapper, sys.executable, "-m", "hbroker", "serve", "-c",
             str(self.config_path), *self.args],
            cwd=self.workdir, stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        self._wait_ready()

    def kill(self) -> None:
        """kill -9: no goodbye, no last commit."""
        self.proc.kill()
        self.proc.wait()

    def restart(self) -> None:
        """Start the broker again with the same configuration, port and working directory."""
        assert self.proc.poll() is not None, "the broker is still running"
        self._spawn()

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """Run `hbroker ARGS -c <this broker's config>` in its working directory."""
        return subprocess.run(
            [sys.executable, "-m", "hbroker", *args, "-c", str(self.config_path)],
            cwd=self.workdir, capture_output=True, text=True, timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)})

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 15
        waiting = list(self.listeners)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited with {self.proc.returncode}:\n{self.log()}")
            try:
                while waiting:
                    _probe(waiting[0])
                    waiting.pop(0)
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"broker did not listen within 15 s:\n{self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout: float = 15.0) -> re.Match:
        """The first match of the regular expression `pattern` in the log, once it is there
        (the log is read again as it grows); AssertionError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.log())
            if found is not None:
                return found
            assert time.monotonic() < deadline, f"no {pattern!r} in the log:\n{self.log()}"
            time.sleep(0.05)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"broker did not stop on SIGTERM:\n{self.log()}") from None
        self._log.close()
        return self.proc.returncode
