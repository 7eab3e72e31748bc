"""`hbroker ctl` as a process against a real broker process: tables and JSON, the token from
the command line or HBROKER_TOKEN, and the API's message with a non-zero exit status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from admin_client import wait_for
from broker_process import ROOT, BrokerProcess, free_port
from clients import PahoClient

from hbroker.admin.tokens import hash_token

ADMIN_TOKEN = "admin-token-for-the-ctl-tests"
READ_TOKEN = "read-token-for-the-ctl-tests"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[tuple[BrokerProcess, str]]:
    port = free_port()
    process = BrokerProcess(tmp_path, {
        "storage": {"backend": "sqlite", "path": "data/hbroker.db"},
        "admin": {"enabled": True, "port": port, "tokens": [
            {"name": "operator", "hash": hash_token(ADMIN_TOKEN), "role": "admin"},
            {"name": "viewer", "hash": hash_token(READ_TOKEN)}]}},
        listeners=[{"type": "tcp", "name": "main"}])
    yield process, f"http://127.0.0.1:{port}"
    assert process.stop() == 0, process.log()


def ctl(url: str, *args: str, token: str | None = ADMIN_TOKEN,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "hbroker", "ctl", "--url", url]
    if token is not None:
        command += ["--token", token]
    environment = {k: v for k, v in os.environ.items() if k != "HBROKER_TOKEN"}
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=60,
                          env={**environment, "PYTHONPATH": str(ROOT), **(env or {})})


def test_clients_client_and_kick(broker: tuple[BrokerProcess, str]) -> None:
    b, url = broker
    device = PahoClient(b.host, b.port, "ctl-device-1", version=5)
    device.subscribe("ctl/#", qos=1)
    listed = ctl(url, "clients")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()[:2]
    assert header.split()[:4] == ["CLIENT", "ID", "USERNAME", "LISTENER"]
    assert row.split()[:4] == ["ctl-device-1", "-", "main", "5.0"]
    as_json = json.loads(ctl(url, "--json", "clients", "--prefix", "ctl-").stdout)
    assert [c["client_id"] for c in as_json] == ["ctl-device-1"]
    detail = ctl(url, "client", "ctl-device-1")
    assert detail.returncode == 0, detail.stderr
    assert "listener:" in detail.stdout and "ctl/#" in detail.stdout
    refused = ctl(url, "kick", "ctl-device-1", token=READ_TOKEN)
    assert refused.returncode == 1
    assert "403" in refused.stderr and "needs 'admin'" in refused.stderr
    kicked = ctl(url, "kick", "ctl-device-1")
    assert kicked.returncode == 0 and kicked.stdout.strip() == "kicked ctl-device-1"
    assert device.disconnected.wait(10) and device.disconnect_reason.value == 0x98
    device.client.loop_stop()
    missing = ctl(url, "kick", "ctl-device-1")
    assert missing.returncode == 1 and "404" in missing.stderr
    assert "no client connected with client id 'ctl-device-1'" in missing.stderr


def test_retained_ls_get_rm_and_publish(broker: tuple[BrokerProcess, str]) -> None:
    _, url = broker
    published = ctl(url, "publish", "ctl/valve", "open", "--qos", "1", "--retain")
    assert published.returncode == 0, published.stderr
    assert "no matching subscribers" in published.stdout
    listed = ctl(url, "retained", "ls", "ctl/#")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].split() == ["ctl/valve", "1", "4", "open"]
    shown = ctl(url, "retained", "get", "ctl/valve")
    assert "payload:" in shown.stdout and "open" in shown.stdout
    removed = ctl(url, "retained", "rm", "ctl/valve")
    assert removed.returncode == 0, removed.stderr
    assert json.loads(ctl(url, "--json", "retained", "ls", "ctl/#").stdout) == []
    again = ctl(url, "retained", "rm", "ctl/valve")
    assert again.returncode == 1 and "404" in again.stderr
    bad = ctl(url, "retained", "ls", "ctl/#/x")
    assert bad.returncode == 1 and "filter:" in bad.stderr
    wildcard = ctl(url, "publish", "ctl/+", "x")
    assert wildcard.returncode == 1 and "400" in wildcard.stderr and "topic:" in wildcard.stderr


def test_sessions_subscriptions_status_config_and_the_token_from_the_environment(
        broker: tuple[BrokerProcess, str]) -> None:
    b, url = broker
    keeper = PahoClient(b.host, b.port, "ctl-keeper", session_expiry=600)
    keeper.subscribe("keep/#", qos=1)
    keeper.disconnect()
    env = {"HBROKER_TOKEN": READ_TOKEN}
    sessions = wait_for(lambda: (r := ctl(url, "sessions", "--state", "offline", token=None,
                                          env=env)).returncode == 0
                        and "ctl-keeper" in r.stdout and r, "the offline session listed")
    assert sessions.stdout.splitlines()[1].split()[:3] == ["ctl-keeper", "no", "5.0"]
    subs = ctl(url, "subscriptions", "--client-id", "ctl-keeper", token=None, env=env)
    assert subs.stdout.splitlines()[1].split()[:3] == ["ctl-keeper", "keep/#", "1"]
    status = ctl(url, "status", token=None, env=env)
    assert status.returncode == 0, status.stderr
    assert "ready:" in status.stdout and "backend:" in status.stdout
    config = json.loads(ctl(url, "config", token=None, env=env).stdout)
    assert all(t["hash"] == "<redacted>" for t in config["admin"]["tokens"])
    listeners = ctl(url, "listeners", token=None, env=env)
    assert listeners.stdout.splitlines()[1].split()[:2] == ["main", "tcp"]
    discarded = ctl(url, "discard", "ctl-keeper")
    assert discarded.returncode == 0, discarded.stderr
    assert "ctl-keeper" not in ctl(url, "sessions", token=None, env=env).stdout
    unauthorised = ctl(url, "clients", token=None)
    assert unauthorised.returncode == 1 and "401" in unauthorised.stderr


def test_an_unreachable_broker_is_an_error_with_a_message() -> None:
    result = ctl(f"http://127.0.0.1:{free_port()}", "status")
    assert result.returncode == 1
    assert "cannot reach the admin API" in result.stderr
