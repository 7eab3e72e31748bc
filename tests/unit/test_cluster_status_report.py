"""`hbroker cluster status`: instance lines from lease records and JetStream's times, session
counts per owner, and the tables (hbroker.cluster.status); tests/cluster/test_cluster_status.py
runs the command against real instances."""

from __future__ import annotations

from typing import Any

from hbroker.cluster.sessions import record_key
from hbroker.cluster.status import _parse_time, instance_row, render, sessions_by_node

NOW = 1_800_000_000.0  # the NATS server's time


def lease(**fields: Any) -> dict[str, Any]:
    # As InstanceLeases.record() writes it; `renewed` and `started` by the instance's clock.
    return {"node": "hb1", "run": "r1", "state": "alive", "started": 500.0,
            "renewed": 560.0, "lease": 10.0, "durable": False, "clients": 3,
            "sessions": 4, "fenced": False, **fields}


def test_alive_instance_ages_come_from_jetstream_times_not_the_instances_clock() -> None:
    # The instance's own clock is far off (renewed = 560): only JetStream's time counts.
    row = instance_row("hb1", lease(), written=NOW - 1.5, now=NOW)
    assert row["state"] == "alive"
    assert row["since_renewal_s"] == 1.5
    assert row["uptime_s"] == 61.5  # 60 s of its own run up to the renewal, then 1.5 s
    assert (row["clients"], row["sessions"], row["fenced"]) == (3, 4, False)
    assert "declared_by" not in row


def test_alive_record_older_than_its_lease_is_stale() -> None:
    assert instance_row("hb1", lease(), NOW - 10.0, NOW)["state"] == "alive"
    assert instance_row("hb1", lease(), NOW - 10.5, NOW)["state"] == "stale"
    assert instance_row("hb1", lease(lease=30.0), NOW - 20.0, NOW)["state"] == "alive"


def test_dead_instance_names_its_declarer_and_whether_wills_are_pending() -> None:
    record = lease(state="dead", by="hb2", declared=900.0, wills=True)
    row = instance_row("hb1", record, NOW - 100.0, NOW)
    assert row["state"] == "dead"  # never "stale": its record is old by nature
    assert (row["declared_by"], row["wills_pending"]) == ("hb2", True)
    assert row["uptime_s"] is None


def test_stopped_instance_stays_stopped() -> None:
    row = instance_row("hb1", lease(state="stopped", clients=0), NOW - 100.0, NOW)
    assert (row["state"], row["uptime_s"]) == ("stopped", None)


def test_a_node_name_that_is_not_a_token_is_shown_by_its_name() -> None:
    row = instance_row("68622e31", lease(node="hb.1"), NOW, NOW)
    assert (row["name"], row["token"]) == ("hb.1", "68622e31")


def test_sessions_are_counted_per_owning_instance_without_the_instances_own_clients() -> None:
    records = [(record_key("a"), {"node": "hb1", "run": "r", "since": 1}, 0.0),
               (record_key("b"), {"node": "hb2"}, 0.0), (record_key("c"), {"node": "hb1"}, 0.0),
               (record_key("$cluster/hb1"), {"node": "hb1"}, 0.0),
               (record_key("d"), None, 0.0)]  # not JSON: counted, not lost
    assert sessions_by_node(records) == {"?": 1, "hb1": 2, "hb2": 1}


def test_nats_times_with_nanoseconds_parse() -> None:
    assert _parse_time("2027-01-15T08:00:00.123456789Z") == 1800000000.123456
    assert _parse_time("2027-01-15T08:00:00Z") == 1800000000.0
    assert _parse_time("2027-01-15T09:00:00.5+01:00") == 1800000000.5


def report(**parts: Any) -> dict[str, Any]:
    return {"subject_prefix": "", "clock": "nats", "time": NOW, "errors": {},
            "nats": {"connected": {"url": "nats://n1:4222", "server_name": "n1",
                                   "version": "2.15.1", "cluster": "c", "jetstream": True},
                     "servers": [{"url": "nats://n1:4222", "discovered": False},
                                 {"url": "nats://n2:4222", "discovered": True}]},
            "instances": [], "sessions": {"bucket": "HBROKER_SESSIONS", "total": 0,
                                          "by_instance": {}},
            "streams": [{"name": "HBROKER_MSGS", "kind": "messages", "exists": False,
                         "messages": 0, "bytes": 0, "consumers": 0, "replicas": None,
                         "leader": None, "peers": []}], **parts}


def test_tables_show_every_instance_and_who_declared_the_dead_one() -> None:
    rows = [instance_row("hb1", lease(), NOW - 0.4, NOW),
            instance_row("hb2", lease(node="hb2", state="dead", by="hb1", wills=False),
                         NOW - 3.0, NOW)]
    text = render(report(instances=rows, sessions={
        "bucket": "HBROKER_SESSIONS", "total": 5, "by_instance": {"hb1": 5}}))
    lines = text.splitlines()
    hb1 = next(line for line in lines if line.startswith("hb1 "))
    assert hb1.split()[:6] == ["hb1", "alive", "no", "3", "4", "1m00s"]
    hb2 = next(line for line in lines if line.startswith("hb2 "))
    assert "dead" in hb2 and "declared dead by hb1" in hb2
    assert "Sessions by instance (5 in HBROKER_SESSIONS)" in lines
    assert "nats://n2:4222 (discovered)" in text
    assert "not created yet" in text  # a missing stream is shown empty


def test_tables_say_when_no_instance_has_started() -> None:
    assert "none: no instance has a lease record" in render(report())


def test_tables_say_which_bucket_was_not_read_rather_than_none() -> None:
    text = render(report(instances_bucket="HBROKER_INSTANCES",
                         errors={"HBROKER_INSTANCES": "JetStream did not answer"}))
    assert "Instances (0)\n  not read: JetStream did not answer\n" in text
    assert "no instance has a lease record" not in text
