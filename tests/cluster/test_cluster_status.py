"""`hbroker cluster status` against a real cluster: three hbroker instances on a 3-node NATS
JetStream cluster, paho clients with persistent sessions. The command reads what the
instances keep in NATS (their leases, the sessions' owners, the streams): every instance
alive with its clients and sessions, the NATS servers, the streams with their replicas; an
instance killed with -9 shown dead, declared by a survivor; one exit status 1 with a one-line
error when no NATS server answers, another when the configuration has no [cluster] table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from broker_process import ROOT, BrokerProcess, free_port
from clients import PahoClient
from instances import start_instances, stop_instances
from nats_cluster import NatsCluster

# Instances renew their lease every second; one killed is declared dead LEASE (10 s) after
# its last renewal.
COUNTS_DEADLINE = 15.0
DEAD_DEADLINE = 20.0


@pytest.fixture
def prefix() -> str:
    """A subject prefix of the test's own: its buckets and streams hold this test's
    instances alone, not the records the other tests' instances (also hb1..hb3) left on the
    shared NATS cluster."""
    return "st" + uuid.uuid4().hex[:8]


@pytest.fixture
def three(nats_cluster: NatsCluster, tmp_path: Path,
          prefix: str) -> Iterator[list[BrokerProcess]]:
    started = start_instances(tmp_path, nats_cluster.urls, 3, subject_prefix=prefix)
    yield started
    stop_instances([b for b in started if b.proc.poll() is None])


def hbroker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hbroker", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})


def status(b: BrokerProcess) -> dict[str, Any]:
    done = b.cli("cluster", "status", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def poll_status(b: BrokerProcess, until: Callable[[dict[str, Any]], bool],
                deadline: float, what: str) -> dict[str, Any]:
    """The first report of `hbroker cluster status --json` (with `b`'s configuration) for
    which `until` holds; AssertionError with the last one after `deadline` seconds."""
    end = time.monotonic() + deadline
    while True:
        report = status(b)
        if until(report):
            return report
        assert time.monotonic() < end, f"{what} not within {deadline} s:\n" \
            + json.dumps(report, indent=2)
        time.sleep(0.2)  # between two runs of the command


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in report["instances"]}


def counts(report: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    return {name: (row["state"], row["clients"], row["sessions"])
            for name, row in by_name(report).items()}


def test_status_shows_instances_sessions_servers_streams_and_a_killed_instance_dead(
        three: list[BrokerProcess], nats_cluster: NatsCluster, prefix: str,
        tmp_path: Path) -> None:
    hb1, hb2, hb3 = three
    clients = []
    try:
        # hb1: two persistent sessions, one of them offline; hb2: one persistent, one that
        # ends with its connection; hb3: none.
        for b, cid, expiry in ((hb1, "st-a", 300), (hb1, "st-b", 300), (hb2, "st-c", 300),
                               (hb2, "st-d", None)):
            clients.append(PahoClient(b.host, b.port, cid, clean=expiry is None,
                                      session_expiry=expiry))
        clients[1].disconnect()  # st-b: its session stays, offline
        report = poll_status(hb1, lambda r: counts(r) == {
            "hb1": ("alive", 1, 2), "hb2": ("alive", 2, 2), "hb3": ("alive", 0, 0)},
            COUNTS_DEADLINE, "the clients and sessions of each instance")
        rows = by_name(report)
        for row in rows.values():
            assert row["fenced"] is False
            assert 0 <= row["since_renewal_s"] < row["lease_s"]
            assert row["uptime_s"] > 0
        # The owners of the sessions, from the sessions' bucket: st-a and st-b on hb1 (st-b
        # offline), st-c and st-d on hb2 (st-d while connected).
        assert report["sessions"]["by_instance"] == {"hb1": 2, "hb2": 2}
        assert report["sessions"]["total"] == 4
        # The NATS servers: the one reached (hb1's only configured server: n1) and the
        # others, found from what it announces.
        nats = report["nats"]
        assert nats["connected"]["server_name"] == "n1"
        assert nats["connected"]["jetstream"] is True
        assert nats["connected"]["cluster"] == "hbroker-test"
        assert {s["url"] for s in nats["servers"]} == set(nats_cluster.urls)
        assert report["clock"] == "nats"
        # The streams, each with its three replicas.
        streams = {s["kind"]: s for s in report["streams"]}
        upper = prefix.upper()
        assert {k: s["name"] for k, s in streams.items()} == {
            "messages": f"HBROKER_MSGS_{upper}", "retained": f"HBROKER_RETAINED_{upper}",
            "instances": f"KV_HBROKER_INSTANCES_{upper}",
            "sessions": f"KV_HBROKER_SESSIONS_{upper}", "wills": f"KV_HBROKER_WILLS_{upper}"}
        for s in streams.values():
            assert s["exists"] is True, s
            assert s["replicas"] == 3, s
            assert s["leader"] in ("n1", "n2", "n3"), s
            assert sorted(p["server"] for p in s["peers"]) == ["n1", "n2", "n3"], s
            assert [p["role"] for p in s["peers"]].count("leader") == 1, s
        assert streams["instances"]["messages"] == 3  # one record per instance
        assert streams["messages"]["consumers"] == 3  # one durable consumer per instance

        table = hb1.cli("cluster", "status")
        assert table.returncode == 0, table.stderr
        (tmp_path / "status.txt").write_text(table.stdout)  # beside the instances' logs
        lines = table.stdout.splitlines()
        for name, clients_, sessions_ in (("hb1", 1, 2), ("hb2", 2, 2), ("hb3", 0, 0)):
            line = next(x for x in lines if x.startswith(name + " "))
            assert line.split()[:5] == [name, "alive", "no", str(clients_), str(sessions_)]
        assert f"HBROKER_MSGS_{upper}" in table.stdout
        assert "connected to:  " + nats_cluster.urls[0] in table.stdout

        # kill -9: no goodbye; its lease is no longer renewed, and a survivor declares it
        # dead (by compare-and-swap: exactly one declarer).
        hb2.kill()
        killed = time.monotonic()
        report = poll_status(hb1, lambda r: by_name(r).get("hb2", {}).get("state") == "dead",
                             DEAD_DEADLINE, "hb2 dead")
        assert time.monotonic() - killed < DEAD_DEADLINE
        dead = by_name(report)["hb2"]
        assert dead["declared_by"] in ("hb1", "hb3")
        assert dead["uptime_s"] is None
        assert {name: row["state"] for name, row in by_name(report).items()} == {
            "hb1": "alive", "hb2": "dead", "hb3": "alive"}
        table = hb3.cli("cluster", "status")
        assert table.returncode == 0, table.stderr
        (tmp_path / "status-after-kill.txt").write_text(table.stdout)
        line = next(x for x in table.stdout.splitlines() if x.startswith("hb2 "))
        assert "dead" in line and f"declared dead by {dead['declared_by']}" in line
    finally:
        for c in clients:
            c.client.loop_stop()
            c.client.disconnect()


def test_status_without_a_nats_server_exits_1_naming_the_servers_tried(tmp_path: Path) -> None:
    closed = [f"nats://127.0.0.1:{free_port()}", f"nats://127.0.0.1:{free_port()}"]
    config = tmp_path / "hbroker.toml"
    config.write_text('[cluster]\nbackend = "nats"\nname = "hb1"\nconnect_timeout = 1.0\n'
                      f"servers = {json.dumps(closed)}\n")
    started = time.monotonic()
    done = hbroker("cluster", "status", "-c", str(config))
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("hbroker cluster status: no NATS server answered within 1 s "
                               f"(tried {closed[0]}, {closed[1]}: "), lines[0]
    assert time.monotonic() - started < 15


def test_status_of_a_configuration_without_a_cluster_table_exits_1_naming_it(
        tmp_path: Path) -> None:
    config = tmp_path / "single.toml"
    config.write_text('[[listeners]]\ntype = "tcp"\nport = 1883\n')
    done = hbroker("cluster", "status", "--json", "-c", str(config))
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stdout == ""
    assert done.stderr == f"hbroker cluster status: {config} has no [cluster] table: " \
        "nothing to look at\n"
