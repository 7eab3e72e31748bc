"""`hbroker cluster status`: the cluster as NATS holds it, from any machine with the
instance's configuration (its `[cluster]` table), whether or not an instance runs there.

    hbroker cluster status -c /etc/hbroker/hbroker.toml
    hbroker cluster status -c hbroker.toml --json

`gather()` connects to NATS (`hbroker.cluster.nats_connection`, as an instance does) and
reads (writing nothing but one ephemeral consumer per bucket read, deleted after it):

- the instances' leases (`HBROKER_INSTANCES`, `hbroker.cluster.leases`): each instance's
  state, clients and sessions as it last renewed its record. Ages are taken from JetStream's
  own time of each record against the time the NATS server answered (both the NATS
  servers' clocks), never from the instances' clocks: an `alive` record unchanged for longer
  than its lease is shown `stale` (its instance is about to be declared dead);
- the session ownership records (`HBROKER_SESSIONS`, `hbroker.cluster.sessions`), counted
  per owning instance (the instances' own in-process clients, `$cluster/<name>`, left out);
- the NATS server this command reached and the ones it knows of, and the cluster's streams
  (messages, retained, and the key-value buckets' `KV_<bucket>`): messages, bytes,
  consumers, and their replicas (leader, current, offline, lag).

A stream or bucket that does not exist yet (no instance started) is shown empty; a stream
JetStream did not describe (no quorum) carries its error. `render()` makes the tables.
Exit status: 0 when NATS answered, 1 when no NATS server did within `connect_timeout` (or
refused the credentials), or when the configuration has no `[cluster]` table.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import json
import re
import sys
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hbroker.text_table import table

if TYPE_CHECKING:
    from hbroker.config import ClusterConfig

__all__ = ["StatusError", "add_parser", "gather", "render", "run"]

CONNECTION_NAME = "hbroker-cluster-status"
REQUEST_TIMEOUT = 5.0  # seconds for each JetStream request
CONSUMER_INACTIVE = 2.0  # seconds the server keeps a read's consumer if it is not deleted
NOT_FOUND = 10059  # JetStream's error code: stream not found
NO_ANSWER = f"JetStream did not answer within {REQUEST_TIMEOUT:g} s (no quorum?)"


class StatusError(Exception):
    """What to print before exiting with status 1."""


class _GaveUp(Exception):
    """Every server was tried once: raised from the connection's error callback."""


# -- gathering --------------------------------------------------------------------------------

async def _connect(config: ClusterConfig) -> Any:
    """A NATS connection, each server of `servers` tried once (`connect_timeout` each)."""
    from hbroker.cluster.nats_connection import NatsAuthenticationError, connect

    failures: list[str] = []
    connecting = True

    async def on_error(exc: Exception) -> None:
        if not connecting:
            return
        what = str(exc) or type(exc).__name__
        if what not in failures:
            failures.append(what)
        errors[0] += 1
        if errors[0] >= len(config.servers):
            raise _GaveUp

    async def quiet() -> None:
        pass

    errors = [0]
    tried = ", ".join(config.servers)
    bound = config.connect_timeout * len(config.servers) + config.reconnect_wait + 1.0
    try:
        client = await asyncio.wait_for(connect(
            config, name=CONNECTION_NAME, on_disconnected=quiet, on_reconnected=quiet,
            on_error=on_error), bound)
    except NatsAuthenticationError as exc:
        raise StatusError(f"{exc} (servers: {tried})") from None
    except (_GaveUp, TimeoutError, OSError) as exc:
        why = "; ".join(failures) or str(exc) or type(exc).__name__
        raise StatusError(f"no NATS server answered within {config.connect_timeout:g} s "
                          f"(tried {tried}: {why})") from None
    connecting = False
    return client


async def _stream(nc: Any, name: str) -> dict[str, Any]:
    """A stream as JetStream describes it, `{"exists": False}` when it does not exist, or
    `{"error": ...}`; `ts` is the server's time of the answer."""
    try:
        msg = await nc.request(f"$JS.API.STREAM.INFO.{name}", b"", timeout=REQUEST_TIMEOUT)
        answer = json.loads(msg.data)
    except TimeoutError:
        return {"name": name, "error": NO_ANSWER}
    except Exception as exc:  # no responders: no JetStream on that server
        return {"name": name, "error": str(exc) or type(exc).__name__}
    error = answer.get("error")
    if error is not None:
        if error.get("err_code") == NOT_FOUND:
            return {"name": name, "exists": False}
        return {"name": name, "error": error.get("description") or str(error)}
    return {"name": name, "exists": True, "info": answer}


def _stream_row(kind: str, found: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"name": found["name"], "kind": kind,
                           "exists": found.get("exists", None)}
    if "error" in found:
        row["error"] = found["error"]
        return row
    info = found.get("info")
    if info is None:
        row.update(messages=0, bytes=0, consumers=0, replicas=None, leader=None, peers=[])
        return row
    state = info.get("state", {})
    cluster = info.get("cluster") or {}
    leader = cluster.get("leader")
    peers = [{"server": leader, "role": "leader", "current": True, "offline": False,
              "lag": 0, "active_s": 0.0}] if leader else []
    for peer in cluster.get("replicas") or ():
        peers.append({"server": peer.get("name"), "role": "replica",
                      "current": bool(peer.get("current")),
                      "offline": bool(peer.get("offline")), "lag": peer.get("lag", 0),
                      "active_s": round(peer.get("active", 0) / 1e9, 3)})
    row.update(messages=state.get("messages", 0), bytes=state.get("bytes", 0),
               consumers=state.get("consumer_count", 0),
               replicas=info.get("config", {}).get("num_replicas"), leader=leader,
               peers=peers)
    return row


async def _records(js: Any, bucket: str,
                   stream: dict[str, Any]) -> list[tuple[str, Any, float]]:
    """(key, value, JetStream's time of the record) of every key of a KV bucket (`stream`:
    its stream as `_stream` found it), read through one ephemeral consumer of the last
    record of each key. (Not nats-py's `kv.keys()`/watchers: their end-of-records marker can
    come before the records, and then a bucket reads as empty or short.)"""
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
    from nats.js.errors import ServiceUnavailableError

    info = stream.get("info")
    if info is None or not info.get("state", {}).get("messages"):
        return []
    name = "hbroker_status_" + uuid.uuid4().hex[:16]
    prefix = f"$KV.{bucket}."
    await js.add_consumer(stream["name"], ConsumerConfig(
        name=name, filter_subject=prefix + ">", deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
        ack_policy=AckPolicy.NONE, inactive_threshold=CONSUMER_INACTIVE, mem_storage=True,
        num_replicas=1))
    found: list[tuple[str, Any, float]] = []
    try:
        sub = await js.pull_subscribe_bind(name, stream=stream["name"])
        deadline = time.monotonic() + REQUEST_TIMEOUT * 4
        pending = None
        while pending != 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{bucket}: records still coming after "
                                   f"{REQUEST_TIMEOUT * 4:g} s")
            try:
                batch = await sub.fetch(256, timeout=REQUEST_TIMEOUT)
            except ServiceUnavailableError:
                # No responders: the new consumer's interest has not reached this client's
                # server yet (another server of the NATS cluster holds it).
                await asyncio.sleep(0.05)
                continue
            for msg in batch:
                pending = msg.metadata.num_pending
                operation = (msg.headers or {}).get("KV-Operation")
                if operation in ("DEL", "PURGE"):
                    continue
                try:
                    value = json.loads(msg.data)
                except ValueError:
                    value = None
                found.append((msg.subject[len(prefix):], value,
                              msg.metadata.timestamp.timestamp()))
        await sub.unsubscribe()
    finally:
        try:
            await js.delete_consumer(stream["name"], name)
        except Exception:  # gone by itself after CONSUMER_INACTIVE anyway
            pass
    return found


def _server_time(streams: Sequence[dict[str, Any]]) -> float | None:
    """The NATS server's time of its latest answer (`ts` of a stream info, nats-server 2.10
    and later)."""
    times = []
    for found in streams:
        ts = (found.get("info") or {}).get("ts")
        if ts:
            times.append(_parse_time(ts))
    return max(times) if times else None


def _parse_time(text: str) -> float:
    """An RFC 3339 time (nanoseconds: Python takes up to microseconds)."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.replace("Z", "+00:00"))
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def instance_row(token: str, record: dict[str, Any], written: float,
                 now: float) -> dict[str, Any]:
    """One instance's line from its lease record, JetStream's time of the record
    (`written`) and the NATS server's time now (`now`)."""
    from hbroker.cluster.leases import LEASE

    state = record.get("state", "?")
    lease = float(record.get("lease") or LEASE)
    since = max(0.0, now - written)
    if state == "alive" and since > lease:
        state = "stale"
    uptime = None
    if state in ("alive", "stale") and isinstance(record.get("started"), (int, float)) \
            and isinstance(record.get("renewed"), (int, float)):
        # the instance's own clock from its start to its last renewal, then the servers'
        uptime = round(max(0.0, record["renewed"] - record["started"]) + since, 1)
    row = {"name": record.get("node", token), "token": token, "state": state,
           "fenced": bool(record.get("fenced")), "clients": record.get("clients"),
           "sessions": record.get("sessions"), "uptime_s": uptime,
           "since_renewal_s": round(since, 1), "lease_s": lease,
           "durable": record.get("durable"), "run": record.get("run"),
           "started": record.get("started")}
    if record.get("state") == "dead":
        row.update(declared_by=record.get("by"), declared=record.get("declared"),
                   wills_pending=bool(record.get("wills")))
    return row


INTERNAL_CLIENT = "$cluster/"  # + node name: an instance's in-process client (routing)


def client_id(key: str) -> str | None:
    """The client id of a session record's key (`sessions.record_key`), or None."""
    try:
        return base64.urlsafe_b64decode(key + "=" * (-len(key) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None


def sessions_by_node(records: Sequence[tuple[str, Any, float]]) -> dict[str, int]:
    """How many session records name each owning instance, without the instances' own
    in-process clients (an instance's lease does not count its own either)."""
    counts: dict[str, int] = {}
    for key, value, _written in records:
        if (client_id(key) or "").startswith(INTERNAL_CLIENT):
            continue
        node = value.get("node") if isinstance(value, dict) else None
        node = node if isinstance(node, str) else "?"
        counts[node] = counts.get(node, 0) + 1
    return dict(sorted(counts.items()))


async def gather(config: ClusterConfig) -> dict[str, Any]:
    """The status report (the `--json` document). Raises StatusError when no NATS server
    answers."""
    from hbroker.cluster import leases, retained, routing, sessions, wills

    prefix = config.subject_prefix
    instances_bucket = leases.bucket_name(prefix)
    sessions_bucket = sessions.bucket_name(prefix)
    wills_bucket = wills.bucket_name(prefix)
    streams = [("messages", routing.stream_name(prefix)),
               ("retained", retained.stream_name(prefix)),
               ("instances", f"KV_{instances_bucket}"),
               ("sessions", f"KV_{sessions_bucket}"),
               ("wills", f"KV_{wills_bucket}")]
    nc = await _connect(config)
    try:
        # Streams first: the reads below add their own short-lived consumers.
        found = list(await asyncio.gather(*(_stream(nc, name) for _, name in streams)))
        answered = time.monotonic()
        by_stream = {f["name"]: f for f in found}
        js = nc.jetstream(timeout=REQUEST_TIMEOUT)
        report: dict[str, Any] = {"subject_prefix": prefix,
                                  "instances_bucket": instances_bucket}
        info = dict(getattr(nc, "_server_info", None) or {})  # the server's INFO (nats-py)
        connected = nc.connected_url
        report["nats"] = {
            "connected": {"url": connected.geturl() if connected else None,
                          "server_name": info.get("server_name"),
                          "server_id": info.get("server_id"),
                          "version": info.get("version"), "cluster": info.get("cluster"),
                          "jetstream": bool(info.get("jetstream"))},
            "servers": [{"url": s.uri.geturl(), "discovered": bool(s.discovered)}
                        for s in getattr(nc, "_server_pool", ())],
        }
        report["streams"] = [_stream_row(kind, f) for (kind, _), f in
                             zip(streams, found, strict=True)]
        server_time = _server_time(found)
        report["clock"] = "nats" if server_time is not None else "local"
        errors: dict[str, str] = {}

        async def records(bucket: str) -> list[tuple[str, Any, float]]:
            stream = by_stream[f"KV_{bucket}"]
            if "error" in stream:
                errors[bucket] = stream["error"]
                return []
            try:
                return await _records(js, bucket, stream)
            except TimeoutError:
                errors[bucket] = NO_ANSWER
                return []
            except Exception as exc:
                errors[bucket] = str(exc) or type(exc).__name__
                return []

        lease_records = await records(instances_bucket)
        # The server's time now: as it answered, and the time this machine counted since.
        now = server_time + time.monotonic() - answered if server_time is not None \
            else time.time()
        report["time"] = now
        report["instances"] = sorted(
            (instance_row(key, value, written, now) for key, value, written in lease_records
             if isinstance(value, dict)), key=lambda row: str(row["name"]))
        session_records = await records(sessions_bucket)
        owned = sessions_by_node(session_records)
        report["sessions"] = {"bucket": sessions_bucket, "total": sum(owned.values()),
                              "by_instance": owned}
        report["errors"] = errors
        return report
    finally:
        try:
            await asyncio.wait_for(nc.close(), REQUEST_TIMEOUT)
        except (TimeoutError, OSError):
            pass


# -- rendering --------------------------------------------------------------------------------


def _duration(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _size(count: int | None) -> str | None:
    if count is None:
        return None
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return None


INSTANCE_COLUMNS = (("name", "instance"), ("state", "state"), ("fenced", "fenced"),
                    ("clients", "clients"), ("sessions", "sessions"), ("uptime", "uptime"),
                    ("renewed", "renewed"), ("note", "note"))
SESSION_COLUMNS = (("instance", "instance"), ("sessions", "owned sessions"))
REPLICA_COLUMNS = (("stream", "stream"), ("server", "nats server"), ("role", "role"),
                   ("current", "current"), ("offline", "offline"), ("lag", "lag"),
                   ("active", "seen"))
STREAM_COLUMNS = (("name", "stream"), ("kind", "holds"), ("messages", "messages"),
                  ("size", "bytes"), ("consumers", "consumers"), ("replicas", "replicas"),
                  ("leader", "leader"), ("note", "note"))


def render(report: dict[str, Any]) -> str:
    """The report as text tables."""
    out: list[str] = []
    instances = []
    for row in report["instances"]:
        note = ""
        if row.get("declared_by") is not None:
            note = f"declared dead by {row['declared_by']}"
            if row.get("wills_pending"):
                note += ", wills pending"
        elif row["state"] == "stale":
            note = f"not renewed for over its {row['lease_s']:g} s lease"
        instances.append({**row, "uptime": _duration(row.get("uptime_s")),
                          "renewed": f"{row['since_renewal_s']:.1f}s ago", "note": note})
    errors = report.get("errors", {})

    def empty(bucket: str, none: str) -> str:
        return f"  not read: {errors[bucket]}" if bucket in errors else f"  {none}"

    out.append(f"Instances ({len(instances)})")
    out.append(table(instances, INSTANCE_COLUMNS) if instances else empty(
        report.get("instances_bucket", ""), "none: no instance has a lease record (none "
        "started yet)"))
    sessions_info = report["sessions"]
    out += ["", f"Sessions by instance ({sessions_info['total']} in "
            f"{sessions_info['bucket']})"]
    owned = [{"instance": node, "sessions": count}
             for node, count in sessions_info["by_instance"].items()]
    out.append(table(owned, SESSION_COLUMNS) if owned else empty(sessions_info["bucket"],
                                                                 "none"))
    nats = report["nats"]
    connected = nats["connected"]
    out += ["", "NATS servers",
            f"connected to:  {connected['url']} (server {connected['server_name']}, "
            f"version {connected['version']}, cluster {connected['cluster'] or '-'}, "
            f"JetStream {'yes' if connected['jetstream'] else 'no'})",
            "known servers: " + (", ".join(
                s["url"] + (" (discovered)" if s["discovered"] else "")
                for s in nats["servers"]) or "-")]
    replicas = [{**peer, "stream": stream["name"],
                 "active": f"{peer['active_s']:.1f}s ago" if peer["role"] == "replica"
                 else None}
                for stream in report["streams"] for peer in stream.get("peers") or ()]
    if replicas:
        out += ["", table(replicas, REPLICA_COLUMNS)]
    streams = []
    for row in report["streams"]:
        note = row.get("error") or ("not created yet" if row.get("exists") is False else "")
        streams.append({**row, "size": _size(row.get("bytes")), "note": note})
    out += ["", "Streams", table(streams, STREAM_COLUMNS)]
    clock = "the NATS server's clock" if report.get("clock") == "nats" else "this machine's clock"
    out += ["", f"(ages from JetStream's record times against {clock})"]
    return "\n".join(out)


# -- the command ------------------------------------------------------------------------------

def add_parser(sub: Any) -> None:
    """`hbroker cluster status` in the `hbroker` command's subparsers."""
    cluster = sub.add_parser("cluster", help="look at the cluster the instances form over NATS",
                             description="The cluster over NATS JetStream "
                             "(docs/clustering.md).")
    cmds = cluster.add_subparsers(dest="cluster_command", required=True, metavar="COMMAND")
    status = cmds.add_parser("status", help="instances, sessions, NATS servers and streams, "
                             "read from NATS with the configuration's [cluster] table")
    status.add_argument("-c", "--config", help="TOML configuration file with a [cluster] table")
    status.add_argument("--json", action="store_true", help="print one JSON document")


def run(args: argparse.Namespace) -> int:
    from hbroker.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"hbroker: {exc}", file=sys.stderr)
        return 2
    if config.cluster is None:
        where = args.config or "the embedded default configuration (no -c given)"
        print(f"hbroker cluster status: {where} has no [cluster] table: nothing to look at",
              file=sys.stderr)
        return 1
    try:
        report = asyncio.run(gather(config.cluster))
    except StatusError as exc:
        print(f"hbroker cluster status: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0
