"""Micro-benchmarks of the packet codec (hbroker_ext/codec.pyx): PUBLISH decode and encode,
PUBACK encode, and the framer on 64 KiB reads of small packets.

Every input is built once, deterministically: the topic `site/s42/d17/temperature`, a 64-byte
JSON-like payload and, in MQTT 5.0, two properties (Message Expiry Interval, Content Type).
`extra_info` carries the row label and, where a call handles many items, their count.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest
from hbroker_ext.codec import (
    CONTENT_TYPE,
    MESSAGE_EXPIRY_INTERVAL,
    Framer,
    Puback,
    Publish,
    decode,
    encode,
    encode_publish,
    set_packet_id,
)
from pytest_benchmark.fixture import BenchmarkFixture

Describe = Callable[..., None]  # the `describe` fixture of conftest.py

TOPIC = "site/s42/d17/temperature"
PAYLOAD = b'{"ts":1764000000123,"value":21.375,"unit":"degC","q":"good"}'.ljust(64)
PROPERTIES = {MESSAGE_EXPIRY_INTERVAL: 3600, CONTENT_TYPE: "application/json"}
PACKET_ID = 4242
READ_SIZE = 64 * 1024
VERSION_NAMES = {4: "3.1.1", 5: "5.0"}

assert len(PAYLOAD) == 64


def publish_bytes(version: int, qos: int) -> bytes:
    props = PROPERTIES if version == 5 else None
    return encode_publish(TOPIC, PAYLOAD, qos, False, False, PACKET_ID if qos else 0, props,
                          version)


def stream_topics() -> Iterator[str]:
    """Topics of 13 to 16 bytes (`site/s<a>/d<b>/m<c>`): PUBLISHes of about 82 bytes."""
    for a, b, c in itertools.product(range(0, 100, 7), range(0, 50, 3), range(0, 20, 3)):
        yield f"site/s{a}/d{b}/m{c}"


def packet_stream(version: int, kind: str) -> Iterator[bytes]:
    """Endless packets: QoS 0 PUBLISHes ("qos0") or QoS 1 PUBLISH and PUBACK in turn ("mix")."""
    packet_id = 0
    for topic in itertools.cycle(list(stream_topics())):
        if kind == "qos0":
            yield encode_publish(topic, PAYLOAD, 0, False, False, 0, None, version)
        else:
            packet_id = packet_id % 65535 + 1
            yield encode_publish(topic, PAYLOAD, 1, False, False, packet_id, None, version)
            yield encode(Puback(packet_id), version)


def whole_packets(packets: Iterator[bytes], size: int) -> list[bytes]:
    """As many whole packets as fit in `size` bytes."""
    out: list[bytes] = []
    total = 0
    for packet in packets:
        if total + len(packet) > size:
            return out
        out.append(packet)
        total += len(packet)
    return out


def exact_stream(version: int, size: int) -> list[bytes]:
    """QoS 0 PUBLISHes of exactly `size` bytes in all: the last one's payload fills the rest."""
    packets = whole_packets(packet_stream(version, "qos0"), size - 300)
    rest = size - sum(map(len, packets))
    for topic, length in itertools.product(("site/s1/d1/m1", "site/s10/d1/m1"), range(rest)):
        filler = encode_publish(topic, b"x" * length, 0, False, False, 0, None, version)
        if len(filler) == rest:
            return [*packets, filler]
    raise AssertionError(f"no PUBLISH of {rest} bytes")


# -- decode ---------------------------------------------------------------------------------

@pytest.mark.benchmark(group="decode")
@pytest.mark.parametrize("version", [4, 5], ids=["3.1.1", "5.0"])
@pytest.mark.parametrize("qos", [0, 1], ids=["qos0", "qos1"])
@pytest.mark.parametrize("entry", ["framer", "decode"])
def test_decode_publish(benchmark: BenchmarkFixture, describe: Describe, entry: str, qos: int,
                        version: int) -> None:
    data = publish_bytes(version, qos)
    props = ", 2 properties" if version == 5 else ""
    where = "`Framer.feed`" if entry == "framer" else "`decode`"
    describe(f"PUBLISH QoS {qos}, {VERSION_NAMES[version]}{props} ({len(data)} bytes): {where}")
    if entry == "framer":
        framer = Framer(protocol_version=version)
        packets = benchmark(framer.feed, data)
        assert framer.buffered == 0
        (packet,) = packets
    else:
        packet = benchmark(decode, data, version)
    assert packet == Publish(TOPIC, PAYLOAD, qos, packet_id=PACKET_ID if qos else 0,
                             properties=PROPERTIES if version == 5 else None)


@pytest.mark.benchmark(group="decode")
def test_decode_publish_properties_changing(benchmark: BenchmarkFixture,
                                            describe: Describe) -> None:
    """The framer keeps a property block that repeats (see `Framer` in codec.pyx), which the
    rows above, one packet fed again and again, profit from. Here no two PUBLISHes in a row
    carry the same block: each has its own Message Expiry Interval."""
    count = 100
    packets = [encode_publish(TOPIC, PAYLOAD, 0, False, False, 0,
                              {**PROPERTIES, MESSAGE_EXPIRY_INTERVAL: 3600 + i}, 5)
               for i in range(count)]
    data = b"".join(packets)
    describe(f"{count} PUBLISHes QoS 0, 5.0, 2 properties, the Message Expiry Interval "
             f"different in each ({len(packets[0])} bytes): `Framer.feed` of them all in one "
             "read", count, "packet")
    framer = Framer(protocol_version=5)
    out = benchmark(framer.feed, data)
    assert [p.properties[MESSAGE_EXPIRY_INTERVAL] for p in out] == [3600 + i
                                                                     for i in range(count)]


# -- encode ---------------------------------------------------------------------------------

@pytest.mark.benchmark(group="encode")
@pytest.mark.parametrize(("version", "qos"), [(4, 0), (4, 1), (5, 1)],
                         ids=["3.1.1-qos0", "3.1.1-qos1", "5.0-qos1"])
def test_encode_publish(benchmark: BenchmarkFixture, describe: Describe, version: int,
                        qos: int) -> None:
    props = PROPERTIES if version == 5 else None
    data = benchmark(encode_publish, TOPIC, PAYLOAD, qos, False, False,
                     PACKET_ID if qos else 0, props, version)
    describe(f"`encode_publish` QoS {qos}, {VERSION_NAMES[version]}"
             f"{', 2 properties' if props else ''} ({len(data)} bytes)")
    assert data == publish_bytes(version, qos)


@pytest.mark.benchmark(group="encode")
def test_set_packet_id(benchmark: BenchmarkFixture, describe: Describe) -> None:
    encoded = encode_publish(TOPIC, PAYLOAD, 1, False, False, 1, PROPERTIES, 5)
    data = benchmark(set_packet_id, encoded, PACKET_ID, False)
    describe(f"`set_packet_id` on a QoS 1 PUBLISH, 5.0 ({len(data)} bytes)")
    assert data == publish_bytes(5, 1)


@pytest.mark.benchmark(group="encode")
@pytest.mark.parametrize(("version", "reason_code"), [(4, 0), (5, 0x10)], ids=["3.1.1", "5.0"])
def test_encode_puback(benchmark: BenchmarkFixture, describe: Describe, version: int,
                       reason_code: int) -> None:
    ack = Puback(PACKET_ID, reason_code)
    data = benchmark(encode, ack, version)
    rc = f", reason code 0x{reason_code:02X}" if reason_code else ""
    describe(f"`encode(Puback)`, {VERSION_NAMES[version]}{rc} ({len(data)} bytes)")
    assert decode(data, version) == ack


# -- framer on 64 KiB reads -----------------------------------------------------------------

@pytest.mark.benchmark(group="framer")
@pytest.mark.parametrize(("version", "kind"), [(4, "qos0"), (5, "mix")],
                         ids=["3.1.1-qos0", "5.0-publish-puback"])
def test_framer_64k_read(benchmark: BenchmarkFixture, describe: Describe, version: int,
                         kind: str) -> None:
    packets = whole_packets(packet_stream(version, kind), READ_SIZE)
    data = b"".join(packets)
    framer = Framer(protocol_version=version)
    what = "QoS 0 PUBLISHes" if kind == "qos0" else "QoS 1 PUBLISH and PUBACK in turn"
    describe(f"one read of {len(data):,} bytes, {len(packets):,} packets: {what}, "
             f"{VERSION_NAMES[version]}", len(packets), "packet")
    out = benchmark(framer.feed, data)
    assert len(out) == len(packets) and framer.buffered == 0


@pytest.mark.benchmark(group="framer")
def test_framer_64k_reads_cut_mid_packet(benchmark: BenchmarkFixture, describe: Describe) -> None:
    """Reads of 64 KiB that end inside a packet: the framer keeps the tail and joins it to the
    next read, as with a real socket. One call is one read, in turn over 8 reads."""
    reads = 8
    stream = b"".join(exact_stream(4, reads * READ_SIZE))
    chunks = [stream[i:i + READ_SIZE] for i in range(0, len(stream), READ_SIZE)]
    framer = Framer(protocol_version=4)
    per_cycle = sum(len(framer.feed(chunk)) for chunk in chunks)
    assert framer.buffered == 0
    describe(f"reads of {READ_SIZE:,} bytes cut mid-packet, {per_cycle / reads:,.1f} packets "
             "per read on average: QoS 0 PUBLISHes, 3.1.1", per_cycle / reads, "packet")
    feed = framer.feed
    next_chunk = itertools.cycle(chunks).__next__
    benchmark(lambda: feed(next_chunk()))
