"""`hbroker device exec|query` against the real broker, answered by a device.

The device here is a small Python responder built on the library's Receiver, a stand-in until
the C agent exists (the end-to-end test with the real C agent lives with c_agent/). It takes
`led.set` (done, the args as result), `valve.move` (failed), `fw.update` (accepted, then
done), `silent` (no answer) and refuses any other op with ack `rejected` / unknown_op.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from broker_process import ROOT, BrokerProcess

from hbroker.control.harcp import (
    ACK,
    CAPABILITY_RESPONSE,
    ERROR,
    EXECUTE,
    HarcpError,
    Receiver,
    SequenceStore,
    Signer,
    error_answer,
    topic_down,
    topic_up,
)
from hbroker.control.keys import Key, read_key_file, write_key_files

DEVICE_ID = "dev-1"


class Device:
    """A HARCP device on MQTT: verifies commands with the controller's key, answers signed."""

    def __init__(self, broker: BrokerProcess, controller: Key, own_key: Key, state: Path,
                 device_id: str = DEVICE_ID) -> None:
        self.device_id = device_id
        self.receiver = Receiver("device", device_id, [controller], max_payload=1024)
        self.signer = Signer(own_key, SequenceStore(state / f"{device_id}.seq"))
        self.refusals: list[str] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id,
                                  protocol=mqtt.MQTTv311)
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe(topic_down(device_id), qos=1)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert subscribed.wait(10), "the device's subscription was not acknowledged"

    def answer(self, type_: int, payload: dict[str, Any], operation_id: bytes) -> None:
        frame = self.signer.frame(type_, payload, operation_id)
        self.client.publish(topic_up(self.device_id), frame, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: Any) -> None:
        try:
            command = self.receiver.receive(message.payload)
        except HarcpError as exc:
            self.refusals.append(exc.name)
            if (answer := error_answer(exc)) is not None:
                self.answer(ERROR, answer, exc.frame.operation_id)
            return
        if command.type != EXECUTE:
            self.answer(CAPABILITY_RESPONSE, {
                "agent": "pytest-device/1", "ops": ["led.set", "valve.move", "fw.update"],
                "max_payload": 1024, "tier": "signed"}, command.operation_id)
            return
        op, args = command.payload["op"], command.payload["args"]
        if op == "led.set":
            self.answer(ACK, {"status": "done", "result": args}, command.operation_id)
        elif op == "valve.move":
            self.answer(ACK, {"status": "failed",
                              "error": {"code": 3, "message": "valve stuck"}},
                        command.operation_id)
        elif op == "fw.update":
            self.answer(ACK, {"status": "accepted"}, command.operation_id)
            self.answer(ACK, {"status": "done", "result": {"version": "1.5"}},
                        command.operation_id)
        elif op != "silent":
            self.answer(ACK, {"status": "rejected",
                              "error": {"code": 16, "message": f"no op {op}"}},
                        command.operation_id)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A broker, the controller's and the device's key files, and the device."""
    tmp = tmp_path_factory.mktemp("harcp")
    broker = BrokerProcess(tmp, {"storage": {"backend": "memory"}})
    keys = tmp / "keys"
    controller_key, _ = write_key_files(Key.generate(), "controller", keys)
    device_key, device_pub = write_key_files(Key.generate(), "dev-1", keys)
    stranger_key, stranger_pub = write_key_files(Key.generate(), "stranger", keys)
    device = Device(broker, read_key_file(controller_key), read_key_file(device_key), tmp)
    yield {"broker": broker, "device": device, "controller_key": controller_key,
           "device_pub": device_pub, "stranger_key": stranger_key,
           "stranger_pub": stranger_pub, "tmp": tmp}
    device.close()
    assert broker.stop() == 0, broker.log()


def hbroker(world: dict[str, Any], *args: str, key: Path | None = None,
            device_keys: tuple[Path, ...] = ()) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "hbroker", "device", *args,
               "--broker", f"{world['broker'].host}:{world['broker'].port}"]
    if key is not None:
        command += ["--key", str(key)]
    for path in device_keys:
        command += ["--device-key", str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT),
                               "XDG_STATE_HOME": str(world["tmp"] / "state")})


def test_exec_prints_the_result_of_done_and_exits_0(world: dict[str, Any]) -> None:
    result = hbroker(world, "exec", DEVICE_ID, "led.set", "--arg", "on=true", "--arg",
                     "level=40", "--arg", "mode=eco", key=world["controller_key"],
                     device_keys=(world["device_pub"],))
    assert result.returncode == 0, result.stderr
    assert result.stdout == 'done: {"on": true, "level": 40, "mode": "eco"}\n'
    assert "not verified" not in result.stderr


def test_exec_json_reports_a_verified_answer(world: dict[str, Any]) -> None:
    result = hbroker(world, "exec", DEVICE_ID, "led.set", "--arg", 'rgb=[255, 0, 0]',
                     "--json", key=world["controller_key"], device_keys=(world["device_pub"],))
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert (outcome["status"], outcome["type"], outcome["verified"]) == ("done", "ack", True)
    assert outcome["result"] == {"rgb": [255, 0, 0]}
    assert outcome["key_id"] == read_key_file(world["device_pub"]).key_id.hex()


def test_sequence_increases_across_exec_processes(world: dict[str, Any]) -> None:
    state = Path(str(world["controller_key"]) + ".seq")
    before = int(state.read_text()) if state.exists() else 0
    for _ in range(2):
        result = hbroker(world, "exec", DEVICE_ID, "led.set", key=world["controller_key"])
        assert result.returncode == 0, result.stdout + result.stderr
    assert int(state.read_text()) == before + 2
    assert "sequence" not in world["device"].refusals


def test_exec_without_device_key_says_the_answer_is_unverified(world: dict[str, Any]
                                                              ) -> None:
    result = hbroker(world, "exec", DEVICE_ID, "led.set", key=world["controller_key"])
    assert result.returncode == 0
    assert "not verified" in result.stderr


def test_exec_waits_past_accepted_for_done(world: dict[str, Any]) -> None:
    result = hbroker(world, "exec", DEVICE_ID, "fw.update", key=world["controller_key"],
                     device_keys=(world["device_pub"],))
    assert (result.returncode, result.stdout) == (0, 'done: {"version": "1.5"}\n')


def test_exec_failed_exits_1(world: dict[str, Any]) -> None:
    result = hbroker(world, "exec", DEVICE_ID, "valve.move", "--arg", "position=40",
                     key=world["controller_key"], device_keys=(world["device_pub"],))
    assert (result.returncode, result.stdout) == (1, "failed: valve stuck (code 3)\n")


def test_exec_of_an_unknown_op_is_rejected_and_exits_3(world: dict[str, Any]) -> None:
    result = hbroker(world, "exec", DEVICE_ID, "fan.set", key=world["controller_key"],
                     device_keys=(world["device_pub"],))
    assert (result.returncode, result.stdout) == (3, "rejected: no op fan.set (code 16)\n")


def test_exec_without_answer_times_out_with_5(world: dict[str, Any]) -> None:
    result = hbroker(world, "exec", DEVICE_ID, "silent", "--timeout", "1",
                     key=world["controller_key"], device_keys=(world["device_pub"],))
    assert result.returncode == 5
    assert result.stdout == "timeout: no answer from dev-1 within 1 s\n"


def test_command_signed_by_an_untrusted_key_is_refused_by_the_device_exit_4(
        world: dict[str, Any]) -> None:
    result = hbroker(world, "exec", DEVICE_ID, "led.set", key=world["stranger_key"],
                     device_keys=(world["device_pub"],))
    assert result.returncode == 4
    assert result.stdout.startswith("refused by dev-1: unknown_key (code 9)")


def test_answer_that_fails_verification_is_reported_and_ignored(world: dict[str, Any]
                                                                ) -> None:
    result = hbroker(world, "exec", DEVICE_ID, "led.set", "--timeout", "2",
                     key=world["controller_key"], device_keys=(world["stranger_pub"],))
    assert result.returncode == 5
    assert "answer refused: unknown_key" in result.stderr


def test_unsigned_command_is_refused_by_a_signed_tier_device(world: dict[str, Any]) -> None:
    result = hbroker(world, "exec", DEVICE_ID, "led.set", device_keys=(world["device_pub"],))
    assert result.returncode == 4
    assert "sending the command unsigned" in result.stderr
    assert result.stdout.startswith("refused by dev-1: unsigned_refused (code 8)")


def test_query_prints_the_capabilities(world: dict[str, Any]) -> None:
    result = hbroker(world, "query", DEVICE_ID, key=world["controller_key"],
                     device_keys=(world["device_pub"],))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ("agent: pytest-device/1\nops: led.set, valve.move, fw.update\n"
                             "max_payload: 1024\ntier: signed\n")


def test_unreachable_broker_exits_6(world: dict[str, Any], tmp_path: Path) -> None:
    from broker_process import free_port

    result = subprocess.run(
        [sys.executable, "-m", "hbroker", "device", "exec", DEVICE_ID, "led.set", "--broker",
         f"127.0.0.1:{free_port()}", "--key", str(world["controller_key"])],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 6
    assert "cannot connect" in result.stderr


def test_bad_arguments_exit_2(world: dict[str, Any]) -> None:
    result = hbroker(world, "exec", DEVICE_ID, "led.set", "--arg", "novalue",
                     key=world["controller_key"])
    assert result.returncode == 2 and "KEY=VALUE" in result.stderr
