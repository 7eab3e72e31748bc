"""Live fuzzing: bad clients hit the broker while a good one exchanges QoS 1 messages.

The broker must stay up, the steady client must lose nothing, and each bad client is
disconnected — with the right reason code where the packet has one.
"""

from __future__ import annotations

import random
import socket
import threading
import time

import pytest
from broker_process import BrokerProcess
from clients import PahoClient, RawClient
from hbroker_ext.codec import (
    CONTENT_TYPE,
    SESSION_EXPIRY_INTERVAL,
    Connect,
    Publish,
    Subscribe,
    Subscription,
    encode,
)

MAX_PACKET = 65536


def _publish_with_raw_props(props: bytes) -> bytes:
    body = b"\x00\x01t" + bytes([len(props)]) + props + b"x"
    return bytes([0x30, len(body)]) + body


# (name, bytes sent after a valid 5.0 CONNECT, reason code in the broker's DISCONNECT)
MALFORMED_AFTER_CONNECT = [
    ("publish QoS 3", b"\x36\x06\x00\x01t\x00\x01\x00", 0x81),
    ("publish QoS 0 with DUP", b"\x38\x04\x00\x01t\x00", 0x81),
    ("pingreq with reserved flags", b"\xc1\x00", 0x81),
    ("remaining length not minimal", b"\xc0\x80\x00", 0x81),
    ("remaining length of five bytes", b"\x30\xff\xff\xff\xff\x01", 0x81),
    ("wildcard in topic name", encode(Publish("a/#", b"x"), 4)[:2] + b"\x00\x03a/#\x00x", 0x90),
    ("topic not UTF-8", b"\x30\x05\x00\x02\xc3\x28\x00", 0x81),
    ("U+0000 in topic", b"\x30\x05\x00\x02a\x00\x00", 0x81),
    ("property not allowed in PUBLISH", _publish_with_raw_props(b"\x11\x00\x00\x00\x01"), 0x81),
    ("duplicate content type", _publish_with_raw_props(b"\x03\x00\x01a\x03\x00\x01b"), 0x82),
    ("topic alias 0", _publish_with_raw_props(b"\x23\x00\x00"), 0x82),
    ("subscribe without filters", b"\x82\x03\x00\x01\x00", 0x82),
    ("subscribe with reserved option bits", b"\x82\x07\x00\x01\x00\x00\x01t\xc0", 0x81),
    ("packet larger than maximum", b"\x30\xff\xff\x7f", 0x95),
    ("CONNACK from a client", b"\x20\x03\x00\x00\x00", 0x82),
    ("second CONNECT", encode(Connect("again", 5), 5), 0x82),
    ("packet id 0 in SUBSCRIBE", b"\x82\x07\x00\x00\x00\x00\x01t\x00", 0x82),
]


@pytest.fixture(scope="module")
def fuzz_broker(tmp_path_factory: pytest.TempPathFactory):
    b = BrokerProcess(tmp_path_factory.mktemp("fuzz"),
                      {"limits": {"max_packet_size": MAX_PACKET},
                       "logging": {"level": "warning"}})
    yield b
    assert b.stop() == 0, b.log()


@pytest.fixture
def uid(request: pytest.FixtureRequest) -> str:
    return request.node.name.replace("[", "-").replace("]", "").replace(" ", "_")[:60]


def _connect_v5(b: BrokerProcess, client_id: str) -> RawClient:
    c = RawClient(b.host, b.port, 5)
    assert c.connect(client_id).reason_code == 0
    return c


@pytest.mark.parametrize("name,data,reason", MALFORMED_AFTER_CONNECT,
                         ids=[m[0] for m in MALFORMED_AFTER_CONNECT])
def test_malformed_packet_closes_only_its_connection_with_reason_code(fuzz_broker, name, data,
                                                                      reason, uid):
    bystander = _connect_v5(fuzz_broker, f"{uid}-by")
    bad = _connect_v5(fuzz_broker, uid)
    bad.send_raw(data)
    got = bad.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(14, reason)]
    # The other connection is untouched.
    bystander.subscribe(f"{uid}/t", 1)
    assert bystander.publish(f"{uid}/t", b"fine", 1).reason_code == 0


def _random_client(b: BrokerProcess, rng: random.Random, valid: list[bytes]) -> None:
    """One bad client: random bytes, or a valid stream with a few bytes mutated."""
    try:
        s = socket.create_connection((b.host, b.port), timeout=2)
    except OSError:
        return
    try:
        if rng.random() < 0.3:
            data = rng.randbytes(rng.randint(1, 300))
        else:
            stream = bytearray(b"".join(valid))
            for _ in range(rng.randint(1, 4)):
                stream[rng.randrange(len(stream))] = rng.randrange(256)
            data = bytes(stream)
        s.sendall(data)
        s.settimeout(1.0)
        try:
            while s.recv(65536):
                pass
        except (TimeoutError, ConnectionResetError):
            pass
    except OSError:
        pass
    finally:
        s.close()


def test_broker_survives_fuzzing_while_steady_client_loses_nothing(fuzz_broker):
    b = fuzz_broker
    steady = PahoClient(b.host, b.port, "steady", session_expiry=300)
    steady.subscribe("steady/t", 1)
    count = 300
    received: list[bytes] = []
    done = threading.Event()

    def consume() -> None:
        while len(received) < count:
            received.append(steady.expect(20).payload)
        done.set()

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()

    valid = [encode(Connect("fuzz", 5, properties={SESSION_EXPIRY_INTERVAL: 0}), 5),
             encode(Subscribe(1, [Subscription("fuzz/#", 1)]), 5),
             encode(Publish("fuzz/a", b"payload", 1, False, False, 2,
                            {CONTENT_TYPE: "text/plain"}), 5),
             encode(Publish("fuzz/b", b"", 0, True), 5)]
    rng = random.Random(20261122)
    stop = threading.Event()

    def attack() -> None:
        deadline = time.monotonic() + 20
        for _ in range(150):
            if stop.is_set() or time.monotonic() > deadline:
                return
            _random_client(b, rng, valid)

    attackers = [threading.Thread(target=attack, daemon=True) for _ in range(3)]
    for t in attackers:
        t.start()
    for i in range(count):
        steady.publish("steady/t", f"{i}".encode(), 1)
    assert done.wait(30), f"steady client received {len(received)} of {count}"
    stop.set()
    for t in attackers:
        t.join(30)
    assert received == [f"{i}".encode() for i in range(count)]
    assert b.proc.poll() is None, b.log()
    # The broker still accepts clients.
    _connect_v5(b, "after-fuzz")
