"""The single-file binary, run as a user runs it: `make test-binary` builds it from a clean copy
of the tree (tools/test-binary.sh) and runs these tests with HBROKER_BINARY naming it.

The broker runs examples/gateway.toml (on a free loopback port, its database in a temporary
directory) and is driven with the Mosquitto clients, its signals and its CLI.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
BINARY = os.environ.get("HBROKER_BINARY", "")

if not BINARY:  # `make test` leaves this directory out (tools/run-tests.sh)
    raise RuntimeError("tests/binary needs HBROKER_BINARY: run `make test-binary`, which "
                       "builds the binary first")


def _startup_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("binary_startup",
                                                  ROOT / "tools" / "binary_startup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _startup_tool()


class GatewayBroker:
    """`hbroker serve -c <gateway.toml copy>` from the binary, in its own directory; the
    launcher unpacks the bundle into `directory/unpack` (TMPDIR)."""

    def __init__(self, directory: Path, **replace: str) -> None:
        self.directory = directory
        self.port = tool.free_port()
        self.config = tool.gateway_config(directory, self.port, **replace)
        self.unpack = directory / "unpack"
        self.unpack.mkdir(exist_ok=True)
        self.env = {**os.environ, "TMPDIR": str(self.unpack)}
        self.log_path = directory / "broker.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        """Start it; the seconds until it answered a CONNECT with CONNACK."""
        log = open(self.log_path, "ab")
        started = time.perf_counter()
        self.proc = subprocess.Popen([BINARY, "serve", "-c", str(self.config)],
                                     cwd=self.directory, stdout=log, stderr=subprocess.STDOUT,
                                     env=self.env)
        log.close()
        try:
            return tool.wait_for_connack(self.proc, self.port, started)
        except RuntimeError as exc:
            raise AssertionError(f"{exc}:\n{self.log()}") from None

    def stop(self) -> int:
        """SIGTERM, as systemd sends it to the main process; the exit code."""
        assert self.proc is not None
        try:
            return tool.stop(self.proc)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"no exit within 20 s of SIGTERM:\n{self.log()}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.log())
            if match:
                return match.group(0)
            time.sleep(0.05)
        raise AssertionError(f"no log line matching {pattern!r}:\n{self.log()}")

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([BINARY, *args, "-c", str(self.config)], cwd=self.directory,
                              capture_output=True, text=True, timeout=60, env=self.env)

    def pub(self, *args: str) -> None:
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.port), *args],
                       check=True, timeout=20)

    def sub(self, *args: str) -> list[str]:
        """mosquitto_sub ARGS -v; the lines it printed (it must exit 0: -C or -E)."""
        done = subprocess.run(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.port), "-v", "-W", "10", *args],
            capture_output=True, text=True, timeout=20)
        assert done.returncode == 0, f"mosquitto_sub {args}: {done.stderr}\n{self.log()}"
        return done.stdout.splitlines()


def _readline(proc: subprocess.Popen, timeout: float = 10.0) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "mosquitto_sub printed nothing"
    return proc.stdout.readline().rstrip("\n")


def _dev(*args: str) -> subprocess.CompletedProcess:
    """The development install of the tree the binary was built from."""
    return subprocess.run([sys.executable, "-m", "hbroker", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_version_is_the_development_installs() -> None:
    frozen = subprocess.run([BINARY, "--version"], capture_output=True, text=True, timeout=60)
    dev = _dev("--version")
    assert frozen.returncode == dev.returncode == 0, frozen.stderr + dev.stderr
    assert frozen.stdout == dev.stdout
    assert "\ncompiled extensions: hbroker_ext.codec, hbroker_ext.topics" in frozen.stdout


@pytest.mark.parametrize("args", [["--help"], ["serve", "--help"], ["check-config", "--help"],
                                  ["storage", "inspect", "--help"],
                                  ["check-config", "-c", "examples/gateway.toml"]],
                         ids=lambda a: " ".join(a))
def test_cli_is_the_development_installs(args: list[str]) -> None:
    frozen = subprocess.run([BINARY, *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    dev = _dev(*args)
    assert (frozen.returncode, frozen.stdout, frozen.stderr) == \
        (dev.returncode, dev.stdout, dev.stderr)
    assert frozen.returncode == 0


def test_gateway_binary_serves_reloads_survives_a_restart_and_stops_cleanly(
        tmp_path: Path) -> None:
    broker = GatewayBroker(tmp_path)
    first_start = broker.start()
    broker.wait_for_log(r"storage opened backend=sqlite")

    # A 3.1.1 persistent session that goes offline with a subscription.
    broker.sub("-V", "mqttv311", "-c", "-i", "gw-consumer", "-q", "1", "-t", "gw/queued", "-E")
    # Retained state, then live traffic: the subscriber gets the retained message first,
    # which also says its subscription is in place.
    broker.pub("-V", "5", "-t", "gw/state", "-m", "on", "-r", "-q", "1")
    live = subprocess.Popen(
        ["mosquitto_sub", "-V", "5", "-h", "127.0.0.1", "-p", str(broker.port), "-t", "gw/#",
         "-v", "-q", "2", "-C", "2", "-W", "15"], stdout=subprocess.PIPE, text=True)
    try:
        assert _readline(live) == "gw/state on"
        broker.pub("-V", "5", "-t", "gw/event", "-m", "door opened", "-q", "2")
        assert _readline(live) == "gw/event door opened"
        assert live.wait(15) == 0
    finally:
        live.kill()
    broker.pub("-V", "mqttv311", "-t", "gw/queued", "-m", "while offline", "-q", "1")

    # SIGHUP: the changed $SYS interval is applied, the listener change waits for a restart.
    text = broker.config.read_text()
    broker.config.write_text(text.replace("interval = 30", "interval = 20")
                             .replace('name = "field"', 'name = "field2"'))
    broker.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    broker.wait_for_log(r"SIGHUP: configuration reloaded applied=sys\.interval")
    broker.wait_for_log(r"need a restart and were not applied: listeners")
    broker.config.write_text(text)

    unpacked = list(broker.unpack.iterdir())
    assert [p.name[:4] for p in unpacked] == ["_MEI"], unpacked
    assert broker.stop() == 0, broker.log()
    assert "hbroker stopped" in broker.log()
    assert list(broker.unpack.iterdir()) == [], "the launcher left its unpacked bundle behind"

    inspect = broker.cli("storage", "inspect", "--json")
    assert inspect.returncode == 0, inspect.stderr
    stored = json.loads(inspect.stdout)
    assert stored["backend"] == "sqlite"
    assert stored["retained"] >= 1
    [consumer] = [x for x in stored["sessions"] if x["client_id"] == "gw-consumer"]
    assert (consumer["subscriptions"], consumer["queued"]) == (1, 1), consumer

    broker.start()
    assert broker.sub("-V", "5", "-t", "gw/state", "-C", "1") == ["gw/state on"]
    assert broker.sub("-V", "mqttv311", "-c", "-i", "gw-consumer", "-q", "1", "-t", "gw/queued",
                      "-C", "1") == ["gw/queued while offline"]
    assert broker.stop() == 0, broker.log()
    assert list(broker.unpack.iterdir()) == []
    print(f"\nfirst start of the binary to CONNACK: {first_start * 1000:.0f} ms")


def test_binary_keeps_state_in_postgres(tmp_path: Path, postgres_server: object) -> None:
    dsn = postgres_server.create_database("binary")  # type: ignore[attr-defined]
    broker = GatewayBroker(tmp_path, backend='"postgres"', dsn=f'"{dsn}"')
    broker.start()
    broker.wait_for_log(r"storage opened backend=postgres")
    broker.pub("-V", "5", "-t", "gw/pg", "-m", "kept", "-r", "-q", "1")
    assert broker.stop() == 0, broker.log()
    inspect = broker.cli("storage", "inspect", "--json")
    assert inspect.returncode == 0, inspect.stderr
    assert json.loads(inspect.stdout)["backend"] == "postgres"
    broker.start()
    assert broker.sub("-V", "5", "-t", "gw/pg", "-C", "1") == ["gw/pg kept"]
    assert broker.stop() == 0, broker.log()


def test_binary_starts_and_stops_cleanly_again_and_again(tmp_path: Path) -> None:
    """Five starts and SIGTERMs in a row; the start-up time is printed for the CI log
    (docs/deployment.md quotes the median of tools/binary_startup.py, not a test bound)."""
    broker = GatewayBroker(tmp_path)
    times = []
    for _ in range(5):
        times.append(broker.start())
        assert broker.stop() == 0, broker.log()
    median = statistics.median(times)
    print(f"\nstart-up to CONNACK, 5 starts: median {median * 1000:.0f} ms, "
          f"min {min(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms; "
          f"binary {os.path.getsize(BINARY)} bytes")


def test_binary_serves_metrics_and_health_on_the_admin_listener(tmp_path: Path) -> None:
    """aiohttp and prometheus-client are in the bundle: the admin listener answers, and
    serves the web dashboard."""
    import urllib.request

    broker = GatewayBroker(tmp_path)
    admin_port = tool.free_port()
    text, enabled = re.subn(r"^enabled = false$", "enabled = true", broker.config.read_text(),
                            flags=re.M)  # [admin] of examples/gateway.toml
    text, ported = re.subn(r"^port = 9883$", f"port = {admin_port}", text, flags=re.M)
    assert (enabled, ported) == (1, 1)
    broker.config.write_text(text)
    broker.start()
    try:
        broker.pub("-V", "5", "-t", "gw/metrics", "-m", "counted")
        base = f"http://127.0.0.1:{admin_port}"
        for path in ("/healthz", "/readyz"):
            with urllib.request.urlopen(base + path, timeout=10) as response:
                assert (response.status, response.read()) == (200, b"ok\n")
        with urllib.request.urlopen(base + "/metrics", timeout=10) as response:
            page = response.read().decode()
        # mosquitto_pub publishes at QoS 0 unless told otherwise
        assert re.search(r'^hbroker_messages_received_total\{qos="0"\} [1-9]', page,
                         re.M), page
        assert re.search(r"^process_resident_memory_bytes ", page, re.M), page
        # the web dashboard's files are in the bundle (packaging/hbroker.spec: datas)
        with urllib.request.urlopen(base + "/", timeout=10) as response:
            index = response.read().decode()
        assert response.status == 200 and "<title>hbroker dashboard</title>" in index, index
        for asset in ("/ui/app.js", "/ui/app.css", "/ui/vendor/mqtt.min.js"):
            with urllib.request.urlopen(base + asset, timeout=10) as response:
                assert response.status == 200 and response.read(), asset
    finally:
        assert broker.stop() == 0, broker.log()


def test_bundle_check_names_a_missing_module(tmp_path: Path) -> None:
    """The build's check is not vacuous: a module missing from the bundle fails it."""
    listing = tmp_path / "modules.txt"
    listing.write_text("hbroker.server\nno_such_module_in_the_bundle\n")
    done = subprocess.run([BINARY, "--check-bundle", str(listing)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1
    assert "no_such_module_in_the_bundle: ModuleNotFoundError" in done.stderr
    assert "hbroker.server:" not in done.stderr
