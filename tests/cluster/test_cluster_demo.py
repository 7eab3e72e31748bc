"""`make cluster-demo` (examples/cluster/demo.py) as a user runs it: the launcher as a process,
real MQTT clients on two of its instances, then Ctrl-C (SIGINT) and every process it started
gone."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from clients import PahoClient

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "cluster" / "demo.py"
MQTT_PORTS = (1891, 1892, 1893)
# the NATS client, route and monitoring ports of the example configurations
NATS_PORTS = tuple(p + d for p in (4222, 4223, 4224) for d in (0, 2000, 4000))
READY_TIMEOUT = 120


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_offset() -> int:
    """A --port-offset at which every port of the demo is free (not the default ports: a demo
    someone runs on this machine keeps them)."""
    for offset in range(20000, 40000, 137):
        if all(port_free(p + offset) for p in (*MQTT_PORTS, *NATS_PORTS)):
            return offset
    raise AssertionError("no free ports for the demo")


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_demo_routes_between_instances_and_stops_on_sigint(tmp_path: Path) -> None:
    offset = free_offset()
    proc = subprocess.Popen([sys.executable, str(DEMO), "--data", str(tmp_path / "demo"),
                             "--port-offset", str(offset)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: queue.Queue[str | None] = queue.Queue()
    output: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()

    def until(text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            if line is None:
                raise AssertionError(f"the demo exited with {proc.wait()}:\n"
                                     + "".join(output))
            output.append(line)
            if text in line:
                return
            assert time.monotonic() < deadline, f"no {text!r} from the demo:\n" + "".join(output)

    try:
        until("cluster demo ready", READY_TIMEOUT)
        banner = "".join(output)
        pids = [int(p) for p in re.findall(r"\(pid (\d+)", banner)]
        assert len(pids) == 6, banner  # 3 instances, 3 NATS nodes
        for port in MQTT_PORTS:
            assert f"mqtt://127.0.0.1:{port + offset}" in banner

        hb1, hb2, hb3 = (p + offset for p in MQTT_PORTS)
        sub = PahoClient("127.0.0.1", hb2, "demo-sub")
        pub = PahoClient("127.0.0.1", hb1, "demo-pub")
        pub3 = PahoClient("127.0.0.1", hb3, "demo-pub3", version=4)
        assert sub.subscribe("demo/#", qos=1)[0].value == 1
        # the subscription's interest reaches the other NATS servers asynchronously: probe
        # until hb1's messages arrive on hb2
        deadline = time.monotonic() + 30
        while True:
            pub.publish("demo/probe", b"probe", qos=1)
            try:
                if sub.messages.get(timeout=0.5).topic == "demo/probe":
                    break
            except queue.Empty:
                pass
            assert time.monotonic() < deadline, "nothing from hb1 reached hb2"
        pub.publish("demo/hello", b"from hb1", qos=1)
        pub3.publish("demo/hello3", b"from hb3", qos=1)
        got = {}
        deadline = time.monotonic() + 30
        while len(got) < 2:
            m = sub.expect(timeout=max(0.1, deadline - time.monotonic()))
            if m.topic != "demo/probe":
                got[m.topic] = m.payload
        assert got == {"demo/hello": b"from hb1", "demo/hello3": b"from hb3"}
        pub3.disconnect()
        # an instance killed leaves the others running (the walkthrough's will example)
        os.kill(pids[2], signal.SIGKILL)
        until("hb3 exited with -9", 30)
        pub.publish("demo/after", b"after hb3", qos=1)
        while (m := sub.expect(timeout=30)).topic != "demo/after":
            pass
        assert m.payload == b"after hb3"
        for client in (sub, pub):
            client.disconnect()

        proc.send_signal(signal.SIGINT)
        until("cluster demo stopped", 60)
        assert proc.wait(30) == 0, "".join(output)
        assert [p for p in pids if alive(p)] == [], "".join(output)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
