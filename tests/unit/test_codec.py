"""Property-based tests of the MQTT codec (hbroker_ext/codec.pyx).

- decode(encode(p)) == p for every packet type in 3.1 / 3.1.1 / 5.0 and for every MQTT 5
  property on every packet that allows it (decoding goes through `Framer.feed`);
- `encode_publish` and `set_packet_id`, the PUBLISH hot path;
- the `Framer` on streams split at random points;
- random and mutated input: it decodes or raises `MQTTError` with a reason code >= 0x80,
  nothing else.

The property table below is written from MQTT 5.0 section 2.2.2.2 (table 2-4), not taken from
the codec, so that a wrong entry in the codec makes a test fail. The byte-exact vectors are in
test_codec_vectors.py.
"""

import functools
import itertools
from collections.abc import Callable
from typing import Any

import pytest
from hbroker_ext.codec import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    Framer,
    MQTTError,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
    decode,
    encode,
    encode_ack,
    encode_publish,
    set_packet_id,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hbroker_ext import codec

Strategy = st.SearchStrategy[Any]


def examples(n: int) -> settings:
    """Hypothesis costs a few ms per example here: the counts keep both codec test files
    around 20 s of CPU on a slow two-core machine. No deadline: CI machines are shared."""
    return settings(max_examples=n, deadline=None, suppress_health_check=[HealthCheck.too_slow])


PACKET_CLASSES = (Connect, Connack, Publish, Puback, Pubrec, Pubrel, Pubcomp, Subscribe, Suback,
                  Unsubscribe, Unsuback, Pingreq, Pingresp, Disconnect, Auth)

# -- MQTT 5.0 properties (2.2.2.2) ----------------------------------------------------------

BYTE, U16, U32, VARINT, STR, BIN, PAIR = "byte", "u16", "u32", "varint", "str", "bin", "pair"

# Where a property may appear; "will" is the will property block inside CONNECT.
ACKS = ("puback", "pubrec", "pubrel", "pubcomp")
KINDS_WITH_PROPERTIES = ("connect", "will", "connack", "publish", *ACKS, "subscribe", "suback",
                         "unsubscribe", "unsuback", "disconnect", "auth")

PROPERTIES: dict[int, tuple[str, str, frozenset[str]]] = {
    0x01: ("PAYLOAD_FORMAT_INDICATOR", BYTE, frozenset({"publish", "will"})),
    0x02: ("MESSAGE_EXPIRY_INTERVAL", U32, frozenset({"publish", "will"})),
    0x03: ("CONTENT_TYPE", STR, frozenset({"publish", "will"})),
    0x08: ("RESPONSE_TOPIC", STR, frozenset({"publish", "will"})),
    0x09: ("CORRELATION_DATA", BIN, frozenset({"publish", "will"})),
    0x0B: ("SUBSCRIPTION_IDENTIFIER", VARINT, frozenset({"publish", "subscribe"})),
    0x11: ("SESSION_EXPIRY_INTERVAL", U32, frozenset({"connect", "connack", "disconnect"})),
    0x12: ("ASSIGNED_CLIENT_IDENTIFIER", STR, frozenset({"connack"})),
    0x13: ("SERVER_KEEP_ALIVE", U16, frozenset({"connack"})),
    0x15: ("AUTHENTICATION_METHOD", STR, frozenset({"connect", "connack", "auth"})),
    0x16: ("AUTHENTICATION_DATA", BIN, frozenset({"connect", "connack", "auth"})),
    0x17: ("REQUEST_PROBLEM_INFORMATION", BYTE, frozenset({"connect"})),
    0x18: ("WILL_DELAY_INTERVAL", U32, frozenset({"will"})),
    0x19: ("REQUEST_RESPONSE_INFORMATION", BYTE, frozenset({"connect"})),
    0x1A: ("RESPONSE_INFORMATION", STR, frozenset({"connack"})),
    0x1C: ("SERVER_REFERENCE", STR, frozenset({"connack", "disconnect"})),
    0x1F: ("REASON_STRING", STR,
           frozenset({"connack", *ACKS, "suback", "unsuback", "disconnect", "auth"})),
    0x21: ("RECEIVE_MAXIMUM", U16, frozenset({"connect", "connack"})),
    0x22: ("TOPIC_ALIAS_MAXIMUM", U16, frozenset({"connect", "connack"})),
    0x23: ("TOPIC_ALIAS", U16, frozenset({"publish"})),
    0x24: ("MAXIMUM_QOS", BYTE, frozenset({"connack"})),
    0x25: ("RETAIN_AVAILABLE", BYTE, frozenset({"connack"})),
    0x26: ("USER_PROPERTY", PAIR, frozenset(KINDS_WITH_PROPERTIES)),
    0x27: ("MAXIMUM_PACKET_SIZE", U32, frozenset({"connect", "connack"})),
    0x28: ("WILDCARD_SUBSCRIPTION_AVAILABLE", BYTE, frozenset({"connack"})),
    0x29: ("SUBSCRIPTION_IDENTIFIER_AVAILABLE", BYTE, frozenset({"connack"})),
    0x2A: ("SHARED_SUBSCRIPTION_AVAILABLE", BYTE, frozenset({"connack"})),
}
# Every byte property of 5.0 takes 0 or 1; these may not be 0.
NONZERO = {0x0B, 0x21, 0x23, 0x27}
TOPIC_ALIAS = 0x23
SUBSCRIPTION_IDENTIFIER = 0x0B
MAX_VARINT = 268_435_455

# Reason codes each 5.0 packet may carry (sections 3.2.2.2, 3.4.2.1, ...).
CONNACK_CODES = [0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C,
                 0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F]
PUBACK_CODES = [0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99]
PUBREL_CODES = [0x00, 0x92]
SUBACK_CODES = [0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2]
UNSUBACK_CODES = [0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91]
DISCONNECT_CODES = [0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90,
                    0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F,
                    0xA0, 0xA1, 0xA2]
AUTH_CODES = [0x00, 0x18, 0x19]


def test_property_identifier_constants_match_the_specification() -> None:
    for pid, (name, _, _) in PROPERTIES.items():
        assert getattr(codec, name) == pid, name


# -- helpers --------------------------------------------------------------------------------

def decode_one(data: bytes, version: int) -> Any:
    """Decode exactly one packet through a fresh Framer at `version` (0: before CONNECT)."""
    framer = Framer(protocol_version=version)
    packets = framer.feed(data)
    assert framer.buffered == 0
    assert len(packets) == 1
    if isinstance(packets[0], Connect):
        assert framer.protocol_version == packets[0].protocol_version
    return packets[0]


def assert_round_trip(packet: Any, version: int) -> bytes:
    """decode(encode(packet)) == packet, and the encoding is canonical (one form per packet)."""
    data = encode(packet, version)
    decoded = decode_one(data, 0 if isinstance(packet, Connect) else version)
    assert type(decoded) is type(packet)
    assert decoded == packet
    assert encode(decoded, version) == data
    return data


def ref_varint(n: int) -> bytes:
    """Variable byte integer, written from MQTT 5.0 1.5.5."""
    out = bytearray()
    while True:
        digit, n = n % 128, n // 128
        out.append(digit | 0x80 if n else digit)
        if not n:
            return bytes(out)


def ref_string(s: str) -> bytes:
    b = s.encode("utf-8")
    return len(b).to_bytes(2, "big") + b


def ref_properties(props: dict[int, Any] | None) -> bytes:
    body = bytearray()
    for pid, value in (props or {}).items():
        kind = PROPERTIES[pid][1]
        if kind == PAIR:
            for name, val in value:
                body += bytes([pid]) + ref_string(name) + ref_string(val)
        elif kind == VARINT:
            for v in value if isinstance(value, list) else [value]:
                body += bytes([pid]) + ref_varint(v)
        elif kind == STR:
            body += bytes([pid]) + ref_string(value)
        elif kind == BIN:
            body += bytes([pid]) + len(value).to_bytes(2, "big") + value
        else:
            size = {BYTE: 1, U16: 2, U32: 4}[kind]
            body += bytes([pid]) + value.to_bytes(size, "big")
    return ref_varint(len(body)) + bytes(body)


def ref_publish(p: Publish, version: int) -> bytes:
    """PUBLISH written from MQTT 5.0 3.3, independently of the codec."""
    first = 0x30 | (0x08 if p.dup else 0) | (p.qos << 1) | (1 if p.retain else 0)
    body = ref_string(p.topic)
    if p.qos:
        body += p.packet_id.to_bytes(2, "big")
    if version == 5:
        body += ref_properties(p.properties)
    body += p.payload
    return bytes([first]) + ref_varint(len(body)) + body


# -- strategies -----------------------------------------------------------------------------

# Well-formed UTF-8 (no surrogates) without U+0000 [MQTT-1.5.4-1, MQTT-1.5.4-2].
CHARS = st.characters(codec="utf-8", exclude_characters="\x00")
TOPIC_CHARS = st.characters(codec="utf-8", exclude_characters="\x00+#")


# Strategies are built once and cached: building them costs more than drawing from them.
@functools.cache
def texts(max_size: int = 12, min_size: int = 0) -> Strategy:
    return st.text(CHARS, min_size=min_size, max_size=max_size)


topic_names = st.text(TOPIC_CHARS, min_size=1, max_size=24)
topic_filters = texts(24)  # the codec checks filters as UTF-8 only; the broker checks syntax
packet_ids = st.integers(1, 0xFFFF)
binaries = st.binary(max_size=24)
payloads = st.binary(max_size=300)  # crosses 127: multi-byte remaining lengths


@functools.cache
def property_value(pid: int, kind: str) -> Strategy:
    ptype = PROPERTIES[pid][1]
    low = 1 if pid in NONZERO else 0
    if ptype == BYTE:
        return st.integers(0, 1)
    if ptype == U16:
        return st.integers(low, 0xFFFF)
    if ptype == U32:
        return st.integers(low, 0xFFFF_FFFF)
    if ptype == VARINT:
        ids = st.integers(1, MAX_VARINT)
        # Several subscription identifiers may travel in one PUBLISH (3.3.2.3.8).
        return st.lists(ids, min_size=1, max_size=3) if kind == "publish" else ids
    if ptype == STR:
        return texts()
    if ptype == BIN:
        return binaries
    names = st.one_of(st.just("same"), texts(8))  # repeated names are allowed
    return st.lists(st.tuples(names, texts(8)), min_size=1, max_size=4)


@functools.cache
def properties(kind: str, *, every: bool = False) -> Strategy:
    allowed = {pid: property_value(pid, kind)
               for pid, (_, _, kinds) in PROPERTIES.items() if kind in kinds}
    if every:
        return st.fixed_dictionaries(allowed)
    return st.fixed_dictionaries({}, optional=allowed).map(lambda d: d or None)


@functools.cache
def props_or_none(kind: str, version: int) -> Strategy:
    return properties(kind) if version == 5 else st.none()


@st.composite
def wills(draw: st.DrawFn, version: int) -> Will:
    return Will(draw(topic_names), draw(binaries), draw(st.integers(0, 2)), draw(st.booleans()),
                draw(props_or_none("will", version)))


@functools.cache
def optional_wills(version: int) -> Strategy:
    return st.none() | wills(version)


@functools.cache
def optional_texts() -> Strategy:
    return st.none() | texts()


@functools.cache
def optional_binaries() -> Strategy:
    return st.none() | binaries


@st.composite
def connects(draw: st.DrawFn, version: int) -> Connect:
    username = draw(optional_texts())
    password = draw(optional_binaries())
    if version < 5 and password is not None and username is None:
        username = draw(texts())  # [MQTT-3.1.2-22] (3.1.1): no password without a user name
    return Connect(
        client_id=draw(texts(23)),
        protocol_version=version,
        protocol_name="MQIsdp" if version == 3 else "MQTT",
        clean_start=draw(st.booleans()),
        keepalive=draw(st.integers(0, 0xFFFF)),
        username=username,
        password=password,
        will=draw(optional_wills(version)),
        properties=draw(props_or_none("connect", version)),
    )


@st.composite
def connacks(draw: st.DrawFn, version: int) -> Connack:
    codes = st.sampled_from(CONNACK_CODES) if version == 5 else st.integers(0, 5)
    return Connack(draw(st.booleans()), draw(codes), draw(props_or_none("connack", version)))


@st.composite
def publishes(draw: st.DrawFn, version: int, qos: Strategy | None = None) -> Publish:
    level = draw(qos if qos is not None else st.integers(0, 2))
    props = draw(props_or_none("publish", version))
    topic = draw(topic_names)
    if props and TOPIC_ALIAS in props and draw(st.booleans()):
        topic = ""  # 3.3.2.1: the topic comes from the alias
    return Publish(topic, draw(payloads), level, draw(st.booleans()),
                   level > 0 and draw(st.booleans()), draw(packet_ids) if level else 0, props)


def acks(cls: type, kind: str, codes: list[int]) -> Callable[[int], Strategy]:
    def build(version: int) -> Strategy:
        if version != 5:
            return st.builds(cls, packet_ids)
        return st.builds(cls, packet_ids, st.sampled_from(codes), properties(kind))
    return build


@functools.cache
def subscriptions(version: int) -> Strategy:
    if version != 5:
        return st.builds(Subscription, topic_filters, st.integers(0, 2))
    return st.builds(Subscription, topic_filters, st.integers(0, 2), st.booleans(),
                     st.booleans(), st.integers(0, 2))


def subscribes(version: int) -> Strategy:
    return st.builds(Subscribe, packet_ids, st.lists(subscriptions(version), min_size=1,
                     max_size=4), props_or_none("subscribe", version))


def subacks(version: int) -> Strategy:
    codes = st.sampled_from(SUBACK_CODES if version == 5 else [0, 1, 2, 0x80])
    return st.builds(Suback, packet_ids, st.lists(codes, min_size=1, max_size=6),
                     props_or_none("suback", version))


def unsubscribes(version: int) -> Strategy:
    return st.builds(Unsubscribe, packet_ids, st.lists(topic_filters, min_size=1, max_size=4),
                     props_or_none("unsubscribe", version))


def unsubacks(version: int) -> Strategy:
    if version != 5:
        return st.builds(Unsuback, packet_ids)
    return st.builds(Unsuback, packet_ids,
                     st.lists(st.sampled_from(UNSUBACK_CODES), min_size=1, max_size=4),
                     properties("unsuback"))


def disconnects(version: int) -> Strategy:
    if version != 5:
        return st.just(Disconnect())
    return st.builds(Disconnect, st.sampled_from(DISCONNECT_CODES), properties("disconnect"))


def auths(version: int) -> Strategy:
    return st.builds(Auth, st.sampled_from(AUTH_CODES), properties("auth"))


KINDS: dict[str, Callable[[int], Strategy]] = {
    "connect": connects,
    "connack": connacks,
    "publish": publishes,
    "puback": acks(Puback, "puback", PUBACK_CODES),
    "pubrec": acks(Pubrec, "pubrec", PUBACK_CODES),
    "pubrel": acks(Pubrel, "pubrel", PUBREL_CODES),
    "pubcomp": acks(Pubcomp, "pubcomp", PUBREL_CODES),
    "subscribe": subscribes,
    "suback": subacks,
    "unsubscribe": unsubscribes,
    "unsuback": unsubacks,
    "pingreq": lambda version: st.just(Pingreq()),
    "pingresp": lambda version: st.just(Pingresp()),
    "disconnect": disconnects,
    "auth": auths,
}
KINDS_311 = [kind for kind in KINDS if kind != "auth"]  # AUTH is new in 5.0


@functools.cache
def strategy(kind: str, version: int) -> Strategy:
    return KINDS[kind](version)


@functools.cache
def packets(version: int, *, connect: bool = True) -> Strategy:
    kinds = KINDS if version == 5 else KINDS_311
    return st.one_of([strategy(k, version) for k in kinds if connect or k != "connect"])


@functools.cache
def packet_lists(version: int, *, connect: bool = True, min_size: int = 1,
                 max_size: int = 6) -> Strategy:
    return st.lists(packets(version, connect=connect), min_size=min_size, max_size=max_size)


@functools.cache
def acknowledged_publishes(version: int) -> Strategy:
    """QoS 1 and 2 PUBLISH packets."""
    return publishes(version, qos=st.integers(1, 2))


# -- round trips ----------------------------------------------------------------------------

# Several packets per example: hypothesis costs per example, the codec per packet.


@examples(500)
@given(batch=packet_lists(5))
def test_every_mqtt5_packet_round_trips(batch: list[Any]) -> None:
    for packet in batch:
        assert_round_trip(packet, 5)


@examples(500)
@given(version=st.sampled_from([3, 4]), data=st.data())
def test_every_mqtt311_packet_round_trips(version: int, data: st.DataObject) -> None:
    for packet in data.draw(packet_lists(version)):
        raw = assert_round_trip(packet, version)
        if not isinstance(packet, Connect):
            # Levels 3 and 4 share one encoding after CONNECT.
            assert encode(packet, 4 if version == 3 else 3) == raw


@examples(300)
@given(kind=st.sampled_from(KINDS_WITH_PROPERTIES), data=st.data())
def test_every_allowed_property_at_once_round_trips(kind: str, data: st.DataObject) -> None:
    props = data.draw(properties(kind, every=True))
    assert_round_trip(packet_with_properties(kind, props), 5)


@pytest.mark.parametrize("kind", list(KINDS))
def test_packet_strategy_of_every_kind_round_trips(kind: str) -> None:
    # Each kind at least once, whatever the draws of the tests above.
    @examples(10)
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        for version in (3, 4, 5) if kind != "auth" else (5,):
            assert_round_trip(data.draw(strategy(kind, version)), version)

    check()


def packet_with_properties(kind: str, props: dict[int, Any] | None) -> Any:
    """A 5.0 packet of `kind` carrying `props` (for "will": in the will of a CONNECT)."""
    if kind == "connect":
        return Connect("c", 5, properties=props)
    if kind == "will":
        return Connect("c", 5, will=Will("w/t", b"bye", 1, True, props))
    if kind == "connack":
        return Connack(False, 0, props)
    if kind == "publish":
        return Publish("a/b", b"x", 1, packet_id=1, properties=props)
    if kind in ACKS:
        cls = {"puback": Puback, "pubrec": Pubrec, "pubrel": Pubrel, "pubcomp": Pubcomp}[kind]
        return cls(1, 0, props)
    if kind == "subscribe":
        return Subscribe(1, [Subscription("a/#", 1)], props)
    if kind == "suback":
        return Suback(1, [1], props)
    if kind == "unsubscribe":
        return Unsubscribe(1, ["a/#"], props)
    if kind == "unsuback":
        return Unsuback(1, [0], props)
    if kind == "disconnect":
        return Disconnect(0, props)
    assert kind == "auth"
    return Auth(0x18, props)


def sample_values(pid: int, kind: str) -> list[Any]:
    """Boundary values of each property type."""
    ptype = PROPERTIES[pid][1]
    low = 1 if pid in NONZERO else 0
    if ptype == BYTE:
        return [0, 1]
    if ptype == U16:
        return [low, 0x1234, 0xFFFF]
    if ptype == U32:
        return [low, 0x1234_5678, 0xFFFF_FFFF]
    if ptype == VARINT:
        values = [1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, MAX_VARINT]
        return [values] if kind == "publish" else values
    if ptype == STR:
        return ["", "a/b", "\u00fc\u2713 \U0001f600 \ufeff"]
    if ptype == BIN:
        return [b"", bytes(range(256))]
    return [[("k", "v")], [("k", "v1"), ("k", "v2"), ("", ""), ("\u00fc", "\U0001f600")]]


ALLOWED = [(kind, pid) for kind in KINDS_WITH_PROPERTIES for pid in PROPERTIES
           if kind in PROPERTIES[pid][2]]
NOT_ALLOWED = [(kind, pid) for kind in KINDS_WITH_PROPERTIES for pid in PROPERTIES
               if kind not in PROPERTIES[pid][2]]


def _pair_id(pair: tuple[str, int]) -> str:
    return f"{pair[0]}-{PROPERTIES[pair[1]][0].lower()}"


@pytest.mark.parametrize("pair", ALLOWED, ids=_pair_id)
def test_property_allowed_on_packet_round_trips(pair: tuple[str, int]) -> None:
    kind, pid = pair
    for value in sample_values(pid, kind):
        assert_round_trip(packet_with_properties(kind, {pid: value}), 5)


@pytest.mark.parametrize("pair", NOT_ALLOWED, ids=_pair_id)
def test_property_not_allowed_on_packet_is_malformed(pair: tuple[str, int]) -> None:
    # 2.2.2.2: "A Control Packet which contains an Identifier which is not valid for its
    # packet type ... is a Malformed Packet." The encoder writes whatever it is given.
    kind, pid = pair
    data = encode(packet_with_properties(kind, {pid: sample_values(pid, "")[-1]}), 5)
    with pytest.raises(MQTTError) as info:
        decode_one(data, 0 if kind in ("connect", "will") else 5)
    assert info.value.reason_code == 0x81


@pytest.mark.parametrize(
    ("props", "code", "message"),
    [
        (b"\x02\x00\x00", 0x81, "packet too short for Message Expiry Interval"),
        (b"\x23\x00", 0x81, "packet too short for Topic Alias"),
        (b"\x01", 0x81, "packet too short for Payload Format Indicator"),
        (b"\x03\x00", 0x81, "packet too short for Content Type"),
        (b"\x03\x00\x05ab", 0x81, "packet too short for Content Type"),
        (b"\x03\x00\x03a\x00b", 0x81, "Content Type: contains U+0000"),
        (b"\x03\x00\x02\xc3\x28", 0x81, "Content Type: not well-formed UTF-8"),
        (b"\x01\x00\x01\x01", 0x82, "Payload Format Indicator appears twice"),
        (b"\x01\x02", 0x82, "Payload Format Indicator must be 0 or 1, got 2"),
        (b"\x23\x00\x00", 0x82, "Topic Alias of 0"),
        (b"\x0b\x00", 0x82, "Subscription Identifier of 0"),
        (b"\x26\x00\x01k\x00\x05v", 0x81, "packet too short for User Property"),
        (b"\x11\x00\x00\x00\x01", 0x81, "property 0x11 is not valid in this packet"),
    ],
)
def test_bad_publish_property_names_the_property(props: bytes, code: int,
                                                 message: str) -> None:
    # The property block is the whole rest of the packet (no payload): the value of the last
    # property is cut where the block ends.
    body = b"\x00\x01t" + ref_varint(len(props)) + props
    with pytest.raises(MQTTError) as info:
        decode_one(b"\x30" + ref_varint(len(body)) + body, 5)
    assert info.value.reason_code == code
    assert str(info.value) == message


def test_properties_are_dropped_when_encoding_for_311() -> None:
    props = {0x1F: "why", 0x26: [("k", "v")]}
    assert encode(Puback(7, 0x80, props), 4) == b"\x40\x02\x00\x07"
    assert encode(Publish("t", b"p", properties={0x01: 1}), 4) == b"\x30\x04\x00\x01tp"
    assert encode(Connack(True, 0, {0x24: 1}), 4) == b"\x20\x02\x01\x00"


UNEQUAL = [
    (Connect("a"), Connect("b")),
    (Connect(keepalive=1), Connect(keepalive=2)),
    (Connect(clean_start=True), Connect(clean_start=False)),
    (Connect(username="u"), Connect()),
    (Connect(password=b"p"), Connect()),
    (Connect(protocol_version=5), Connect()),
    (Connect(protocol_version=3, protocol_name="MQIsdp"), Connect(protocol_version=3)),
    (Connect(will=Will("t")), Connect()),
    (Connect(will=Will("t", qos=1)), Connect(will=Will("t"))),
    (Connect(will=Will("t", b"x")), Connect(will=Will("t"))),
    (Connect(will=Will("t", retain=True)), Connect(will=Will("t"))),
    (Connect(will=Will("t", properties={0x18: 1})), Connect(will=Will("t"))),
    (Connect(properties={0x11: 1}), Connect()),
    (Connack(True), Connack()),
    (Connack(reason_code=0x80), Connack()),
    (Publish("a"), Publish("b")),
    (Publish("a", b"1"), Publish("a", b"2")),
    (Publish("a", qos=1, packet_id=1), Publish("a", qos=2, packet_id=1)),
    (Publish("a", retain=True), Publish("a")),
    (Publish("a", qos=1, dup=True, packet_id=1), Publish("a", qos=1, packet_id=1)),
    (Publish("a", qos=1, packet_id=1), Publish("a", qos=1, packet_id=2)),
    (Publish("a", properties={0x02: 1}), Publish("a", properties={0x02: 2})),
    # User property order is significant [MQTT-3.3.2-18].
    (Publish("a", properties={0x26: [("a", "1"), ("b", "2")]}),
     Publish("a", properties={0x26: [("b", "2"), ("a", "1")]})),
    (Puback(1), Pubrec(1)),
    (Pubrel(1), Pubcomp(1)),
    (Puback(1), Puback(2)),
    (Puback(1, 0x10), Puback(1)),
    (Subscribe(1, [Subscription("a")]), Subscribe(2, [Subscription("a")])),
    (Subscribe(1, [Subscription("a")]), Subscribe(1, [Subscription("b")])),
    (Subscribe(1, [Subscription("a", 1)]), Subscribe(1, [Subscription("a")])),
    (Subscribe(1, [Subscription("a", no_local=True)]), Subscribe(1, [Subscription("a")])),
    (Subscribe(1, [Subscription("a", retain_as_published=True)]),
     Subscribe(1, [Subscription("a")])),
    (Subscribe(1, [Subscription("a", retain_handling=1)]), Subscribe(1, [Subscription("a")])),
    (Suback(1, [0]), Suback(1, [1])),
    (Unsubscribe(1, ["a"]), Unsubscribe(1, ["b"])),
    (Unsuback(1, [0]), Unsuback(1)),
    (Disconnect(4), Disconnect()),
    (Disconnect(properties={0x1F: "x"}), Disconnect()),
    (Auth(0x18), Auth()),
    (Pingreq(), Pingresp()),
]


@pytest.mark.parametrize(("a", "b"), UNEQUAL, ids=lambda p: type(p).__name__)
def test_packets_differing_in_one_field_are_unequal(a: Any, b: Any) -> None:
    # The round-trip tests rely on __eq__ looking at every field.
    assert a != b
    assert not a == b


def test_empty_properties_equal_no_properties() -> None:
    assert Publish("a", properties={}) == Publish("a")
    assert Publish("a", properties={0x01: 0}) != Publish("a")


# -- encode_publish and set_packet_id -------------------------------------------------------

@examples(200)
@given(version=st.sampled_from([3, 4, 5]), data=st.data())
def test_encode_publish_matches_encode_of_publish(version: int, data: st.DataObject) -> None:
    p = data.draw(strategy("publish", version))
    raw = encode_publish(p.topic, p.payload, p.qos, p.retain, p.dup, p.packet_id, p.properties,
                         version)
    assert raw == encode(p, version)
    assert raw == ref_publish(p, version)
    assert decode_one(raw, version) == p


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_encode_publish_accepts_any_bytes_like_payload(wrap: Callable[[bytes], Any]) -> None:
    raw = encode_publish("a/b", wrap(b"hello"), 1, True, False, 9, {0x23: 2}, 5)
    assert raw == b"\x33\x10\x00\x03a/b\x00\x09\x03\x23\x00\x02hello"


@examples(200)
@given(version=st.sampled_from([3, 4, 5]), data=st.data())
def test_set_packet_id_changes_only_the_packet_id_and_dup_flag(
    version: int, data: st.DataObject
) -> None:
    p = data.draw(acknowledged_publishes(version))
    new_id = data.draw(packet_ids)
    dup = data.draw(st.booleans())
    raw = encode(p, version)
    original = bytes(bytearray(raw))
    out = set_packet_id(raw, new_id, dup)
    assert raw == original  # the shared encoding is not touched
    expected = Publish(p.topic, p.payload, p.qos, p.retain, dup, new_id, p.properties)
    assert out == encode(expected, version)
    assert decode_one(out, version) == expected
    # Byte by byte: only the DUP bit of byte 0 and the two packet id bytes may differ.
    id_at = _header_size(raw) + 2 + len(p.topic.encode("utf-8"))
    assert len(out) == len(raw)
    changed = {i for i in range(len(raw)) if raw[i] != out[i]}
    assert changed <= {0, id_at, id_at + 1}
    assert (raw[0] ^ out[0]) & ~0x08 == 0
    assert out[id_at : id_at + 2] == new_id.to_bytes(2, "big")


def test_set_packet_id_on_a_four_byte_remaining_length() -> None:
    p = Publish("t", b"x" * 2_097_152, 2, packet_id=1)
    raw = encode(p, 4)
    assert raw[1:5] == b"\x85\x80\x80\x01"
    out = set_packet_id(raw, 0xBEEF, True)
    assert out[5:10] == b"\x00\x01t\xbe\xef"
    assert out[0] == 0x3C
    assert out[10:] == raw[10:]


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x30\x05\x00\x03a/b",  # QoS 0: no packet id
        b"\x32\x05\x00\x03a/b",  # QoS 1 cut before the packet id
        b"\x32\x04\x00\x03a/",  # cut inside the topic
        b"\x32",
    ],
)
def test_set_packet_id_refuses_what_is_not_a_qos_1_or_2_publish(raw: bytes) -> None:
    with pytest.raises(ValueError):
        set_packet_id(raw, 1, False)


# -- encode_ack --------------------------------------------------------------------------------

ACK_CLASSES = {4: Puback, 5: Pubrec, 6: Pubrel, 7: Pubcomp}


@given(st.sampled_from(sorted(ACK_CLASSES)), st.integers(1, 65535), st.integers(0, 255),
       st.sampled_from([3, 4, 5]))
def test_encode_ack_equals_encode_of_the_packet(packet_type: int, packet_id: int,
                                                reason_code: int, version: int) -> None:
    packet = ACK_CLASSES[packet_type](packet_id, reason_code)
    raw = encode_ack(packet_type, packet_id, reason_code, version)
    assert raw == encode(packet, version)
    framer = Framer(protocol_version=version)
    [decoded] = framer.feed(raw)
    assert decoded.packet_id == packet_id
    assert decoded.reason_code == (reason_code if version == 5 else 0)


@pytest.mark.parametrize("args", [(3, 1, 0, 5), (8, 1, 0, 5), (4, 0, 0, 5), (4, 65536, 0, 4)])
def test_encode_ack_refuses_other_packets_and_bad_packet_ids(args: tuple) -> None:
    with pytest.raises(ValueError):
        encode_ack(*args)


# -- Framer on streams ----------------------------------------------------------------------

@st.composite
def sessions(draw: st.DrawFn, max_size: int = 6) -> tuple[int, list[Any]]:
    """A CONNECT and the packets of its protocol version that may follow it."""
    version = draw(st.sampled_from([3, 4, 5]))
    rest = draw(packet_lists(version, connect=False, min_size=0, max_size=max_size))
    return version, [draw(strategy("connect", version)), *rest]


def encode_session(version: int, session: list[Any]) -> list[bytes]:
    return [encode(p, version) for p in session]


def strided(data: bytes) -> memoryview:
    """A view of every other byte of a buffer holding `data` interleaved with filler: its
    contents are `data`, its memory is not."""
    return memoryview(bytes(x for byte in data for x in (byte, 0xFF)))[::2]


def test_decode_reads_a_strided_buffer_as_its_contents() -> None:
    packet = Publish("a/b", b"xyz", 1, packet_id=7)
    raw = encode(packet, 4)
    assert decode(strided(raw), 4) == packet
    assert Framer(protocol_version=4).feed(strided(raw + raw)) == [packet, packet]


@examples(400)
@given(session=sessions(), data=st.data())
def test_framer_returns_the_packets_of_a_stream_split_anywhere(
    session: tuple[int, list[Any]], data: st.DataObject
) -> None:
    version, expected = session
    encoded = encode_session(version, expected)
    stream = b"".join(encoded)
    ends = list(itertools.accumulate(len(e) for e in encoded))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    framer = Framer()
    got: list[Any] = []
    for start, stop in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        wrap = data.draw(st.sampled_from([bytes, bytearray, memoryview, strided]))
        got += framer.feed(wrap(stream[start:stop]))
        # Every packet complete in the buffer comes back from this very call...
        complete = sum(1 for end in ends if end <= stop)
        assert len(got) == complete
        # ...and only the bytes of the incomplete one stay buffered.
        assert framer.buffered == stop - (ends[complete - 1] if complete else 0)
    assert got == expected
    assert framer.buffered == 0
    assert framer.protocol_version == version


# Topics that share prefixes, lengths or bytes with one another, valid and not.
REUSED_TOPICS = ["a", "a/b", "a/c", "b/a", "a/b/", "ab", "é/b", "\u00e9", "a/+", "a/#", "+",
                 "a\x00b", "a/bb"]


@examples(300)
@given(topics=st.lists(st.sampled_from(REUSED_TOPICS), min_size=1, max_size=12),
       version=st.sampled_from([4, 5]))
def test_framer_decodes_runs_of_publish_topics_as_a_fresh_framer_does(
    topics: list[str], version: int
) -> None:
    # One framer per connection keeps the last ASCII topic name for the next PUBLISH with the
    # same bytes: every topic must decode (or fail) exactly as it does on its own.
    framer = Framer(protocol_version=version)
    previous = None
    for topic in topics:
        raw = encode(Publish(topic, b"x", 1, packet_id=1), version)
        try:
            expected = decode_one(raw, version)
        except MQTTError as error:
            with pytest.raises(MQTTError) as info:
                framer.feed(raw)
            assert info.value.reason_code == error.reason_code
            continue
        [got] = framer.feed(raw)
        assert got == expected and got.topic == topic
        if previous is not None and previous.topic == topic and topic.isascii():
            assert got.topic is previous.topic  # decoded once, hashed once
        previous = got


# PUBLISH property blocks that share bytes, lengths or identifiers with one another, valid and
# not: lists (kept out of the framer's copies), a block of more than the 48 bytes the framer
# keeps, a Topic Alias of 0, a property twice.
REUSED_PUBLISH_PROPERTIES: list[Any] = [
    None,
    {0x02: 3600, 0x03: "application/json"},
    {0x02: 3601, 0x03: "application/json"},
    {0x03: "application/json", 0x02: 3600},
    {0x01: 1},
    {0x01: 2},
    {0x23: 0},
    {0x23: 7},
    {0x26: [("k", "v")]},
    {0x26: [("k", "v"), ("k", "w")], 0x01: 0},
    {0x0B: [5]},
    {0x0B: [5, 6]},
    {0x08: "r" * 60},
    {0x09: b"\x00" * 20, 0x03: "\u00e9"},
    {0x03: "a\x00b"},
]


# A PUBLISH (topic "t", QoS 1) with the Payload Format Indicator twice: a protocol error.
DUPLICATE_PROPERTY_PUBLISH = b"\x32\x0b\x00\x01t\x00\x01\x04\x01\x00\x01\x00x"


@examples(300)
@given(choices=st.lists(st.integers(0, len(REUSED_PUBLISH_PROPERTIES)), min_size=1,
                        max_size=12),
       mutate=st.booleans())
def test_framer_decodes_runs_of_publish_properties_as_a_fresh_framer_does(
    choices: list[int], mutate: bool
) -> None:
    # One framer per connection keeps the last PUBLISH property block, and then what it
    # decodes to, for the next PUBLISH with the same bytes: every block must decode (or fail)
    # exactly as it does on its own, into a dict (and lists) of its own.
    framer = Framer(protocol_version=5)
    for choice in choices:
        if choice == len(REUSED_PUBLISH_PROPERTIES):
            raw = DUPLICATE_PROPERTY_PUBLISH
        else:
            props = REUSED_PUBLISH_PROPERTIES[choice]
            raw = encode(Publish("" if props and 0x23 in props else "t", b"x", 1,
                                 packet_id=1, properties=props), 5)
        try:
            expected = decode_one(raw, 5)
        except MQTTError as error:
            with pytest.raises(MQTTError) as info:
                framer.feed(raw)
            assert info.value.reason_code == error.reason_code
            continue
        [got] = framer.feed(raw)
        assert got == expected
        if mutate and got.properties:
            # What the broker does with a PUBLISH's properties does not reach the next one.
            for value in got.properties.values():
                if isinstance(value, list):
                    value.append(value[0])
            got.properties[0x02] = 1
            got.properties.pop(0x03, None)


def test_framer_feed_of_nothing_returns_nothing() -> None:
    framer = Framer(protocol_version=4)
    assert framer.feed(b"") == []
    assert framer.feed(b"\x40") == []
    assert framer.feed(b"") == []
    assert framer.buffered == 1
    assert framer.feed(b"\x02\x00\x07\xc0") == [Puback(7)]
    assert framer.buffered == 1


# -- random and mutated input ---------------------------------------------------------------

def feed_safely(framer: Any, data: bytes) -> tuple[list[Any], int | None]:
    """Feed; return the packets and the reason code (None when no error)."""
    try:
        return framer.feed(data), None
    except MQTTError as exc:
        # Anything else than MQTTError escapes and fails the test.
        assert isinstance(exc.reason_code, int)
        assert 0x80 <= exc.reason_code <= 0xFF, hex(exc.reason_code)
        assert isinstance(exc.packets, list)
        return exc.packets, exc.reason_code


def assert_decoded_packets_are_valid(decoded: list[Any], version: int) -> None:
    """Whatever the decoder accepts, the encoder writes back and the decoder reads again."""
    version = version or 4
    for packet in decoded:
        assert isinstance(packet, PACKET_CLASSES)
        if isinstance(packet, Connect):
            version = packet.protocol_version
        assert_round_trip(packet, version)


@examples(1500)
@given(data=st.binary(max_size=300), version=st.sampled_from([0, 3, 4, 5]))
def test_random_bytes_decode_or_raise_mqtt_error(data: bytes, version: int) -> None:
    decoded, _ = feed_safely(Framer(protocol_version=version), data)
    assert_decoded_packets_are_valid(decoded, version)


@examples(1000)
@given(first=st.integers(0, 255), body=st.binary(max_size=200),
       version=st.sampled_from([0, 4, 5]))
def test_random_body_behind_a_valid_fixed_header_decodes_or_raises_mqtt_error(
    first: int, body: bytes, version: int
) -> None:
    data = bytes([first]) + ref_varint(len(body)) + body
    decoded, code = feed_safely(Framer(protocol_version=version), data)
    assert len(decoded) == (0 if code else 1)
    assert_decoded_packets_are_valid(decoded, version)


def _corpus(version: int) -> list[bytes]:
    """Valid packets of every kind for `version`; in 5.0 with every property they allow."""
    values = {BYTE: 1, U16: 0x1234, U32: 0x1234_5678, VARINT: 300, STR: "a/b", BIN: b"\x00\x01",
              PAIR: [("k", "v"), ("k", "w")]}
    out = []
    if version == 5:
        for kind in KINDS_WITH_PROPERTIES:
            props = {pid: values[ptype] for pid, (_, ptype, kinds) in PROPERTIES.items()
                     if kind in kinds}
            if kind == "publish":
                props[SUBSCRIPTION_IDENTIFIER] = [1, 300]
            out.append(encode(packet_with_properties(kind, props), 5))
    plain = [
        Connect("c", version, "MQIsdp" if version == 3 else "MQTT", username="u", password=b"p",
                will=Will("w", b"bye", 1, True)),
        Connack(True, 0),
        Publish("a/b", b"hello"),
        Publish("a/b", b"x" * 130, 1, True, True, 7),
        Puback(1), Pubrec(2), Pubrel(3), Pubcomp(4),
        Subscribe(5, [Subscription("a/+", 1), Subscription("#", 2)]),
        Suback(5, [1, 2]),
        Unsubscribe(6, ["a/+", "b"]),
        Unsuback(6, [0, 0x11] if version == 5 else None),
        Pingreq(), Pingresp(), Disconnect(),
    ]
    if version == 5:
        plain += [Puback(1, 0x10), Disconnect(4), Auth()]
    return out + [encode(p, version) for p in plain]


CORPUS = {version: _corpus(version) for version in (3, 4, 5)}


def _header_size(raw: bytes) -> int:
    """Size of the fixed header: the first byte and the remaining length."""
    size = 2
    while raw[size - 1] & 0x80:
        size += 1
    return size


@pytest.mark.parametrize("version", [3, 4, 5])
def test_framer_returns_every_packet_of_one_buffer_from_one_call(version: int) -> None:
    framer = Framer(protocol_version=version)
    decoded = framer.feed(b"".join(CORPUS[version]) + b"\x30")
    assert [encode(p, version) for p in decoded] == CORPUS[version]
    assert framer.buffered == 1


@examples(300)
@given(version=st.sampled_from([3, 4, 5]), data=st.data())
def test_max_packet_size_is_checked_on_the_whole_packet_from_its_fixed_header(
    version: int, data: st.DataObject
) -> None:
    # 5.0 3.1.2.11.4: the size is the total number of bytes, fixed header included; the
    # framer refuses a larger packet (0x95) as soon as it has the fixed header.
    raw = data.draw(st.sampled_from(CORPUS[version]))
    limit = data.draw(st.integers(2, len(raw) + 2))
    framer = Framer(max_packet_size=limit, protocol_version=version)
    if len(raw) > limit:
        with pytest.raises(MQTTError) as info:
            framer.feed(raw[: _header_size(raw)])
        assert info.value.reason_code == 0x95
    else:
        assert len(framer.feed(raw)) == 1


@st.composite
def mutated_streams(draw: st.DrawFn) -> tuple[int, bytes]:
    """Valid packets with bytes flipped, inserted or deleted; and the framer's version."""
    version = draw(st.sampled_from([3, 4, 5]))
    stream = bytearray(b"".join(draw(st.lists(st.sampled_from(CORPUS[version]), min_size=1,
                                              max_size=4))))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete"]))
        if op == "insert":
            stream.insert(draw(st.integers(0, len(stream))), draw(st.integers(0, 255)))
        elif stream and op == "flip":
            stream[draw(st.integers(0, len(stream) - 1))] ^= draw(st.integers(1, 255))
        elif stream:
            del stream[draw(st.integers(0, len(stream) - 1))]
    return version, bytes(stream)


@examples(1000)
@given(mutated=mutated_streams(), data=st.data())
def test_mutated_packets_decode_or_raise_mqtt_error_wherever_split(
    mutated: tuple[int, bytes], data: st.DataObject
) -> None:
    version, stream = mutated
    whole, whole_code = feed_safely(Framer(protocol_version=version), stream)
    assert_decoded_packets_are_valid(whole, version)
    # The outcome does not depend on where the stream is split.
    cut = data.draw(st.integers(0, len(stream)))
    framer = Framer(protocol_version=version)
    first, code = feed_safely(framer, stream[:cut])
    if code is None:
        second, code = feed_safely(framer, stream[cut:])
        first += second
    assert (first, code) == (whole, whole_code)


# -- strict validation, generated -----------------------------------------------------------

@examples(100)
@given(value=st.integers(0, 2_097_151), padding=st.integers(1, 3))
def test_variable_byte_integer_not_minimally_encoded_is_malformed(
    value: int, padding: int
) -> None:
    # [MQTT-1.5.5-1] the encoded value uses the minimum number of bytes.
    minimal = ref_varint(value)
    padded = minimal[:-1] + bytes([minimal[-1] | 0x80]) + b"\x80" * (padding - 1) + b"\x00"
    assume(len(padded) <= 4)
    with pytest.raises(MQTTError) as info:
        Framer(protocol_version=4).feed(b"\x30" + padded)
    assert info.value.reason_code == 0x81


def _ill_formed(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


@examples(300)
@given(raw=st.binary(min_size=1, max_size=12).filter(_ill_formed),
       version=st.sampled_from([4, 5]))
def test_ill_formed_utf8_topic_is_malformed(raw: bytes, version: int) -> None:
    # [MQTT-1.5.4-1] well-formed UTF-8 (no surrogates, overlong forms, stray bytes).
    raw = raw.replace(b"+", b"a").replace(b"#", b"a")
    assume(_ill_formed(raw))
    body = len(raw).to_bytes(2, "big") + raw + (b"\x00" if version == 5 else b"")
    with pytest.raises(MQTTError) as info:
        Framer(protocol_version=version).feed(b"\x30" + ref_varint(len(body)) + body)
    assert info.value.reason_code == 0x81


def _ref_utf8_string(raw: bytes) -> str | None:
    """A UTF-8 string field by [MQTT-1.5.4-1, MQTT-1.5.4-2]: None when malformed."""
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if "\x00" in s else s


# ASCII text around the codec's eight-byte steps, with one byte that is not ASCII text
# (U+0000, a high byte, a valid two-byte character) anywhere, or none.
_ODD_BYTES = [b"", b"\x00", b"\x7f", b"\x80", b"\xff", b"\xc3\xa9", b"\xc3", b"\x01"]


@examples(300)
@given(size=st.integers(0, 25), at=st.integers(0, 25), odd=st.sampled_from(_ODD_BYTES),
       where=st.sampled_from(["topic", "content_type"]))
def test_utf8_strings_decode_as_python_decodes_them(size: int, at: int, odd: bytes,
                                                    where: str) -> None:
    ascii_text = bytes(0x61 + i % 26 for i in range(size))
    raw = ascii_text[:at] + odd + ascii_text[at:]
    if where == "topic":  # QoS 1, packet id 1, no properties
        body = len(raw).to_bytes(2, "big") + raw + b"\x00\x01\x00payload"
    else:  # topic "t", QoS 1, packet id 1, the Content Type property
        prop = b"\x03" + len(raw).to_bytes(2, "big") + raw
        body = b"\x00\x01t\x00\x01" + ref_varint(len(prop)) + prop + b"payload"
    packet = b"\x32" + ref_varint(len(body)) + body
    expected = _ref_utf8_string(raw)
    if where == "topic" and not raw:
        with pytest.raises(MQTTError) as info:
            decode_one(packet, 5)
        assert info.value.reason_code == 0x82  # an empty topic name without a Topic Alias
        return
    if expected is None:
        with pytest.raises(MQTTError) as info:
            decode_one(packet, 5)
        assert info.value.reason_code == 0x81
        return
    p = decode_one(packet, 5)
    got = p.topic if where == "topic" else p.properties[0x03]
    assert type(got) is str
    assert got == expected
    assert got.isascii() == raw.isascii()
    assert p.payload == b"payload"


def _with_nul(s: str, at: int) -> str:
    at = min(at, len(s))
    return s[:at] + "\x00" + s[at:]


@examples(100)
@given(
    field=st.sampled_from(["topic", "client_id", "username", "will_topic", "topic_filter",
                           "unsubscribe_filter", "user_property", "reason_string"]),
    s=texts(8),
    at=st.integers(0, 8),
)
def test_u0000_in_any_utf8_string_is_malformed(field: str, s: str, at: int) -> None:
    # [MQTT-1.5.4-2] a UTF-8 string does not contain U+0000. The encoder writes it anyway.
    bad = _with_nul(s, at)
    packet: Any
    version = 5
    if field == "topic":
        packet = Publish(bad.replace("+", "").replace("#", ""))  # else 0x90 may come first
    elif field == "client_id":
        packet = Connect(bad, 5)
    elif field == "username":
        packet = Connect("c", 5, username=bad)
    elif field == "will_topic":
        packet = Connect("c", 5, will=Will(bad))
    elif field == "topic_filter":
        packet = Subscribe(1, [Subscription(bad)])
    elif field == "unsubscribe_filter":
        packet = Unsubscribe(1, [bad])
    elif field == "user_property":
        packet = Puback(1, 0, {0x26: [(s, bad)]})
    else:
        packet = Disconnect(0x80, {0x1F: bad})
    with pytest.raises(MQTTError) as info:
        decode_one(encode(packet, version), 0 if isinstance(packet, Connect) else version)
    assert info.value.reason_code == 0x81


@examples(100)
@given(prefix=st.text(TOPIC_CHARS, max_size=6), wildcard=st.sampled_from("+#"),
       suffix=st.text(TOPIC_CHARS, max_size=6), version=st.sampled_from([4, 5]))
def test_wildcard_in_publish_topic_is_topic_name_invalid(
    prefix: str, wildcard: str, suffix: str, version: int
) -> None:
    # [MQTT-3.3.2-2] the topic name of a PUBLISH does not contain wildcard characters.
    raw = encode(Publish(prefix + wildcard + suffix, b"x", 1, packet_id=1), version)
    with pytest.raises(MQTTError) as info:
        decode_one(raw, version)
    assert info.value.reason_code == 0x90


@examples(100)
@given(kind=st.sampled_from(["publish", "subscribe", "unsubscribe"]),
       version=st.sampled_from([4, 5]), data=st.data())
def test_packet_id_0_is_a_protocol_error(kind: str, version: int, data: st.DataObject) -> None:
    # [MQTT-2.2.1-3] SUBSCRIBE, UNSUBSCRIBE and QoS > 0 PUBLISH carry a non-zero packet id.
    if kind == "publish":
        packet = data.draw(acknowledged_publishes(version))
    else:
        packet = data.draw(strategy(kind, version))
    packet.packet_id = 0
    with pytest.raises(MQTTError) as info:
        decode_one(encode(packet, version), version)
    assert info.value.reason_code == 0x82
