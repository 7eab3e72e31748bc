"""Start-up time of hbroker: from exec to the first CONNACK, median of several starts.

    .venv/bin/python tools/binary_startup.py                  # dist/hbroker and the dev install
    .venv/bin/python tools/binary_startup.py --runs 31 --binary a/hbroker --binary b/hbroker

Each start runs `serve` with a copy of examples/gateway.toml (on a free loopback port, its
SQLite database in a temporary directory, kept across the starts as on a gateway), connects
as soon as the port accepts, sends an MQTT 3.1.1 CONNECT and stops the clock at the CONNACK;
then stops the broker with SIGTERM and checks it exits 0. tests/binary uses the same helpers.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GATEWAY = ROOT / "examples" / "gateway.toml"
CONNECT = b"\x10\x13\x00\x04MQTT\x04\x02\x00\x3c\x00\x07startup"  # clean session, "startup"
CONNACK = b"\x20\x02\x00\x00"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _replace_once(text: str, pattern: str, replacement: str) -> str:
    new, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    if count != 1:
        raise ValueError(f"examples/gateway.toml: expected one line matching {pattern!r}, "
                         f"found {count}")
    return new


def gateway_config(directory: Path, port: int, **replace: str) -> Path:
    """examples/gateway.toml for a run in `directory`: listening on 127.0.0.1:`port`, its
    database in `directory`/state; `replace` sets other `key = value` lines of the file
    (values as TOML, e.g. level='"debug"')."""
    text = GATEWAY.read_text()
    text = _replace_once(text, r'^host = "0\.0\.0\.0"$', 'host = "127.0.0.1"')
    text = _replace_once(text, r"^port = 1883$", f"port = {port}")
    text = _replace_once(text, r'^path = "/var/lib/hbroker/hbroker\.db"$',
                         f'path = "{directory / "state" / "hbroker.db"}"')
    for key, value in replace.items():
        text = _replace_once(text, rf"^{key} = .*$", f"{key} = {value}")
    path = directory / "hbroker.toml"
    path.write_text(text)
    return path


def wait_for_connack(proc: subprocess.Popen, port: int, started: float,
                     timeout: float = 20.0) -> float:
    """Seconds from `started` (a time.perf_counter()) to the broker's first CONNACK."""
    deadline = started + timeout
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the broker exited with {proc.returncode} before accepting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(CONNECT)
                reply = b""
                while len(reply) < 4:
                    chunk = s.recv(4 - len(reply))
                    if not chunk:
                        break
                    reply += chunk
                elapsed = time.perf_counter() - started
                s.sendall(b"\xe0\x00")  # DISCONNECT
        except OSError:
            time.sleep(0.002)
            continue
        if reply != CONNACK:
            raise RuntimeError(f"unexpected CONNACK {reply!r}")
        return elapsed
    raise RuntimeError(f"no CONNACK within {timeout} s")


def stop(proc: subprocess.Popen, timeout: float = 20.0) -> int:
    """SIGTERM, then the exit code."""
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout)


def measure(commands: dict[str, list[str]], runs: int,
            env: dict[str, str] | None = None) -> dict[str, list[float]]:
    """Start-up times of each `command serve -c <gateway copy>`, `runs` of each, taken in
    turns (one start of each command per round) so that a busy machine weighs on all alike.
    Each command has its own directory and database, kept across its starts."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    with tempfile.TemporaryDirectory(prefix="hbroker-startup-") as tmp:
        setups = {}
        for i, name in enumerate(commands):
            directory = Path(tmp) / str(i)
            directory.mkdir()
            port = free_port()
            setups[name] = (directory, port, gateway_config(directory, port))
        for _ in range(runs):
            for name, command in commands.items():
                directory, port, config = setups[name]
                log = open(directory / "broker.log", "ab")
                started = time.perf_counter()
                proc = subprocess.Popen([*command, "serve", "-c", str(config)], cwd=directory,
                                        stdout=log, stderr=subprocess.STDOUT, env=env)
                try:
                    times[name].append(wait_for_connack(proc, port, started))
                finally:
                    code = stop(proc)
                    log.close()
                if code != 0:
                    raise RuntimeError(f"{name} exited with {code} after SIGTERM:\n"
                                       + (directory / "broker.log").read_text())
    return times


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--binary", action="append",
                        help="a binary to measure (repeat for several; default dist/hbroker)")
    parser.add_argument("--no-dev", action="store_true", help="skip the development install")
    args = parser.parse_args(argv)
    binaries = args.binary or [str(ROOT / "dist" / "hbroker")]
    commands = {path: [str(Path(path).resolve())] for path in binaries}
    if not args.no_dev:
        commands["dev install"] = [sys.executable, "-m", "hbroker"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open("/proc/loadavg") as fh:
        load = fh.read().split()[0]
    print(f"start-up to first CONNACK, {args.runs} starts each, in turns "
          f"(examples/gateway.toml, sqlite; load average {load} before)")
    print("| what | size | median | min | max |")
    print("|---|---|---|---|---|")
    for name, times in measure(commands, args.runs, env).items():
        size = f"{os.path.getsize(commands[name][0]) / 2**20:.1f} MiB" \
            if name != "dev install" else ""
        print(f"| {name} | {size} | {statistics.median(times) * 1000:.0f} ms "
              f"| {min(times) * 1000:.0f} ms | {max(times) * 1000:.0f} ms |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
