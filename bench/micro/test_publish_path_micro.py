"""Micro-benchmark of the broker's per-message work, in one process and without sockets: a
read of PUBLISHes goes through `Connection.data_received` (framer, the PUBLISH handler, routing,
fan-out into the subscribers' output) and the broker's once-per-iteration flush writes it to
fake transports. At QoS 1 each round also feeds the subscriber's PUBACKs back.

This is the part of a delivery that the broker's own code costs, without the system calls and
the event loop around it (bench/compare.py measures those, against Mosquitto).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from hbroker_ext.codec import PUBACK, Connect, Subscribe, Subscription, encode, encode_ack
from hbroker_ext.codec import encode_publish as encode_publish_packet
from pytest_benchmark.fixture import BenchmarkFixture

from hbroker.broker import Broker
from hbroker.config import ListenerConfig, parse_config
from hbroker.connection import Connection
from hbroker.hooks import Hooks
from hbroker.transports import Listener

Describe = Callable[..., None]  # the `describe` fixture of conftest.py

TOPIC = "site/s42/d17/temperature"
PAYLOAD = bytes(64)
# PUBLISHes per read: 15 divides 65,535, so the subscribers' packet ids repeat every 4,369
# reads and their PUBACKs can be encoded once, before the timing.
BATCH = 15


class Loop:
    """What the broker asks of its event loop here: flushes are called by the benchmark."""

    def call_soon(self, callback: Any, *args: Any) -> None:
        pass

    def call_later(self, delay: float, callback: Any, *args: Any) -> None:
        return None

    def time(self) -> float:
        return time.monotonic()


class Transport:
    """Counts what the broker writes."""

    def __init__(self) -> None:
        self.packets = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False

    def writelines(self, data: list[bytes]) -> None:
        self.packets += len(data)

    def write(self, data: bytes) -> None:
        self.packets += 1

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Setup:
    """A broker (memory storage) with one publisher and `subscribers` subscribers of TOPIC."""

    def __init__(self, version: int, qos: int, subscribers: int) -> None:
        config = parse_config({"storage": {"backend": "memory"}}, "<bench>")
        self.broker = Broker(config, Hooks())
        self.broker.loop = Loop()  # type: ignore[assignment]
        self.listener = Listener(ListenerConfig())
        self.version = version
        self.publisher, _ = self.connect("pub")
        self.subscribers = [self.connect(f"sub{i}") for i in range(subscribers)]
        for conn, _ in self.subscribers:
            conn.data_received(encode(Subscribe(1, [Subscription(TOPIC, qos)]), version))
        self.broker.flush()
        self.publishes = b"".join(
            encode_publish_packet(TOPIC, PAYLOAD, qos, False, False, i + 1 if qos else 0, None,
                                  version) for i in range(BATCH))
        self.acks = [b"".join(encode_ack(PUBACK, (r * BATCH + i) % 65535 + 1, 0, version)
                              for i in range(BATCH)) for r in range(65535 // BATCH)] \
            if qos else []
        self.rounds = 0
        for _, transport in self.subscribers:
            transport.packets = 0

    def connect(self, client_id: str) -> tuple[Connection, Transport]:
        conn = Connection(self.broker, self.listener)
        transport = Transport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        conn.data_received(encode(Connect(client_id=client_id, clean_start=True, keepalive=60,
                                          protocol_version=self.version), self.version))
        self.broker.flush()
        return conn, transport

    def one_read(self) -> None:
        self.publisher.data_received(self.publishes)
        self.broker.flush()
        if self.acks:
            acks = self.acks[self.rounds % len(self.acks)]
            for conn, _ in self.subscribers:
                conn.data_received(acks)
            self.broker.flush()
        self.rounds += 1


@pytest.mark.benchmark(group="publish path")
@pytest.mark.parametrize(("version", "qos", "subscribers"), [
    (5, 0, 1), (4, 0, 1), (5, 1, 1), (5, 0, 8),
])
def test_publish_path(benchmark: BenchmarkFixture, describe: Describe, version: int, qos: int,
                      subscribers: int) -> None:
    setup = Setup(version, qos, subscribers)
    benchmark(setup.one_read)
    name = "5.0" if version == 5 else "3.1.1"
    fan = "1 → 1" if subscribers == 1 else f"1 → {subscribers}"
    describe(f"QoS {qos}, {name}, {fan}: {BATCH} PUBLISHes per read", BATCH, "message")
    # Every PUBLISH of every read reached every subscriber.
    assert all(t.packets == setup.rounds * BATCH for _, t in setup.subscribers)
