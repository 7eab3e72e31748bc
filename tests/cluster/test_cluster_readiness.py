"""`/readyz` of a clustered instance says whether it can serve as part of the cluster: not
while it has no NATS connection (its QoS 1/2 publishes are refused then), again once NATS is
back."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

from broker_process import free_port
from instances import start_instances, stop_instances


def readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def until(port: int, status: int, timeout: float = 30) -> str:
    end = time.monotonic() + timeout
    while True:
        got, body = readyz(port)
        if got == status:
            return body
        assert time.monotonic() < end, f"/readyz still {got}: {body}"
        time.sleep(0.1)


def test_readyz_follows_the_nats_connection(tmp_path: Path, nats_server_with) -> None:
    nats = nats_server_with()  # one server: nowhere else to reconnect to
    port = free_port()
    (hb,) = start_instances(tmp_path, nats.urls, 1, stream_replicas=1,
                            sections={"admin": {"enabled": True, "port": port}})
    try:
        assert readyz(port)[0] == 200
        nats.kill(0)
        assert "cluster" in until(port, 503)
        nats.start(0)
        until(port, 200)
    finally:
        stop_instances([hb])
