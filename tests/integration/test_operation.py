"""Running the broker: $SYS, signals, the CLI, logging, the Mosquitto clients."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

from broker_process import ROOT
from clients import PahoClient, RawClient

HBROKER = [sys.executable, "-m", "hbroker"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*HBROKER, *args], capture_output=True, text=True, timeout=30,
                          cwd=ROOT)


# -- $SYS -----------------------------------------------------------------------------------


def test_sys_topics_report_broker_statistics_with_mosquitto_names(broker, uid):
    sub = PahoClient(broker.host, broker.port, f"{uid}-s")
    sub.subscribe("$SYS/broker/#", 0)
    seen: dict[str, bytes] = {}
    deadline = time.monotonic() + 5
    wanted = {"$SYS/broker/version", "$SYS/broker/uptime", "$SYS/broker/clients/connected",
              "$SYS/broker/clients/total", "$SYS/broker/messages/received",
              "$SYS/broker/messages/sent", "$SYS/broker/bytes/received",
              "$SYS/broker/bytes/sent", "$SYS/broker/subscriptions/count",
              "$SYS/broker/retained messages/count"}
    # The retained values may predate this client; the next update (every second here)
    # counts it.
    while time.monotonic() < deadline and not (
            wanted <= seen.keys() and int(seen["$SYS/broker/clients/connected"]) >= 1):
        msg = sub.expect()
        seen[msg.topic] = msg.payload
    assert wanted <= seen.keys()
    assert int(seen["$SYS/broker/clients/connected"]) >= 1
    assert seen["$SYS/broker/uptime"].endswith(b" seconds")


def test_sys_counters_are_updated_every_interval(broker, uid):
    sub = PahoClient(broker.host, broker.port, f"{uid}-s")
    sub.subscribe("$SYS/broker/uptime", 0)
    first = int(sub.expect().payload.split()[0])
    second = int(sub.expect(4).payload.split()[0])
    assert second > first


def test_sys_disabled_publishes_nothing(make_broker, uid):
    b = make_broker(sys={"enabled": False})
    sub = PahoClient(b.host, b.port, f"{uid}-s")
    sub.subscribe("$SYS/#", 0)
    sub.expect_none(1.5)


# -- signals --------------------------------------------------------------------------------


def test_sigterm_sends_disconnect_0x8b_to_v5_clients_and_exits_0(make_broker, uid):
    b = make_broker()
    c5 = RawClient(b.host, b.port, 5)
    c5.connect(f"{uid}-5")
    c4 = RawClient(b.host, b.port, 4)
    c4.connect(f"{uid}-4")
    b.signal(signal.SIGTERM)
    got5 = c5.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got5] == [(14, 0x8B)]
    assert c4.closed_by_broker() == []
    assert b.proc.wait(10) == 0


def test_sigterm_does_not_publish_wills(make_broker, uid):
    # Nothing spurious on shutdown: the clients did nothing wrong.
    from hbroker_ext.codec import Will

    b = make_broker()
    watcher = RawClient(b.host, b.port, 5)
    watcher.connect(f"{uid}-w")
    watcher.subscribe(f"{uid}/will", 0)
    c = RawClient(b.host, b.port, 5)
    c.connect(uid, will=Will(f"{uid}/will", b"x"))
    b.signal(signal.SIGTERM)
    got = watcher.closed_by_broker()
    assert [p.packet_type for p in got] == [14]


def test_sigint_stops_the_broker_cleanly(make_broker):
    b = make_broker()
    b.signal(signal.SIGINT)
    assert b.proc.wait(10) == 0


def test_sighup_reloads_log_level_and_reports_restart_only_changes(make_broker):
    b = make_broker(logging={"level": "info"})
    text = b.config_path.read_text()
    text = text.replace('level = "info"', 'level = "warning"')
    text = text.replace("[limits]", "[limits]")
    text = text.replace(f"port = {b.port}", f"port = {b.port}\nname = \"renamed\"")
    b.config_path.write_text(text)
    b.signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while "SIGHUP" not in b.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = b.log()
    assert "needs a restart" in log or "need a restart" in log
    assert "listeners" in log
    # The broker still serves after the reload.
    c = RawClient(b.host, b.port, 5)
    assert c.connect("after-reload").reason_code == 0


def test_sighup_with_broken_config_keeps_running(make_broker):
    b = make_broker()
    b.config_path.write_text("[limits]\nmax_inflight = 'many'\n")
    b.signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while "not reloaded" not in b.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "limits.max_inflight" in b.log()
    c = RawClient(b.host, b.port, 5)
    assert c.connect("still-up").reason_code == 0


def spawn_unready(tmp_path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, int]:
    """`hbroker serve` with SQLite storage (so that starting takes a while), not waited for."""
    from broker_process import free_port

    port = free_port()
    config = tmp_path / "hbroker.toml"
    config.write_text(f'[[listeners]]\ntype = "tcp"\nhost = "127.0.0.1"\nport = {port}\n'
                      f'[storage]\nbackend = "sqlite"\npath = "{tmp_path / "state.db"}"\n'
                      '[logging]\nlevel = "debug"\n')
    log = open(tmp_path / "broker.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "hbroker", "serve", "-c", str(config)],
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    return proc, port


def wait_for_log(tmp_path, text: str, proc: subprocess.Popen, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while True:
        log = (tmp_path / "broker.log").read_text(errors="replace")
        if text in log:
            return log
        assert proc.poll() is None, f"broker exited with {proc.returncode}:\n{log}"
        assert time.monotonic() < deadline, f"no {text!r} in the log:\n{log}"
        time.sleep(0.005)


def test_sighup_while_starting_does_not_stop_the_broker_and_reloads_once_started(tmp_path):
    proc, port = spawn_unready(tmp_path)
    try:
        wait_for_log(tmp_path, " INFO ", proc)  # the first log line: storage is being opened
        proc.send_signal(signal.SIGHUP)
        log = wait_for_log(tmp_path, "SIGHUP: configuration reloaded", proc)
        assert "hbroker started" in log
        assert RawClient("127.0.0.1", port, 5).connect("after-early-hup").reason_code == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def test_systemd_is_told_when_the_broker_is_ready_and_when_it_stops(tmp_path):
    """Type=notify: READY=1 once storage is restored and the listeners accept connections,
    STOPPING=1 on SIGTERM (sd_notify's datagrams on $NOTIFY_SOCKET)."""
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(path)
        notify.settimeout(15)
        proc, port = spawn_unready(tmp_path, {"NOTIFY_SOCKET": path})
        try:
            assert notify.recv(256) == b"READY=1"
            assert RawClient("127.0.0.1", port, 5).connect("ready").reason_code == 0
            proc.send_signal(signal.SIGTERM)
            assert notify.recv(256) == b"STOPPING=1"
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0


# -- CLI and logging ----------------------------------------------------------------------


def test_version_prints_version_event_loop_and_compiled_extensions():
    out = run_cli("--version")
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    assert lines[0].startswith("hbroker 0.")
    assert any(line.startswith("event loop: uvloop") for line in lines)
    assert ("compiled extensions: hbroker_ext.codec, hbroker_ext.topics, hbroker_ext.routing, "
            "hbroker_ext.sqlite_writer, hbroker_ext.harcp") in lines


def test_check_config_prints_effective_configuration(tmp_path):
    cfg = tmp_path / "ok.toml"
    cfg.write_text("[limits]\nmax_inflight = 5\n")
    out = run_cli("check-config", "-c", str(cfg))
    assert out.returncode == 0, out.stderr
    assert "max_inflight = 5" in out.stdout
    assert "[[listeners]]" in out.stdout


def test_check_config_names_key_and_file_on_error(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[limits]\nmax_inflght = 5\n")
    out = run_cli("check-config", "-c", str(cfg))
    assert out.returncode != 0
    assert str(cfg) in out.stderr
    assert "limits.max_inflght" in out.stderr and "max_inflight" in out.stderr


def test_serve_refuses_bad_config_with_clear_error(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[[listeners]]\ntype = "tls"\n')
    out = run_cli("serve", "-c", str(cfg))
    assert out.returncode == 2
    assert out.stderr == (f"hbroker: {cfg}: listeners[0].certfile: expected a PEM file name "
                          '(type is "tls"), got nothing\n')


def test_every_connection_close_is_logged_once_with_client_and_reason(make_broker, uid):
    b = make_broker()
    c = RawClient(b.host, b.port, 5)
    c.connect(uid)
    c.close()
    _wait_for_log(b, f"connection closed client_id={uid} ")
    closes = [line for line in b.log().splitlines()
              if "connection closed" in line and uid in line]
    assert len(closes) == 1
    assert "peer=127.0.0.1:" in closes[0] and "protocol=5" in closes[0]
    assert "reason=" in closes[0]


def test_json_log_format_writes_one_object_per_line(make_broker, uid):
    b = make_broker(logging={"format": "json", "level": "info"})
    c = RawClient(b.host, b.port, 4)
    c.connect(uid)
    c.close()
    _wait_for_log(b, f'"msg": "connection closed", "client_id": "{uid}"')
    lines = b.log().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    closed = [r for r in records if r["msg"] == "connection closed" and r.get("client_id") == uid]
    assert len(closed) == 1
    assert closed[0]["protocol"] == 4 and closed[0]["level"] == "info"


# -- Mosquitto's clients -------------------------------------------------------------------


def _mosquitto_round_trip(broker, uid: str, version: str, qos: str) -> None:
    topic = f"{uid}/v{version}/q{qos}"
    client_id = f"{uid[-12:]}-{version}-{qos}"
    sub = subprocess.Popen(["mosquitto_sub", "-h", broker.host, "-p", str(broker.port),
                            "-V", version, "-q", qos, "-t", topic, "-C", "3", "-W", "10",
                            "-i", client_id], stdout=subprocess.PIPE, text=True)
    _wait_for_log(broker, f"subscribed client_id={client_id} ")
    for i in range(3):
        subprocess.run(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port),
                        "-V", version, "-q", qos, "-t", topic, "-m", f"msg{i}"],
                       check=True, timeout=10)
    out, _ = sub.communicate(timeout=15)
    assert out.split() == ["msg0", "msg1", "msg2"]
    assert sub.returncode == 0


def _wait_for_log(broker, text: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while text not in broker.log():
        assert time.monotonic() < deadline, f"{text!r} not in the broker log"
        time.sleep(0.05)


def test_mosquitto_clients_v5_round_trip_at_every_qos(broker, uid):
    for qos in ("0", "1", "2"):
        _mosquitto_round_trip(broker, uid, "5", qos)


def test_mosquitto_clients_v311_round_trip_at_every_qos(broker, uid):
    for qos in ("0", "1", "2"):
        _mosquitto_round_trip(broker, uid, "311", qos)
