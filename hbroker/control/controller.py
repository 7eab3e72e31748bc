"""The controller side of HARCP over MQTT: sign a command, publish it to the device's down
topic, wait for the answer with the same operation id on its up topic (docs/harcp.md §6, §13).

Works through any MQTT 3.1.1 broker (paho-mqtt). Used by `hbroker device exec|query`.
"""

from __future__ import annotations

import json
import queue
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from hbroker.control.harcp import (
    ACK,
    CAPABILITY_QUERY,
    CAPABILITY_RESPONSE,
    ERROR,
    EXECUTE,
    HarcpError,
    Message,
    Receiver,
    Signer,
    topic_down,
    topic_up,
)
from hbroker.control.keys import Key

# Exit codes of `hbroker device exec|query` (docs/harcp.md §13).
EXIT_DONE = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REJECTED = 3
EXIT_REFUSED = 4
EXIT_TIMEOUT = 5
EXIT_BROKER = 6

ANSWER_MAX_PAYLOAD = 65_536
DEFAULT_PORT = 1883


class BrokerError(Exception):
    """The MQTT broker could not be reached, or refused the connection or subscription."""


def parse_broker(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `HOST` (port 1883) or `[IPv6]:PORT`."""
    host, sep, port = text.rpartition(":")
    if not sep or (host.count(":") and not host.startswith("[")):
        host, port = text, str(DEFAULT_PORT)
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--broker must be HOST:PORT, not {text!r}")
    return host, int(port)


def parse_arg(item: str) -> tuple[str, Any]:
    """`k=v`: v as JSON when it parses, else the string itself."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ValueError(f"--arg must be KEY=VALUE, not {item!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def jsonable(value: Any) -> Any:
    """A payload value as JSON: bin as {"$bin": hex}, as in the test vectors."""
    if isinstance(value, bytes):
        return {"$bin": value.hex()}
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


@dataclass
class Outcome:
    """What came back for one command, and the exit code it means."""

    device: str
    operation_id: bytes
    exit_code: int
    answer: Message | None = None
    progress: list[str] = field(default_factory=list)  # `accepted` acks seen on the way
    refused: list[str] = field(default_factory=list)  # answers with our id that failed §5

    @property
    def status(self) -> str:
        if self.answer is None:
            return "timeout"
        if self.answer.type == ACK:
            return self.answer.payload["status"]
        if self.answer.type == ERROR:
            return "refused"
        return "done"

    def to_json(self) -> dict[str, Any]:
        a = self.answer
        return {
            "device": self.device,
            "operation_id": self.operation_id.hex(),
            "type": a.type_name if a else None,
            "status": self.status,
            "result": jsonable(a.payload.get("result")) if a and a.type == ACK
            else jsonable(a.payload) if a else None,
            "error": jsonable(a.payload.get("error")) if a and a.type == ACK
            else jsonable(a.payload) if a and a.type == ERROR else None,
            "verified": a.verified if a else False,
            "key_id": a.key_id.hex() if a else None,
            "refused_answers": self.refused,
            "exit_code": self.exit_code,
        }

    def text(self) -> str:
        a = self.answer
        if a is None:
            return f"timeout: no answer from {self.device}"
        p = a.payload
        if a.type == ERROR:
            detail = f": {p['detail']}" if "detail" in p else ""
            return f"refused by {self.device}: {p['reason']} (code {p['code']}){detail}"
        if a.type == CAPABILITY_RESPONSE:
            return (f"agent: {p['agent']}\nops: {', '.join(p['ops'])}\n"
                    f"max_payload: {p['max_payload']}\ntier: {p['tier']}")
        line = p["status"]
        if "error" in p:
            line += f": {p['error']['message']} (code {p['error']['code']})"
        if "result" in p:
            line += f"{' ' if 'error' in p else ': '}{json.dumps(jsonable(p['result']))}"
        return line


class Controller:
    """One MQTT connection that sends commands to devices and waits for their answers."""

    def __init__(self, host: str, port: int, signer: Signer, device_keys: Sequence[Key] = (),
                 connect_timeout: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.signer = signer
        self.device_keys = list(device_keys)
        self.connect_timeout = connect_timeout
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                   client_id=f"hbroker-ctl-{uuid.uuid4().hex[:12]}",
                                   protocol=mqtt.MQTTv311)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        self._events.put(("connect", reason))

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any,
                      properties: Any) -> None:
        self._events.put(("subscribe", reasons))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: Any) -> None:
        self._events.put(("message", bytes(message.payload)))

    def _wait(self, kind: str, deadline: float) -> Any:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerError(f"no {kind} from {self.host}:{self.port} within "
                                  f"{self.connect_timeout:g} s")
            try:
                event, value = self._events.get(timeout=remaining)
            except queue.Empty:
                continue
            if event == kind:
                return value

    def request(self, device: str, type_: int, payload: dict[str, Any],
                timeout: float) -> Outcome:
        """Send one execute or capability_query and wait up to `timeout` seconds for its
        final answer."""
        receiver = Receiver("controller", device, self.device_keys,
                            max_payload=ANSWER_MAX_PAYLOAD,
                            allow_unsigned=not self.device_keys,
                            verify_signatures=bool(self.device_keys))
        try:
            self._client.connect(self.host, self.port, keepalive=60)
        except OSError as exc:
            raise BrokerError(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        self._client.loop_start()
        try:
            deadline = time.monotonic() + self.connect_timeout
            reason = self._wait("connect", deadline)
            if reason.is_failure:
                raise BrokerError(f"{self.host}:{self.port} refused the connection: {reason}")
            self._client.subscribe(topic_up(device), qos=1)
            reasons = self._wait("subscribe", deadline)
            if any(r.is_failure for r in reasons):
                raise BrokerError(f"subscription to {topic_up(device)} refused: {reasons[0]}")
            operation_id = uuid.uuid4().bytes
            frame = self.signer.frame(type_, payload, operation_id)
            info = self._client.publish(topic_down(device), frame, qos=1)
            return self._await_answer(receiver, device, operation_id, type_,
                                      time.monotonic() + timeout, info)
        finally:
            self._client.disconnect()
            self._client.loop_stop()

    def _await_answer(self, receiver: Receiver, device: str, operation_id: bytes, type_: int,
                      deadline: float, info: Any) -> Outcome:
        outcome = Outcome(device, operation_id, EXIT_TIMEOUT)
        final = {ACK} if type_ == EXECUTE else {CAPABILITY_RESPONSE}
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                event, raw = self._events.get(timeout=remaining)
            except queue.Empty:
                break
            if event != "message":
                continue
            try:
                message = receiver.receive(raw)
            except HarcpError as exc:
                if exc.frame is not None and exc.frame.operation_id == operation_id:
                    outcome.refused.append(f"{exc.name}: {exc.detail}" if exc.detail
                                           else exc.name)
                continue
            if message.operation_id != operation_id:
                continue  # another command's answer, or a status
            if message.type == ERROR:
                outcome.answer, outcome.exit_code = message, EXIT_REFUSED
                return outcome
            if message.type not in final:
                continue
            if message.type == ACK and message.payload["status"] == "accepted":
                outcome.progress.append("accepted")
                continue
            outcome.answer = message
            outcome.exit_code = {"done": EXIT_DONE, "failed": EXIT_FAILED,
                                 "rejected": EXIT_REJECTED}.get(
                message.payload.get("status", "done"), EXIT_DONE)
            return outcome
        if not info.is_published():
            outcome.refused.append("the command was not acknowledged by the broker (PUBACK)")
        return outcome


def execute_payload(device: str, op: str, args: dict[str, Any], timeout: float
                    ) -> dict[str, Any]:
    return {"device": device, "op": op, "args": args, "timeout_ms": int(timeout * 1000)}


def query_payload(device: str) -> dict[str, Any]:
    return {"device": device}


REQUEST_TYPES = {"exec": EXECUTE, "query": CAPABILITY_QUERY}
