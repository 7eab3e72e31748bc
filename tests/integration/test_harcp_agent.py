"""The C agent (c_agent/, its Linux example) against the real broker and the real controller:
`hbroker device exec|query` commands get signed answers; forged, replayed and stale frames are
refused with `error` frames carrying the codes of docs/harcp.md §4; the agent reconnects and
resubscribes after a broker restart.

The agent binary is built by `make c-agent` (build/c_agent/har_agent_example); `make test`
builds it first. Without it these tests fail, they do not skip."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from broker_process import ROOT, BrokerProcess

from hbroker.control.harcp import (
    CAPABILITY_QUERY,
    ERROR,
    EXECUTE,
    STATUS,
    HarcpError,
    Message,
    Receiver,
    SequenceStore,
    build_frame,
    now_ms,
    sequence_path_for,
    topic_down,
    topic_up,
)
from hbroker.control.keys import Key, read_key_file

AGENT = ROOT / "build" / "c_agent" / "har_agent_example"
DEVICE = "dev-1"
WAIT = 20.0  # seconds: an upper bound for things that take milliseconds, never asserted on


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


class UpListener:
    """An MQTT client subscribed to the device's up topic: every frame the agent sends,
    checked in arrival order by a controller-role receiver that trusts the device key."""

    def __init__(self, host: str, port: int, device_key: Key) -> None:
        self.receiver = Receiver("controller", DEVICE, [device_key])
        self.frames: queue.Queue[bytes] = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"listener-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv311)
        subscribed: queue.Queue[bool] = queue.Queue()
        self.client.on_message = lambda c, u, m: self.frames.put(bytes(m.payload))
        self.client.on_subscribe = lambda c, u, mid, rc, p: subscribed.put(True)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic_up(DEVICE), qos=1)
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        subscribed.get(timeout=WAIT)

    def next(self, timeout: float = WAIT) -> Message:
        """The next frame from the agent, which must pass every check of §5."""
        raw = self.frames.get(timeout=timeout)
        try:
            return self.receiver.receive(raw)
        except HarcpError as exc:
            raise AssertionError(f"the agent sent a frame a controller refuses: {exc.name} "
                                 f"{exc.detail}") from None

    def answer_to(self, operation_id: bytes, timeout: float = WAIT) -> Message:
        """The agent's answer to one operation (skipping answers to others)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no answer to {operation_id.hex()} within {timeout} s")
            try:
                message = self.next(remaining)
            except queue.Empty:
                continue
            if message.operation_id == operation_id:
                return message

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Env:
    tmp: Path
    broker: BrokerProcess
    agent: subprocess.Popen
    agent_log: Path
    controller_key_path: Path
    device_pub_path: Path
    controller: Key
    device: Key
    stranger: Key
    listener: UpListener
    start_status: Message

    def log(self) -> str:
        return self.agent_log.read_text(errors="replace")

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "hbroker", "device", *args, "--broker",
             f"{self.broker.host}:{self.broker.port}", "--key", str(self.controller_key_path),
             "--device-key", str(self.device_pub_path), "--json", "--timeout", "10"],
            cwd=self.tmp, capture_output=True, text=True, timeout=60, env=_env())

    def cli_json(self, *args: str, exit_code: int) -> dict[str, Any]:
        proc = self.cli(*args)
        assert proc.returncode == exit_code, (
            f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}\n"
            f"agent log:\n{self.log()}")
        return json.loads(proc.stdout)

    def next_sequence(self) -> int:
        """The controller's next sequence, from the same state file the CLI uses."""
        return SequenceStore(sequence_path_for(self.controller_key_path)).next()

    def publish(self, frame: bytes) -> None:
        """Publish raw bytes on the device's down topic (QoS 1) and wait for the PUBACK."""
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id=f"raw-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv311)
        client.connect(self.broker.host, self.broker.port, keepalive=30)
        client.loop_start()
        try:
            info = client.publish(topic_down(DEVICE), frame, qos=1)
            info.wait_for_publish(timeout=WAIT)
            assert info.is_published(), "the broker did not acknowledge the publication"
        finally:
            client.disconnect()
            client.loop_stop()

    def execute_frame(self, op: str, args: dict[str, Any], *, key: Key | None = None,
                      timestamp: int | None = None) -> tuple[bytes, bytes]:
        operation_id = uuid.uuid4().bytes
        frame = build_frame(EXECUTE, {"device": DEVICE, "op": op, "args": args},
                            key=key or self.controller, operation_id=operation_id,
                            timestamp=now_ms() if timestamp is None else timestamp,
                            sequence=self.next_sequence())
        return frame, operation_id

    def wait_log(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            assert self.agent.poll() is None, f"the agent exited:\n{self.log()}"
            assert time.monotonic() < deadline, f"{text!r} not in the agent log:\n{self.log()}"
            time.sleep(0.1)


def _generate_keys(tmp: Path) -> None:
    for name in ("controller", "device", "stranger"):
        proc = subprocess.run([sys.executable, "-m", "hbroker", "keys", "generate", name,
                               "--dir", str(tmp)], capture_output=True, text=True,
                              timeout=60, env=_env(), cwd=tmp)
        assert proc.returncode == 0, proc.stderr


def _start_agent(tmp: Path, broker: BrokerProcess, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(AGENT), "--host", broker.host, "--port", str(broker.port), "--device-id", DEVICE,
         "--key", str(tmp / "device.key"), "--trust", str(tmp / "controller.pub"),
         "--state", str(tmp / "dev-1.state"), "--keepalive", "5"],
        cwd=tmp, stdout=subprocess.DEVNULL, stderr=open(log, "wb"))


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    if not AGENT.is_file() or not os.access(AGENT, os.X_OK):
        pytest.fail(f"the C agent binary {AGENT} is missing: build it with `make c-agent` "
                    "(`make test` does this first)")
    _generate_keys(tmp_path)
    broker_dir = tmp_path / "broker"
    broker_dir.mkdir()
    broker = BrokerProcess(broker_dir, {"storage": {"backend": "memory"}})
    device_pub = read_key_file(tmp_path / "device.pub")
    listener = UpListener(broker.host, broker.port, device_pub)
    log = tmp_path / "agent.log"
    e = Env(tmp_path, broker, _start_agent(tmp_path, broker, log), log,
            tmp_path / "controller.key", tmp_path / "device.pub",
            read_key_file(tmp_path / "controller.key"), device_pub,
            read_key_file(tmp_path / "stranger.key"), listener, None)  # type: ignore[arg-type]
    try:
        try:
            e.start_status = listener.next()
        except queue.Empty:
            raise AssertionError(f"no status from the agent:\n{e.log()}") from None
        yield e
    finally:
        e.listener.close()
        if e.agent.poll() is None:
            e.agent.send_signal(signal.SIGTERM)
            try:
                e.agent.wait(10)
            except subprocess.TimeoutExpired:
                e.agent.kill()
                e.agent.wait()
        code = broker.stop()
    assert e.agent.returncode == 0, f"agent exit code {e.agent.returncode}:\n{e.log()}"
    assert code == 0, broker.log()


def test_agent_reports_status_at_start(env: Env) -> None:
    status = env.start_status
    assert status.type == STATUS and status.verified
    assert status.key_id == env.device.key_id
    assert status.payload["health"] == "ok"
    assert isinstance(status.payload["uptime_s"], int)
    assert status.payload["inventory"]["ops"] == ["led.set", "sys.info"]
    assert status.payload["inventory"]["hostname"] == socket.gethostname()


def test_exec_led_set_and_sys_info(env: Env) -> None:
    out = env.cli_json("exec", DEVICE, "led.set", "--arg", "on=true", exit_code=0)
    assert out["status"] == "done" and out["type"] == "ack"
    assert out["verified"] is True and out["key_id"] == env.device.key_id.hex()
    assert out["result"] == {"on": True}
    out = env.cli_json("exec", DEVICE, "led.set", "--arg", "on=false", exit_code=0)
    assert out["result"] == {"on": False}

    out = env.cli_json("exec", DEVICE, "sys.info", exit_code=0)
    result = out["result"]
    assert out["status"] == "done" and out["verified"] is True
    assert result["hostname"] == socket.gethostname()
    assert isinstance(result["uptime_s"], int) and result["uptime_s"] >= 0
    assert len(result["load"]) == 3 and all(isinstance(x, float) for x in result["load"])

    # bad arguments: the handler fails the operation (exit 1), unknown ops are rejected (3)
    out = env.cli_json("exec", DEVICE, "led.set", "--arg", "on=maybe", exit_code=1)
    assert out["status"] == "failed" and out["error"]["message"] == "args.on must be a bool"
    out = env.cli_json("exec", DEVICE, "fw.flash", exit_code=3)
    assert out["status"] == "rejected"
    assert out["error"]["code"] == 16 and out["error"]["message"] == "unknown_op"


def test_query_lists_the_ops(env: Env) -> None:
    out = env.cli_json("query", DEVICE, exit_code=0)
    assert out["type"] == "capability_response" and out["verified"] is True
    assert out["result"]["ops"] == ["led.set", "sys.info"]
    assert out["result"]["tier"] == "signed"
    assert out["result"]["max_payload"] == 1024
    assert out["result"]["agent"].startswith("hbroker-c-agent/")
    # without the controller's key the command goes unsigned and is refused (code 8)
    proc = subprocess.run(
        [sys.executable, "-m", "hbroker", "device", "query", DEVICE, "--broker",
         f"{env.broker.host}:{env.broker.port}", "--device-key", str(env.device_pub_path),
         "--json", "--timeout", "10"],
        cwd=env.tmp, capture_output=True, text=True, timeout=60,
        env={**_env(), "XDG_STATE_HOME": str(env.tmp / "state")})
    assert proc.returncode == 4, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert out["error"]["code"] == 8 and out["error"]["reason"] == "unsigned_refused"


def _assert_error(env: Env, operation_id: bytes, code: int, reason: str) -> None:
    answer = env.listener.answer_to(operation_id)
    assert answer.type == ERROR, f"expected an error frame, got {answer.type_name}"
    assert answer.verified and answer.key_id == env.device.key_id
    assert answer.payload["code"] == code and answer.payload["reason"] == reason, (
        f"{answer.payload}\nagent log:\n{env.log()}")


def test_forged_replayed_and_stale_frames_are_refused(env: Env) -> None:
    # signed by a key the device does not trust
    frame, op = env.execute_frame("led.set", {"on": True}, key=env.stranger)
    env.publish(frame)
    _assert_error(env, op, 9, "unknown_key")

    # the controller's key id, but a signature from another key
    frame, op = env.execute_frame("led.set", {"on": True})
    forged = frame[:-64] + env.stranger.sign(frame[:-64])
    env.publish(forged)
    _assert_error(env, op, 10, "bad_signature")

    # a genuine frame works once; the same bytes again are a replay
    frame, op = env.execute_frame("led.set", {"on": True})
    env.publish(frame)
    ack = env.listener.answer_to(op)
    assert ack.payload["status"] == "done" and ack.payload["result"] == {"on": True}
    env.publish(frame)
    _assert_error(env, op, 13, "replayed")

    # ten minutes old: outside the ±300 s window
    frame, op = env.execute_frame("led.set", {"on": False}, timestamp=now_ms() - 600_000)
    env.publish(frame)
    _assert_error(env, op, 12, "stale")

    # for another device
    operation_id = uuid.uuid4().bytes
    frame = build_frame(CAPABILITY_QUERY, {"device": "dev-2"}, key=env.controller,
                        operation_id=operation_id, timestamp=now_ms(),
                        sequence=env.next_sequence())
    env.publish(frame)
    _assert_error(env, operation_id, 15, "wrong_target")

    # an unreadable frame gets no answer; the agent is still there and answers the CLI
    env.publish(b"\x01\x01\x01garbage")
    out = env.cli_json("exec", DEVICE, "led.set", "--arg", "on=true", exit_code=0)
    assert out["result"] == {"on": True}
    assert "truncated (2)" in env.log()


def test_agent_survives_a_broker_restart(env: Env) -> None:
    env.cli_json("exec", DEVICE, "led.set", "--arg", "on=true", exit_code=0)
    env.wait_log("(connection 1)")
    env.listener.close()
    assert env.broker.stop() == 0, env.broker.log()
    env.broker.restart()
    # the agent notices the lost connection, backs off, reconnects and resubscribes
    env.wait_log("(connection 2)")
    env.listener = UpListener(env.broker.host, env.broker.port, env.device)
    out = env.cli_json("exec", DEVICE, "led.set", "--arg", "on=false", exit_code=0)
    assert out["status"] == "done" and out["result"] == {"on": False}
    out = env.cli_json("query", DEVICE, exit_code=0)
    assert out["result"]["ops"] == ["led.set", "sys.info"]
    # the same again after a kill -9 of the broker: no goodbye on the socket
    env.broker.kill()
    env.broker.restart()
    env.wait_log("(connection 3)")
    out = env.cli_json("exec", DEVICE, "sys.info", exit_code=0)
    assert out["status"] == "done"


def test_sequence_survives_an_agent_restart(env: Env) -> None:
    """The agent's state file keeps its outgoing counter and the controller's last accepted
    sequence: after a restart its answers still rise, and old sequences stay refused."""
    env.cli_json("exec", DEVICE, "led.set", "--arg", "on=true", exit_code=0)
    old_frame, _ = env.execute_frame("led.set", {"on": True})  # built now, sent later
    env.cli_json("exec", DEVICE, "led.set", "--arg", "on=true", exit_code=0)
    env.agent.send_signal(signal.SIGTERM)
    assert env.agent.wait(10) == 0
    env.agent = _start_agent(env.tmp, env.broker, env.agent_log)
    # the listener's receiver refuses any frame whose sequence is not above the last one it
    # accepted from the device key: the new process's status must continue the count
    seen = []
    while (message := env.listener.next()).type != STATUS:
        seen.append(message.sequence)
    assert len(seen) == 2 and message.sequence > max(seen)
    # a frame with a fresh operation id but a sequence below the last accepted one
    op = old_frame[3:19]
    env.publish(old_frame)
    _assert_error(env, op, 14, "sequence")
