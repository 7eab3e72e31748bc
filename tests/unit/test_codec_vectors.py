"""Table-driven tests of the MQTT codec (hbroker_ext/codec.pyx).

Two tables of raw packets, written byte by byte from the specifications (MQTT 3.1.1 and 5.0):

- `VALID`: raw bytes and the packet they decode to. Every vector is decoded through `Framer.feed`
  (whole, byte by byte, truncated) and, when the bytes are the canonical form, re-encoded with
  `encode` and compared byte for byte.
- `INVALID`: raw bytes and the reason code of the `MQTTError` they must raise. Every vector is fed
  alone and behind good packets (`MQTTError.packets`).

Reason codes: 0x81 Malformed Packet, 0x82 Protocol Error, 0x84 Unsupported Protocol Version,
0x90 Topic Name Invalid, 0x95 Packet Too Large. Statement numbers are MQTT 5.0 unless marked
"3.1.1". The property-based tests are in test_codec.py.
"""

import pickle
from dataclasses import dataclass
from typing import Any

import pytest
from hbroker_ext.codec import (
    ASSIGNED_CLIENT_IDENTIFIER,
    AUTHENTICATION_DATA,
    AUTHENTICATION_METHOD,
    CONTENT_TYPE,
    CORRELATION_DATA,
    MAXIMUM_PACKET_SIZE,
    MAXIMUM_QOS,
    MESSAGE_EXPIRY_INTERVAL,
    PAYLOAD_FORMAT_INDICATOR,
    REASON_STRING,
    RECEIVE_MAXIMUM,
    REQUEST_PROBLEM_INFORMATION,
    REQUEST_RESPONSE_INFORMATION,
    RESPONSE_INFORMATION,
    RESPONSE_TOPIC,
    RETAIN_AVAILABLE,
    SERVER_KEEP_ALIVE,
    SERVER_REFERENCE,
    SESSION_EXPIRY_INTERVAL,
    SHARED_SUBSCRIPTION_AVAILABLE,
    SUBSCRIPTION_IDENTIFIER,
    SUBSCRIPTION_IDENTIFIER_AVAILABLE,
    TOPIC_ALIAS,
    TOPIC_ALIAS_MAXIMUM,
    USER_PROPERTY,
    WILDCARD_SUBSCRIPTION_AVAILABLE,
    WILL_DELAY_INTERVAL,
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
)

MALFORMED = 0x81
PROTOCOL_ERROR = 0x82
UNSUPPORTED_PROTOCOL_VERSION = 0x84
TOPIC_NAME_INVALID = 0x90
PACKET_TOO_LARGE = 0x95

MQTT = b"\x00\x04MQTT"
MQISDP = b"\x00\x06MQIsdp"


@dataclass(frozen=True)
class Valid:
    name: str
    version: int  # protocol version the framer runs at; 0 for CONNECT (no CONNECT seen yet)
    raw: bytes
    packet: Any
    canonical: bool = True  # encode(packet) gives back exactly `raw`


@dataclass(frozen=True)
class Invalid:
    name: str
    version: int
    raw: bytes
    reason_code: int


VALID: list[Valid] = [
    # -- CONNECT ----------------------------------------------------------------------------
    Valid(
        "connect_311_minimal",
        0,
        b"\x10\x0c" + MQTT + b"\x04" + b"\x02" + b"\x00\x3c" + b"\x00\x00",
        Connect(client_id="", protocol_version=4, clean_start=True, keepalive=60),
    ),
    Valid(
        "connect_311_will_username_password",
        0,
        b"\x10\x2c" + MQTT + b"\x04"
        + b"\xee"  # user name, password, will retain, will QoS 1, will, clean session
        + b"\x00\x1e"
        + b"\x00\x03zen"
        + b"\x00\x03lwt" + b"\x00\x08notagain"
        + b"\x00\x05mochi" + b"\x00\x05melon",
        Connect("zen", 4, "MQTT", True, 30, "mochi", b"melon", Will("lwt", b"notagain", 1, True)),
    ),
    Valid(
        "connect_311_will_qos2_empty_payload",
        0,
        b"\x10\x13" + MQTT + b"\x04" + b"\x16" + b"\x00\x3c" + b"\x00\x00"
        + b"\x00\x03a/b" + b"\x00\x00",
        Connect("", 4, will=Will("a/b", b"", 2, False)),
    ),
    Valid(
        "connect_311_username_only",
        0,
        b"\x10\x10" + MQTT + b"\x04" + b"\x82" + b"\x00\x3c" + b"\x00\x01c" + b"\x00\x01u",
        Connect("c", 4, username="u"),
    ),
    Valid(
        "connect_31_mqisdp",
        0,
        b"\x10\x11" + MQISDP + b"\x03" + b"\x00" + b"\x00\x14" + b"\x00\x03zen",
        Connect("zen", 3, "MQIsdp", clean_start=False, keepalive=20),
    ),
    Valid(
        "connect_5_minimal",
        0,
        b"\x10\x0d" + MQTT + b"\x05" + b"\x02" + b"\x00\x3c" + b"\x00" + b"\x00\x00",
        Connect("", 5),
    ),
    Valid(
        # A password without a user name is allowed from 5.0 on (3.1.2.9).
        "connect_5_password_without_username",
        0,
        b"\x10\x11" + MQTT + b"\x05" + b"\x42" + b"\x00\x3c" + b"\x00" + b"\x00\x00"
        + b"\x00\x02pw",
        Connect("", 5, password=b"pw"),
    ),
    Valid(
        "connect_5_properties_and_will_properties",
        0,
        b"\x10\x7e" + MQTT + b"\x05"
        + b"\xd4"  # user name, password, will QoS 2, will; no clean start
        + b"\x00\x3c"
        + b"\x30"  # 48 bytes of properties
        + b"\x11\x00\x00\x00\x78"
        + b"\x21\x00\x0a"
        + b"\x27\x00\x00\x10\x00"
        + b"\x22\x00\x05"
        + b"\x19\x01"
        + b"\x17\x00"
        + b"\x26\x00\x01k\x00\x01v"
        + b"\x26\x00\x01k\x00\x02v2"
        + b"\x15\x00\x05SCRAM"
        + b"\x16\x00\x02\x01\x02"
        + b"\x00\x03zen"
        + b"\x25"  # 37 bytes of will properties
        + b"\x18\x00\x00\x00\x05"
        + b"\x01\x01"
        + b"\x02\x00\x00\x00\x3c"
        + b"\x03\x00\x04text"
        + b"\x08\x00\x03r/t"
        + b"\x09\x00\x02\xab\xcd"
        + b"\x26\x00\x01w\x00\x01x"
        + b"\x00\x03lwt" + b"\x00\x03bye"
        + b"\x00\x05mochi" + b"\x00\x05melon",
        Connect(
            "zen",
            5,
            "MQTT",
            False,
            60,
            "mochi",
            b"melon",
            Will(
                "lwt",
                b"bye",
                2,
                False,
                {
                    WILL_DELAY_INTERVAL: 5,
                    PAYLOAD_FORMAT_INDICATOR: 1,
                    MESSAGE_EXPIRY_INTERVAL: 60,
                    CONTENT_TYPE: "text",
                    RESPONSE_TOPIC: "r/t",
                    CORRELATION_DATA: b"\xab\xcd",
                    USER_PROPERTY: [("w", "x")],
                },
            ),
            {
                SESSION_EXPIRY_INTERVAL: 120,
                RECEIVE_MAXIMUM: 10,
                MAXIMUM_PACKET_SIZE: 4096,
                TOPIC_ALIAS_MAXIMUM: 5,
                REQUEST_RESPONSE_INFORMATION: 1,
                REQUEST_PROBLEM_INFORMATION: 0,
                USER_PROPERTY: [("k", "v"), ("k", "v2")],
                AUTHENTICATION_METHOD: "SCRAM",
                AUTHENTICATION_DATA: b"\x01\x02",
            },
        ),
    ),
    # -- CONNACK ----------------------------------------------------------------------------
    Valid("connack_311_accepted", 4, b"\x20\x02\x00\x00", Connack()),
    Valid("connack_311_session_present", 4, b"\x20\x02\x01\x00", Connack(True)),
    Valid("connack_311_not_authorized", 4, b"\x20\x02\x00\x05", Connack(False, 5)),
    Valid("connack_5_minimal", 5, b"\x20\x03\x00\x00\x00", Connack()),
    Valid("connack_5_not_authorized", 5, b"\x20\x03\x00\x87\x00", Connack(False, 0x87)),
    Valid(
        "connack_5_every_property",
        5,
        b"\x20\x4b" + b"\x01" + b"\x00"
        + b"\x48"  # 72 bytes of properties
        + b"\x11\x00\x00\x01\x2c"
        + b"\x21\x00\x14"
        + b"\x24\x01"
        + b"\x25\x00"
        + b"\x27\x00\x01\x00\x00"
        + b"\x12\x00\x04auto"
        + b"\x22\x00\x0a"
        + b"\x1f\x00\x02ok"
        + b"\x26\x00\x01a\x00\x01b"
        + b"\x28\x01"
        + b"\x29\x00"
        + b"\x2a\x01"
        + b"\x13\x00\x1e"
        + b"\x1a\x00\x03r/i"
        + b"\x1c\x00\x03srv"
        + b"\x15\x00\x05SCRAM"
        + b"\x16\x00\x01\xff",
        Connack(
            True,
            0,
            {
                SESSION_EXPIRY_INTERVAL: 300,
                RECEIVE_MAXIMUM: 20,
                MAXIMUM_QOS: 1,
                RETAIN_AVAILABLE: 0,
                MAXIMUM_PACKET_SIZE: 65536,
                ASSIGNED_CLIENT_IDENTIFIER: "auto",
                TOPIC_ALIAS_MAXIMUM: 10,
                REASON_STRING: "ok",
                USER_PROPERTY: [("a", "b")],
                WILDCARD_SUBSCRIPTION_AVAILABLE: 1,
                SUBSCRIPTION_IDENTIFIER_AVAILABLE: 0,
                SHARED_SUBSCRIPTION_AVAILABLE: 1,
                SERVER_KEEP_ALIVE: 30,
                RESPONSE_INFORMATION: "r/i",
                SERVER_REFERENCE: "srv",
                AUTHENTICATION_METHOD: "SCRAM",
                AUTHENTICATION_DATA: b"\xff",
            },
        ),
    ),
    # -- PUBLISH ----------------------------------------------------------------------------
    Valid("publish_311_qos0", 4, b"\x30\x0a\x00\x03a/bhello", Publish("a/b", b"hello")),
    Valid(
        "publish_311_qos1_retain_dup",
        4,
        b"\x3b\x0c\x00\x03a/b\x00\x07hello",
        Publish("a/b", b"hello", qos=1, retain=True, dup=True, packet_id=7),
    ),
    Valid(
        "publish_311_qos2_highest_packet_id_empty_payload",
        4,
        b"\x34\x07\x00\x03a/b\xff\xff",
        Publish("a/b", b"", qos=2, packet_id=65535),
    ),
    Valid(
        "publish_311_multibyte_utf8_topic",
        4,
        b"\x30\x08\x00\x06\xc3\xbc/\xe2\x9c\x93",
        Publish("\u00fc/\u2713"),
    ),
    Valid(
        # [MQTT-1.5.4-3] 0xEF 0xBB 0xBF is U+FEFF and is not stripped by the receiver.
        "publish_311_topic_starting_with_byte_order_mark",
        4,
        b"\x30\x05\x00\x03\xef\xbb\xbf",
        Publish("\ufeff"),
    ),
    Valid(
        "publish_311_two_byte_remaining_length",
        4,
        b"\x30\xcb\x01\x00\x01a" + b"x" * 200,
        Publish("a", b"x" * 200),
    ),
    Valid(
        "publish_5_qos0_no_properties", 5, b"\x30\x0b\x00\x03a/b\x00hello", Publish("a/b", b"hello")
    ),
    Valid(
        "publish_5_every_property",
        5,
        b"\x32\x42" + b"\x00\x03a/b" + b"\x00\x01"
        + b"\x38"  # 56 bytes of properties
        + b"\x01\x01"
        + b"\x02\x00\x00\x0e\x10"
        + b"\x23\x00\x03"
        + b"\x08\x00\x03r/t"
        + b"\x09\x00\x03\x01\x02\x03"
        + b"\x26\x00\x01k\x00\x01v"
        + b"\x26\x00\x01k\x00\x01w"
        + b"\x0b\x01"
        + b"\x0b\xff\xff\xff\x7f"
        + b"\x03\x00\x0atext/plain"
        + b"hi",
        Publish(
            "a/b",
            b"hi",
            qos=1,
            packet_id=1,
            properties={
                PAYLOAD_FORMAT_INDICATOR: 1,
                MESSAGE_EXPIRY_INTERVAL: 3600,
                TOPIC_ALIAS: 3,
                RESPONSE_TOPIC: "r/t",
                CORRELATION_DATA: b"\x01\x02\x03",
                USER_PROPERTY: [("k", "v"), ("k", "w")],
                SUBSCRIPTION_IDENTIFIER: [1, 268_435_455],
                CONTENT_TYPE: "text/plain",
            },
        ),
    ),
    Valid(
        # 5.0 3.3.2.1: an empty topic name is allowed when a Topic Alias is present.
        "publish_5_empty_topic_with_topic_alias",
        5,
        b"\x30\x07\x00\x00\x03\x23\x00\x05x",
        Publish("", b"x", properties={TOPIC_ALIAS: 5}),
    ),
    Valid(
        # User properties keep their wire order across other properties [MQTT-3.3.2-18];
        # re-encoding groups them, so these bytes are not the canonical form.
        "publish_5_interleaved_user_properties",
        5,
        b"\x30\x16\x00\x03a/b"
        + b"\x10"
        + b"\x26\x00\x01a\x00\x011"
        + b"\x01\x00"
        + b"\x26\x00\x01b\x00\x012",
        Publish("a/b", properties={USER_PROPERTY: [("a", "1"), ("b", "2")],
                                   PAYLOAD_FORMAT_INDICATOR: 0}),
        canonical=False,
    ),
    # -- PUBACK, PUBREC, PUBREL, PUBCOMP ----------------------------------------------------
    Valid("puback_311", 4, b"\x40\x02\x00\x07", Puback(7)),
    Valid("pubrec_311", 4, b"\x50\x02\x00\x08", Pubrec(8)),
    Valid("pubrel_311", 4, b"\x62\x02\x00\x09", Pubrel(9)),
    Valid("pubcomp_311", 4, b"\x70\x02\x00\x0a", Pubcomp(10)),
    # 5.0 3.4.2.1: reason code and property length are left out for success without properties.
    Valid("puback_5_short_form", 5, b"\x40\x02\x00\x07", Puback(7)),
    Valid("puback_5_reason_code_only", 5, b"\x40\x03\x00\x07\x10", Puback(7, 0x10)),
    Valid(
        "pubrec_5_reason_code_and_properties",
        5,
        b"\x50\x12\x00\x08\x80" + b"\x0e" + b"\x1f\x00\x04full" + b"\x26\x00\x01k\x00\x01v",
        Pubrec(8, 0x80, {REASON_STRING: "full", USER_PROPERTY: [("k", "v")]}),
    ),
    Valid("pubrel_5_packet_id_not_found", 5, b"\x62\x03\x00\x09\x92", Pubrel(9, 0x92)),
    Valid(
        "pubcomp_5_success_with_reason_string",
        5,
        b"\x70\x09\x00\x0a\x00\x05\x1f\x00\x02ok",
        Pubcomp(10, 0, {REASON_STRING: "ok"}),
    ),
    Valid(
        "puback_5_success_code_without_properties",
        5,
        b"\x40\x03\x00\x07\x00",
        Puback(7),
        canonical=False,
    ),
    Valid(
        "puback_5_success_with_empty_property_block",
        5,
        b"\x40\x04\x00\x07\x00\x00",
        Puback(7),
        canonical=False,
    ),
    # -- SUBSCRIBE ------------------------------------------------------------------------
    Valid(
        "subscribe_311",
        4,
        b"\x82\x12\x00\x01" + b"\x00\x03a/b\x00" + b"\x00\x03c/#\x01" + b"\x00\x01+\x02",
        Subscribe(1, [Subscription("a/b", 0), Subscription("c/#", 1), Subscription("+", 2)]),
    ),
    Valid(
        "subscribe_5_every_subscription_option",
        5,
        b"\x82\x27\x00\x0f"
        + b"\x0a" + b"\x0b\xc8\x01" + b"\x26\x00\x01k\x00\x01v"
        + b"\x00\x03a/b\x00"  # QoS 0, defaults
        + b"\x00\x03c/#\x05"  # QoS 1, no local
        + b"\x00\x01+\x0a"  # QoS 2, retain as published
        + b"\x00\x03x/y\x11"  # QoS 1, retain handling 1
        + b"\x00\x01#\x2e",  # QoS 2, no local, retain as published, retain handling 2
        Subscribe(
            15,
            [
                Subscription("a/b"),
                Subscription("c/#", 1, no_local=True),
                Subscription("+", 2, retain_as_published=True),
                Subscription("x/y", 1, retain_handling=1),
                Subscription("#", 2, True, True, 2),
            ],
            {SUBSCRIPTION_IDENTIFIER: 200, USER_PROPERTY: [("k", "v")]},
        ),
    ),
    Valid(
        "subscribe_5_no_properties",
        5,
        b"\x82\x07\x00\x01\x00\x00\x01a\x00",
        Subscribe(1, [Subscription("a")]),
    ),
    # -- SUBACK -----------------------------------------------------------------------------
    Valid("suback_311", 4, b"\x90\x06\x00\x01\x00\x01\x02\x80", Suback(1, [0, 1, 2, 0x80])),
    Valid(
        "suback_5",
        5,
        b"\x90\x13\x00\x02" + b"\x05\x1f\x00\x02no"
        + b"\x00\x01\x02\x80\x83\x87\x8f\x91\x97\x9e\xa1",
        Suback(2, [0, 1, 2, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1],
               {REASON_STRING: "no"}),
    ),
    # -- UNSUBSCRIBE ------------------------------------------------------------------------
    Valid(
        "unsubscribe_311",
        4,
        b"\xa2\x0c\x00\x01\x00\x03a/b\x00\x03c/#",
        Unsubscribe(1, ["a/b", "c/#"]),
    ),
    Valid(
        "unsubscribe_5",
        5,
        b"\xa2\x0f\x00\x02" + b"\x07\x26\x00\x01k\x00\x01v" + b"\x00\x03a/b",
        Unsubscribe(2, ["a/b"], {USER_PROPERTY: [("k", "v")]}),
    ),
    # -- UNSUBACK ---------------------------------------------------------------------------
    Valid("unsuback_311", 4, b"\xb0\x02\x00\x01", Unsuback(1)),
    Valid(
        "unsuback_5",
        5,
        b"\xb0\x0b\x00\x02" + b"\x05\x1f\x00\x02ok" + b"\x00\x11\x80",
        Unsuback(2, [0, 0x11, 0x80], {REASON_STRING: "ok"}),
    ),
    Valid("unsuback_5_no_properties", 5, b"\xb0\x04\x00\x03\x00\x00", Unsuback(3, [0])),
    # -- PINGREQ, PINGRESP ------------------------------------------------------------------
    Valid("pingreq_311", 4, b"\xc0\x00", Pingreq()),
    Valid("pingresp_311", 4, b"\xd0\x00", Pingresp()),
    Valid("pingreq_5", 5, b"\xc0\x00", Pingreq()),
    Valid("pingresp_5", 5, b"\xd0\x00", Pingresp()),
    # -- DISCONNECT -------------------------------------------------------------------------
    Valid("disconnect_311", 4, b"\xe0\x00", Disconnect()),
    Valid("disconnect_5_short_form", 5, b"\xe0\x00", Disconnect()),
    Valid("disconnect_5_with_will_message", 5, b"\xe0\x01\x04", Disconnect(4)),
    Valid(
        "disconnect_5_properties",
        5,
        b"\xe0\x1a\x8e" + b"\x18"
        + b"\x11\x00\x00\x00\x00"
        + b"\x1f\x00\x03bye"
        + b"\x1c\x00\x03srv"
        + b"\x26\x00\x01k\x00\x01v",
        Disconnect(
            0x8E,
            {
                SESSION_EXPIRY_INTERVAL: 0,
                REASON_STRING: "bye",
                SERVER_REFERENCE: "srv",
                USER_PROPERTY: [("k", "v")],
            },
        ),
    ),
    Valid(
        "disconnect_5_success_with_empty_property_block",
        5,
        b"\xe0\x02\x00\x00",
        Disconnect(),
        canonical=False,
    ),
    # -- AUTH -------------------------------------------------------------------------------
    Valid("auth_5_short_form", 5, b"\xf0\x00", Auth()),
    Valid(
        "auth_5_continue_authentication",
        5,
        b"\xf0\x1c\x18" + b"\x1a"
        + b"\x15\x00\x05SCRAM"
        + b"\x16\x00\x03abc"
        + b"\x1f\x00\x02go"
        + b"\x26\x00\x01k\x00\x01v",
        Auth(
            0x18,
            {
                AUTHENTICATION_METHOD: "SCRAM",
                AUTHENTICATION_DATA: b"abc",
                REASON_STRING: "go",
                USER_PROPERTY: [("k", "v")],
            },
        ),
    ),
    Valid(
        "auth_5_reauthenticate",
        5,
        b"\xf0\x0a\x19\x08\x15\x00\x05SCRAM",
        Auth(0x19, {AUTHENTICATION_METHOD: "SCRAM"}),
    ),
]


def _connect5(props: bytes, rest: bytes = b"\x00\x00", flags: int = 0x02) -> bytes:
    """A 5.0 CONNECT with the given raw property block (without its length) and payload."""
    body = MQTT + b"\x05" + bytes([flags]) + b"\x00\x3c" + bytes([len(props)]) + props + rest
    return bytes([0x10, len(body)]) + body


def _publish5(props: bytes, topic: bytes = b"a") -> bytes:
    """A 5.0 QoS 0 PUBLISH with the given raw property block (without its length)."""
    body = len(topic).to_bytes(2, "big") + topic + bytes([len(props)]) + props
    return bytes([0x30, len(body)]) + body


INVALID: list[Invalid] = [
    # -- fixed header flags: [MQTT-2.2.2-1], [MQTT-2.2.2-2] (3.1.1); 5.0 2.1.3 ----------------
    Invalid("connect_fixed_header_flags", 0,
            b"\x11\x0c" + MQTT + b"\x04\x02\x00\x3c\x00\x00", MALFORMED),
    Invalid("connack_fixed_header_flags", 4, b"\x21\x02\x00\x00", MALFORMED),
    Invalid("puback_fixed_header_flags", 4, b"\x41\x02\x00\x01", MALFORMED),
    Invalid("pubrec_fixed_header_flags", 5, b"\x52\x02\x00\x01", MALFORMED),
    # [MQTT-3.6.1-1] PUBREL flags are 0b0010.
    Invalid("pubrel_fixed_header_flags_0000", 4, b"\x60\x02\x00\x01", MALFORMED),
    Invalid("pubrel_fixed_header_flags_0011", 5, b"\x63\x02\x00\x01", MALFORMED),
    Invalid("pubcomp_fixed_header_flags", 4, b"\x72\x02\x00\x01", MALFORMED),
    # [MQTT-3.8.1-1] SUBSCRIBE flags are 0b0010.
    Invalid("subscribe_fixed_header_flags_0000", 4, b"\x80\x06\x00\x01\x00\x01a\x00", MALFORMED),
    Invalid("subscribe_fixed_header_flags_0011", 4, b"\x83\x06\x00\x01\x00\x01a\x00", MALFORMED),
    Invalid("subscribe_fixed_header_flags_1010", 5, b"\x8a\x07\x00\x01\x00\x00\x01a\x00",
            MALFORMED),
    Invalid("suback_fixed_header_flags", 4, b"\x92\x03\x00\x01\x00", MALFORMED),
    # [MQTT-3.10.1-1] UNSUBSCRIBE flags are 0b0010.
    Invalid("unsubscribe_fixed_header_flags_0000", 4, b"\xa0\x05\x00\x01\x00\x01a", MALFORMED),
    Invalid("unsuback_fixed_header_flags", 4, b"\xb1\x02\x00\x01", MALFORMED),
    Invalid("pingreq_fixed_header_flags", 4, b"\xc1\x00", MALFORMED),
    Invalid("pingresp_fixed_header_flags", 5, b"\xd8\x00", MALFORMED),
    Invalid("disconnect_fixed_header_flags", 5, b"\xe1\x00", MALFORMED),
    Invalid("auth_fixed_header_flags", 5, b"\xf2\x00", MALFORMED),
    Invalid("reserved_packet_type_0", 4, b"\x00\x00", MALFORMED),
    Invalid("auth_does_not_exist_in_311", 4, b"\xf0\x00", MALFORMED),
    # [MQTT-3.3.1-4] QoS 3 in PUBLISH.
    Invalid("publish_qos_3", 4, b"\x36\x07\x00\x03a/b\x00\x01", MALFORMED),
    Invalid("publish_qos_3_with_dup_and_retain", 5, b"\x3f\x08\x00\x03a/b\x00\x01\x00",
            MALFORMED),
    # [MQTT-3.3.1-2] DUP must be 0 for QoS 0.
    Invalid("publish_qos_0_with_dup", 4, b"\x38\x05\x00\x03a/b", MALFORMED),
    # -- variable byte integers: at most 4 bytes, minimal [MQTT-1.5.5-1] --------------------
    Invalid("remaining_length_five_bytes", 4, b"\xc0\x80\x80\x80\x80\x01", MALFORMED),
    Invalid("remaining_length_fourth_byte_continues", 4, b"\x30\xff\xff\xff\xff", MALFORMED),
    Invalid("remaining_length_zero_in_two_bytes", 4, b"\xc0\x80\x00", MALFORMED),
    Invalid("remaining_length_two_in_two_bytes", 4, b"\x40\x82\x00\x00\x01", MALFORMED),
    Invalid("remaining_length_five_in_four_bytes", 4, b"\x30\x85\x80\x80\x00", MALFORMED),
    Invalid("property_length_not_minimal", 5, b"\x30\x05\x00\x01a\x80\x00", MALFORMED),
    Invalid("property_length_five_bytes", 5, b"\x30\x08\x00\x01a\xff\xff\xff\xff\x01",
            MALFORMED),
    Invalid("subscription_identifier_not_minimal", 5, _publish5(b"\x0b\x81\x00"), MALFORMED),
    Invalid("subscription_identifier_five_bytes", 5, _publish5(b"\x0b\xff\xff\xff\xff\x01"),
            MALFORMED),
    Invalid("property_identifier_not_minimal", 5, _publish5(b"\x81\x00\x01"), MALFORMED),
    # -- lengths that do not add up ---------------------------------------------------------
    Invalid("property_length_past_end_of_packet", 5, b"\x40\x04\x00\x01\x00\x05", MALFORMED),
    Invalid("property_value_past_end_of_property_block", 5,
            b"\x30\x08\x00\x01a\x02\x02\x00\x00\x0a", MALFORMED),
    Invalid("string_length_past_end_of_packet", 4, b"\x30\x05\x00\x09abc", MALFORMED),
    Invalid("puback_shorter_than_packet_id", 4, b"\x40\x01\x00", MALFORMED),
    Invalid("pingreq_with_body", 4, b"\xc0\x01\x00", MALFORMED),
    Invalid("puback_311_with_reason_code", 4, b"\x40\x03\x00\x01\x00", MALFORMED),
    Invalid("disconnect_311_with_reason_code", 4, b"\xe0\x01\x00", MALFORMED),
    Invalid("unsuback_311_with_reason_code", 4, b"\xb0\x03\x00\x01\x00", MALFORMED),
    Invalid("connack_311_too_long", 4, b"\x20\x03\x00\x00\x00", MALFORMED),
    Invalid("connack_5_without_property_length", 5, b"\x20\x02\x00\x00", MALFORMED),
    Invalid("suback_5_without_property_length", 5, b"\x90\x02\x00\x01", MALFORMED),
    Invalid("unsuback_5_without_property_length", 5, b"\xb0\x02\x00\x01", MALFORMED),
    Invalid("connect_trailing_byte", 0,
            b"\x10\x0d" + MQTT + b"\x04\x02\x00\x3c\x00\x00\x00", MALFORMED),
    Invalid("connect_without_client_identifier", 0,
            b"\x10\x0a" + MQTT + b"\x04\x02\x00\x3c", MALFORMED),
    Invalid("connect_will_flag_without_will_payload", 0,
            b"\x10\x0f" + MQTT + b"\x04\x06\x00\x3c\x00\x00\x00\x01t", MALFORMED),
    Invalid("connect_username_flag_without_username", 0,
            b"\x10\x0c" + MQTT + b"\x04\x82\x00\x3c\x00\x00", MALFORMED),
    Invalid("subscribe_filter_without_options_byte", 4, b"\x82\x05\x00\x01\x00\x01a", MALFORMED),
    # -- UTF-8 strings: well-formed [MQTT-1.5.4-1], no U+0000 [MQTT-1.5.4-2] -----------------
    Invalid("topic_invalid_byte_ff", 4, b"\x30\x04\x00\x02a\xff", MALFORMED),
    Invalid("topic_utf16_surrogate", 4, b"\x30\x05\x00\x03\xed\xa0\x80", MALFORMED),
    Invalid("topic_overlong_nul", 4, b"\x30\x04\x00\x02\xc0\x80", MALFORMED),
    Invalid("topic_overlong_slash", 4, b"\x30\x04\x00\x02\xc0\xaf", MALFORMED),
    Invalid("topic_truncated_multibyte_sequence", 4, b"\x30\x04\x00\x02a\xc3", MALFORMED),
    Invalid("topic_code_point_above_10ffff", 4, b"\x30\x06\x00\x04\xf4\x90\x80\x80", MALFORMED),
    Invalid("topic_u0000", 4, b"\x30\x05\x00\x03a\x00b", MALFORMED),
    Invalid("client_identifier_u0000", 0,
            b"\x10\x0e" + MQTT + b"\x04\x02\x00\x3c\x00\x02a\x00", MALFORMED),
    Invalid("username_invalid_utf8", 0,
            b"\x10\x0f" + MQTT + b"\x04\x82\x00\x3c\x00\x00\x00\x01\xfe", MALFORMED),
    Invalid("will_topic_u0000", 0,
            b"\x10\x11" + MQTT + b"\x04\x06\x00\x3c\x00\x00\x00\x01\x00\x00\x00", MALFORMED),
    Invalid("protocol_name_invalid_utf8", 0,
            b"\x10\x0c\x00\x04MQT\xff\x04\x02\x00\x3c\x00\x00", MALFORMED),
    Invalid("subscribe_topic_filter_u0000", 4, b"\x82\x06\x00\x01\x00\x01\x00\x00", MALFORMED),
    Invalid("unsubscribe_topic_filter_invalid_utf8", 4, b"\xa2\x05\x00\x01\x00\x01\xff",
            MALFORMED),
    Invalid("user_property_name_u0000", 5,
            b"\x40\x0b\x00\x01\x00\x07\x26\x00\x01\x00\x00\x01v", MALFORMED),
    Invalid("user_property_value_invalid_utf8", 5,
            b"\x40\x0b\x00\x01\x00\x07\x26\x00\x01k\x00\x01\x80", MALFORMED),
    Invalid("reason_string_invalid_utf8", 5, b"\xe0\x06\x00\x04\x1f\x00\x01\xff", MALFORMED),
    Invalid("content_type_surrogate", 5, _publish5(b"\x03\x00\x03\xed\xa0\x80"), MALFORMED),
    # -- topic names ------------------------------------------------------------------------
    # [MQTT-3.3.2-2] no wildcard characters in a PUBLISH topic name.
    Invalid("publish_topic_with_plus", 4, b"\x30\x05\x00\x03a/+", TOPIC_NAME_INVALID),
    Invalid("publish_topic_with_hash", 5, b"\x30\x06\x00\x03a/#\x00", TOPIC_NAME_INVALID),
    Invalid("publish_topic_only_hash", 4, b"\x32\x05\x00\x01#\x00\x01", TOPIC_NAME_INVALID),
    # [MQTT-4.7.3-1] topic names are at least one character long.
    Invalid("publish_empty_topic_311", 4, b"\x30\x02\x00\x00", MALFORMED),
    # 5.0 3.3.2.1: an empty topic name without a Topic Alias is a Protocol Error.
    Invalid("publish_empty_topic_without_topic_alias", 5, b"\x30\x03\x00\x00\x00",
            PROTOCOL_ERROR),
    Invalid("publish_empty_topic_with_other_properties", 5,
            b"\x30\x05\x00\x00\x02\x01\x01", PROTOCOL_ERROR),
    # -- properties: twice where once is allowed is a Protocol Error (5.0 3.x.2.x) -----------
    Invalid("duplicate_message_expiry_interval", 5,
            _publish5(b"\x02\x00\x00\x00\x01\x02\x00\x00\x00\x02"), PROTOCOL_ERROR),
    Invalid("duplicate_content_type", 5, _publish5(b"\x03\x00\x01a\x03\x00\x01b"),
            PROTOCOL_ERROR),
    Invalid("duplicate_topic_alias", 5, _publish5(b"\x23\x00\x01\x23\x00\x02"), PROTOCOL_ERROR),
    Invalid("duplicate_correlation_data", 5, _publish5(b"\x09\x00\x00\x09\x00\x00"),
            PROTOCOL_ERROR),
    Invalid("duplicate_payload_format_indicator", 5, _publish5(b"\x01\x00\x01\x01"),
            PROTOCOL_ERROR),
    Invalid("duplicate_response_topic", 5, _publish5(b"\x08\x00\x01r\x08\x00\x01r"),
            PROTOCOL_ERROR),
    Invalid("duplicate_subscription_identifier_in_subscribe", 5,
            b"\x82\x0b\x00\x01\x04\x0b\x01\x0b\x02\x00\x01a\x00", PROTOCOL_ERROR),
    Invalid("duplicate_session_expiry_interval_in_connect", 0,
            _connect5(b"\x11\x00\x00\x00\x01\x11\x00\x00\x00\x02"), PROTOCOL_ERROR),
    Invalid("duplicate_receive_maximum_in_connect", 0, _connect5(b"\x21\x00\x01\x21\x00\x02"),
            PROTOCOL_ERROR),
    Invalid("duplicate_authentication_data_in_connect", 0,
            _connect5(b"\x15\x00\x01m\x16\x00\x00\x16\x00\x00"), PROTOCOL_ERROR),
    Invalid("duplicate_will_delay_interval", 0,
            _connect5(b"", b"\x00\x00\x0a\x18\x00\x00\x00\x01\x18\x00\x00\x00\x02"
                      + b"\x00\x01t\x00\x00", flags=0x06), PROTOCOL_ERROR),
    Invalid("duplicate_maximum_qos_in_connack", 5, b"\x20\x07\x00\x00\x04\x24\x00\x24\x01",
            PROTOCOL_ERROR),
    Invalid("duplicate_reason_string_in_puback", 5,
            b"\x40\x0c\x00\x01\x00\x08\x1f\x00\x01a\x1f\x00\x01b", PROTOCOL_ERROR),
    Invalid("duplicate_server_reference_in_disconnect", 5,
            b"\xe0\x0a\x00\x08\x1c\x00\x01a\x1c\x00\x01b", PROTOCOL_ERROR),
    Invalid("duplicate_authentication_method_in_auth", 5,
            b"\xf0\x0a\x18\x08\x15\x00\x01a\x15\x00\x01b", PROTOCOL_ERROR),
    # -- properties not valid for the packet are Malformed (5.0 2.2.2.2) ---------------------
    Invalid("topic_alias_in_connect", 0, _connect5(b"\x23\x00\x01"), MALFORMED),
    Invalid("will_delay_interval_in_connect_properties", 0, _connect5(b"\x18\x00\x00\x00\x01"),
            MALFORMED),
    Invalid("session_expiry_interval_in_will_properties", 0,
            _connect5(b"", b"\x00\x00\x05\x11\x00\x00\x00\x01\x00\x01t\x00\x00", flags=0x06),
            MALFORMED),
    Invalid("session_expiry_interval_in_publish", 5, _publish5(b"\x11\x00\x00\x00\x01"),
            MALFORMED),
    Invalid("reason_string_in_publish", 5, _publish5(b"\x1f\x00\x01x"), MALFORMED),
    Invalid("subscription_identifier_in_unsubscribe", 5,
            b"\xa2\x08\x00\x01\x02\x0b\x01\x00\x01a", MALFORMED),
    Invalid("topic_alias_in_puback", 5, b"\x40\x07\x00\x01\x00\x03\x23\x00\x01", MALFORMED),
    Invalid("authentication_method_in_disconnect", 5, b"\xe0\x06\x00\x04\x15\x00\x01a",
            MALFORMED),
    Invalid("unknown_property_0x00", 5, b"\x40\x06\x00\x01\x00\x02\x00\x00", MALFORMED),
    Invalid("unknown_property_0x04", 5, _publish5(b"\x04\x00"), MALFORMED),
    Invalid("unknown_property_0x2b", 5, _publish5(b"\x2b\x00"), MALFORMED),
    Invalid("unknown_property_0x7f", 5, _publish5(b"\x7f\x00"), MALFORMED),
    Invalid("unknown_property_two_byte_identifier", 5, _publish5(b"\x80\x01\x00"), MALFORMED),
    # -- property values --------------------------------------------------------------------
    # "It is a Protocol Error to ... have a value other than 0 or 1" (3.1.2.11.7, 3.2.2.3.4).
    Invalid("request_problem_information_2", 0, _connect5(b"\x17\x02"), PROTOCOL_ERROR),
    Invalid("request_response_information_2", 0, _connect5(b"\x19\x02"), PROTOCOL_ERROR),
    Invalid("maximum_qos_2", 5, b"\x20\x05\x00\x00\x02\x24\x02", PROTOCOL_ERROR),
    Invalid("retain_available_255", 5, b"\x20\x05\x00\x00\x02\x25\xff", PROTOCOL_ERROR),
    Invalid("payload_format_indicator_2", 5, _publish5(b"\x01\x02"), PROTOCOL_ERROR),
    # Zero values that the specification forbids: Receive Maximum (3.1.2.11.3),
    # Topic Alias [MQTT-3.3.2-8], Maximum Packet Size (3.1.2.11.4),
    # Subscription Identifier (3.3.2.3.8, 3.8.2.1.2).
    Invalid("receive_maximum_0", 0, _connect5(b"\x21\x00\x00"), PROTOCOL_ERROR),
    Invalid("topic_alias_0", 5, _publish5(b"\x23\x00\x00"), PROTOCOL_ERROR),
    Invalid("maximum_packet_size_0", 5, b"\x20\x08\x00\x00\x05\x27\x00\x00\x00\x00",
            PROTOCOL_ERROR),
    Invalid("subscription_identifier_0_in_publish", 5, _publish5(b"\x0b\x00"), PROTOCOL_ERROR),
    Invalid("subscription_identifier_0_in_subscribe", 5,
            b"\x82\x09\x00\x01\x02\x0b\x00\x00\x01a\x00", PROTOCOL_ERROR),
    # -- packet identifiers: non-zero [MQTT-2.2.1-3]; 3.1.1 [MQTT-2.3.1-1] --------------------
    Invalid("publish_qos1_packet_id_0", 4, b"\x32\x07\x00\x03a/b\x00\x00", PROTOCOL_ERROR),
    Invalid("publish_qos2_packet_id_0", 5, b"\x34\x08\x00\x03a/b\x00\x00\x00", PROTOCOL_ERROR),
    Invalid("subscribe_packet_id_0", 4, b"\x82\x06\x00\x00\x00\x01a\x00", PROTOCOL_ERROR),
    Invalid("subscribe_packet_id_0_v5", 5, b"\x82\x07\x00\x00\x00\x00\x01a\x00", PROTOCOL_ERROR),
    Invalid("unsubscribe_packet_id_0", 5, b"\xa2\x06\x00\x00\x00\x00\x01a", PROTOCOL_ERROR),
    Invalid("unsubscribe_packet_id_0_v311", 4, b"\xa2\x05\x00\x00\x00\x01a", PROTOCOL_ERROR),
    Invalid("puback_packet_id_0", 4, b"\x40\x02\x00\x00", PROTOCOL_ERROR),
    # -- SUBSCRIBE and UNSUBSCRIBE payloads -------------------------------------------------
    # At least one topic filter: [MQTT-3.8.3-3] (3.1.1), [MQTT-3.8.3-2], [MQTT-3.10.3-2].
    Invalid("subscribe_without_topic_filters_311", 4, b"\x82\x02\x00\x01", PROTOCOL_ERROR),
    Invalid("subscribe_without_topic_filters_5", 5, b"\x82\x03\x00\x01\x00", PROTOCOL_ERROR),
    Invalid("unsubscribe_without_topic_filters_311", 4, b"\xa2\x02\x00\x01", PROTOCOL_ERROR),
    Invalid("unsubscribe_without_topic_filters_5", 5, b"\xa2\x03\x00\x01\x00", PROTOCOL_ERROR),
    # [MQTT-3.8.3-5] reserved bits 6 and 7 of the subscription options.
    Invalid("subscription_options_bit_6", 5, b"\x82\x07\x00\x01\x00\x00\x01a\x40", MALFORMED),
    Invalid("subscription_options_bit_7", 5, b"\x82\x07\x00\x01\x00\x00\x01a\x80", MALFORMED),
    # 3.8.3.1: "It is a Protocol Error to send a Retain Handling value of 3."
    Invalid("subscription_retain_handling_3", 5, b"\x82\x07\x00\x01\x00\x00\x01a\x30",
            PROTOCOL_ERROR),
    # 3.8.3.1: "It is a Protocol Error if the Maximum QoS field has the value 3."
    Invalid("subscription_qos_3_v5", 5, b"\x82\x07\x00\x01\x00\x00\x01a\x03", PROTOCOL_ERROR),
    # [MQTT-3-8.3-4] (3.1.1): reserved bits in the requested QoS byte, QoS 3.
    Invalid("subscription_qos_3_v311", 4, b"\x82\x06\x00\x01\x00\x01a\x03", MALFORMED),
    Invalid("subscription_no_local_bit_in_311", 4, b"\x82\x06\x00\x01\x00\x01a\x04", MALFORMED),
    Invalid("subscription_high_bit_in_311", 4, b"\x82\x06\x00\x01\x00\x01a\x80", MALFORMED),
    # -- CONNECT ----------------------------------------------------------------------------
    # [MQTT-3.1.2-3] the reserved connect flag is 0.
    Invalid("connect_reserved_flag", 0, b"\x10\x0c" + MQTT + b"\x04\x03\x00\x3c\x00\x00",
            MALFORMED),
    Invalid("connect_reserved_flag_v5", 0, _connect5(b"", flags=0x01), MALFORMED),
    # [MQTT-3.1.2-11] will QoS 0 without the will flag; [MQTT-3.1.2-13] same for will retain.
    Invalid("connect_will_qos_without_will_flag", 0,
            b"\x10\x0c" + MQTT + b"\x04\x0a\x00\x3c\x00\x00", MALFORMED),
    Invalid("connect_will_qos_2_without_will_flag_v5", 0, _connect5(b"", flags=0x12),
            MALFORMED),
    Invalid("connect_will_retain_without_will_flag", 0,
            b"\x10\x0c" + MQTT + b"\x04\x22\x00\x3c\x00\x00", MALFORMED),
    # [MQTT-3.1.2-12] will QoS 3 is malformed (3.1.1: [MQTT-3.1.2-14]).
    Invalid("connect_will_qos_3", 0,
            b"\x10\x11" + MQTT + b"\x04\x1e\x00\x3c\x00\x00\x00\x01t\x00\x00", MALFORMED),
    # [MQTT-3.1.2-22] (3.1.1): password flag without user name flag.
    Invalid("connect_password_without_username_311", 0,
            b"\x10\x10" + MQTT + b"\x04\x42\x00\x3c\x00\x00\x00\x02pw", MALFORMED),
    Invalid("connect_password_without_username_31", 0,
            b"\x10\x12" + MQISDP + b"\x03\x40\x00\x3c\x00\x00\x00\x02pw", MALFORMED),
    # [MQTT-3.1.2-1] wrong protocol name, [MQTT-3.1.2-2] unsupported level: 0x84, as the
    # codec documents (the broker answers with CONNACK 0x84, 3.1.1 return code 1).
    Invalid("connect_protocol_name_mqtx", 0, b"\x10\x0c\x00\x04MQTX\x04\x02\x00\x3c\x00\x00",
            UNSUPPORTED_PROTOCOL_VERSION),
    Invalid("connect_protocol_name_lowercase", 0,
            b"\x10\x0c\x00\x04mqtt\x04\x02\x00\x3c\x00\x00", UNSUPPORTED_PROTOCOL_VERSION),
    Invalid("connect_protocol_name_empty", 0, b"\x10\x08\x00\x00\x04\x02\x00\x3c\x00\x00",
            UNSUPPORTED_PROTOCOL_VERSION),
    Invalid("connect_protocol_level_6", 0, b"\x10\x0c" + MQTT + b"\x06\x02\x00\x3c\x00\x00",
            UNSUPPORTED_PROTOCOL_VERSION),
    Invalid("connect_protocol_level_0", 0, b"\x10\x0c" + MQTT + b"\x00\x02\x00\x3c\x00\x00",
            UNSUPPORTED_PROTOCOL_VERSION),
    Invalid("connect_mqtt_name_with_level_3", 0,
            b"\x10\x0c" + MQTT + b"\x03\x02\x00\x3c\x00\x00", UNSUPPORTED_PROTOCOL_VERSION),
    Invalid("connect_mqisdp_name_with_level_4", 0,
            b"\x10\x0e" + MQISDP + b"\x04\x02\x00\x3c\x00\x00", UNSUPPORTED_PROTOCOL_VERSION),
    # -- CONNACK, SUBACK --------------------------------------------------------------------
    # [MQTT-3.2.2-1] bits 7-1 of the connect acknowledge flags are reserved.
    Invalid("connack_reserved_acknowledge_flags", 4, b"\x20\x02\x02\x00", MALFORMED),
    Invalid("connack_311_return_code_6", 4, b"\x20\x02\x00\x06", MALFORMED),
    Invalid("suback_311_return_code_3", 4, b"\x90\x03\x00\x01\x03", MALFORMED),
]


def _encode_version(vector: Valid) -> int:
    packet = vector.packet
    return packet.protocol_version if isinstance(packet, Connect) else vector.version


def _name(vector: Valid | Invalid) -> str:
    return vector.name


def test_vector_names_are_unique() -> None:
    names = [v.name for v in VALID] + [v.name for v in INVALID]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("vector", VALID, ids=_name)
def test_valid_vector_decodes_to_its_packet(vector: Valid) -> None:
    framer = Framer(protocol_version=vector.version)
    packets = framer.feed(vector.raw)
    assert packets == [vector.packet]
    assert type(packets[0]) is type(vector.packet)
    assert framer.buffered == 0


@pytest.mark.parametrize("vector", VALID, ids=_name)
def test_valid_vector_decodes_the_same_with_decode(vector: Valid) -> None:
    assert decode(vector.raw, vector.version or 4) == vector.packet


@pytest.mark.parametrize("vector", [v for v in VALID if v.canonical], ids=_name)
def test_packet_encodes_to_its_vector_bytes(vector: Valid) -> None:
    assert encode(vector.packet, _encode_version(vector)) == vector.raw


@pytest.mark.parametrize("vector", [v for v in VALID if v.version == 4], ids=_name)
def test_protocol_level_3_shares_the_311_encoding(vector: Valid) -> None:
    # Levels 3 and 4 share one encoding after CONNECT (docs/architecture.md).
    assert Framer(protocol_version=3).feed(vector.raw) == [vector.packet]
    assert encode(vector.packet, 3) == encode(vector.packet, 4)


@pytest.mark.parametrize("vector", VALID, ids=_name)
def test_valid_vector_fed_byte_by_byte_comes_out_once_complete(vector: Valid) -> None:
    framer = Framer(protocol_version=vector.version)
    for i in range(len(vector.raw) - 1):
        assert framer.feed(vector.raw[i : i + 1]) == []
        assert framer.buffered == i + 1
    assert framer.feed(vector.raw[-1:]) == [vector.packet]
    assert framer.buffered == 0


@pytest.mark.parametrize("vector", VALID, ids=_name)
def test_truncated_valid_vector_waits_for_more_bytes(vector: Valid) -> None:
    framer = Framer(protocol_version=vector.version)
    assert framer.feed(vector.raw[:-1]) == []
    assert framer.buffered == len(vector.raw) - 1


@pytest.mark.parametrize("vector", VALID, ids=_name)
def test_valid_vector_twice_in_one_buffer_comes_back_twice(vector: Valid) -> None:
    framer = Framer(protocol_version=vector.version)
    second = vector.raw
    if isinstance(vector.packet, Connect):  # a second CONNECT is for the broker to refuse
        second = b"\xc0\x00"
    packets = framer.feed(vector.raw + second + b"\xe0")
    expected_second = Pingreq() if second == b"\xc0\x00" else vector.packet
    assert packets == [vector.packet, expected_second]
    assert framer.buffered == 1


@pytest.mark.parametrize("vector", INVALID, ids=_name)
def test_invalid_vector_raises_its_reason_code(vector: Invalid) -> None:
    framer = Framer(protocol_version=vector.version)
    with pytest.raises(MQTTError) as info:
        framer.feed(vector.raw)
    assert info.value.reason_code == vector.reason_code
    assert info.value.packets == []


@pytest.mark.parametrize("vector", INVALID, ids=_name)
def test_invalid_vector_keeps_the_packets_decoded_before_it(vector: Invalid) -> None:
    # PINGREQ decodes the same at every protocol version and does not change it.
    framer = Framer(protocol_version=vector.version)
    with pytest.raises(MQTTError) as info:
        framer.feed(b"\xc0\x00\xd0\x00" + vector.raw + b"\xc0\x00")
    assert info.value.reason_code == vector.reason_code
    assert info.value.packets == [Pingreq(), Pingresp()]


@pytest.mark.parametrize("vector", INVALID, ids=_name)
def test_invalid_vector_fed_byte_by_byte_raises_the_same_reason_code(vector: Invalid) -> None:
    framer = Framer(protocol_version=vector.version)
    with pytest.raises(MQTTError) as info:
        for i in range(len(vector.raw)):
            framer.feed(vector.raw[i : i + 1])
    assert info.value.reason_code == vector.reason_code


# -- variable byte integer boundaries (MQTT 5.0 1.5.5, table of sizes) ----------------------

@pytest.mark.parametrize(
    ("remaining_length", "encoded"),
    [
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16_383, b"\xff\x7f"),
        (16_384, b"\x80\x80\x01"),
        (2_097_151, b"\xff\xff\x7f"),
        (2_097_152, b"\x80\x80\x80\x01"),
    ],
)
def test_remaining_length_boundaries_encode_and_decode(
    remaining_length: int, encoded: bytes
) -> None:
    packet = Publish("a", b"p" * (remaining_length - 3))
    raw = encode(packet, 4)
    assert raw[: 1 + len(encoded)] == b"\x30" + encoded
    assert len(raw) == 1 + len(encoded) + remaining_length
    framer = Framer(protocol_version=4)
    assert framer.feed(raw[:-1]) == []
    assert framer.feed(raw[-1:]) == [packet]


def test_variable_byte_integer_longer_than_four_bytes_is_malformed() -> None:
    # 1.5.5: at most four bytes; the error comes with the fourth byte, before any fifth.
    framer = Framer(protocol_version=4)
    assert framer.feed(b"\x30\xff\xff\xff") == []
    with pytest.raises(MQTTError) as info:
        framer.feed(b"\xff")  # fourth byte with the continuation bit
    assert info.value.reason_code == MALFORMED
    with pytest.raises(MQTTError) as info:
        Framer(protocol_version=4).feed(b"\x30\xff\xff\xff\xff\x7f")
    assert info.value.reason_code == MALFORMED


# -- maximum packet size --------------------------------------------------------------------

def test_packet_above_max_packet_size_is_rejected_from_the_fixed_header_alone() -> None:
    # 5.0 3.1.2.11.4 / 4.13: a packet larger than the maximum is 0x95, known from the header.
    framer = Framer(max_packet_size=100, protocol_version=4)
    assert framer.feed(b"\x30") == []
    assert framer.feed(b"\x80") == []  # the remaining length is not complete yet
    with pytest.raises(MQTTError) as info:
        framer.feed(b"\x01")  # remaining length 128: 131 bytes in all, no body sent
    assert info.value.reason_code == PACKET_TOO_LARGE


def test_packet_of_exactly_max_packet_size_is_accepted() -> None:
    raw = encode(Publish("a/b", b"x" * 93), 4)
    assert len(raw) == 100
    framer = Framer(max_packet_size=100, protocol_version=4)
    assert framer.feed(raw) == [Publish("a/b", b"x" * 93)]


def test_max_packet_size_counts_the_fixed_header() -> None:
    raw = encode(Publish("a/b", b"x" * 94), 4)  # remaining length 99, total 101
    assert raw[1] == 99
    with pytest.raises(MQTTError) as info:
        Framer(max_packet_size=100, protocol_version=4).feed(raw[:2])
    assert info.value.reason_code == PACKET_TOO_LARGE


def test_max_packet_size_applies_to_connect() -> None:
    raw = encode(Connect("a" * 50, 5), 5)
    framer = Framer(max_packet_size=len(raw) - 1)
    # Refused once its protocol level is readable (7 bytes into the body), so that a 5.0
    # client can be told with CONNACK 0x95: the framer knows the version when it raises.
    assert framer.feed(raw[:2 + 6]) == []
    with pytest.raises(MQTTError) as info:
        framer.feed(raw[8:9])
    assert info.value.reason_code == PACKET_TOO_LARGE
    assert framer.protocol_version == 5
    assert Framer(max_packet_size=len(raw)).feed(raw) == [Connect("a" * 50, 5)]


@pytest.mark.parametrize(("version", "level"), [(5, 5), (4, 4), (3, 3)])
def test_oversized_connect_reports_its_protocol_level(version: int, level: int) -> None:
    raw = encode(Connect("a" * 50, version, "MQTT" if version > 3 else "MQIsdp"), version)
    framer = Framer(max_packet_size=20)
    with pytest.raises(MQTTError):
        framer.feed(raw)
    assert framer.protocol_version == level


def test_too_large_packet_keeps_the_packets_decoded_before_it() -> None:
    framer = Framer(max_packet_size=10, protocol_version=4)
    with pytest.raises(MQTTError) as info:
        framer.feed(b"\xc0\x00\x40\x02\x00\x07\x30\x09")
    assert info.value.reason_code == PACKET_TOO_LARGE
    assert info.value.packets == [Pingreq(), Puback(7)]


# -- MQTTError ------------------------------------------------------------------------------

def test_mqtt_error_packets_hold_only_packets_of_the_failing_feed_call() -> None:
    framer = Framer(protocol_version=4)
    assert framer.feed(b"\xc0\x00\x40\x02") == [Pingreq()]
    with pytest.raises(MQTTError) as info:
        framer.feed(b"\x00\x07\xd0\x00\x30\x05\x00\x03a/+")
    assert info.value.packets == [Puback(7), Pingresp()]
    assert info.value.reason_code == TOPIC_NAME_INVALID


def test_mqtt_error_carries_reason_code_message_and_pickles() -> None:
    error = MQTTError(0x82, "packet identifier 0", [Puback(1)])
    assert error.reason_code == 0x82
    assert str(error) == "packet identifier 0"
    assert error.packets == [Puback(1)]
    assert MQTTError(0x81, "x").packets == []
    copy = pickle.loads(pickle.dumps(MQTTError(0x95, "too large")))
    assert (copy.reason_code, str(copy), copy.packets) == (0x95, "too large", [])


# -- protocol version of the framer ---------------------------------------------------------

def test_framer_takes_its_protocol_version_from_connect() -> None:
    framer = Framer()
    assert framer.protocol_version == 0
    connect = encode(Connect("c", 5), 5)
    # The PUBACK behind the CONNECT, in the same buffer, is already decoded as 5.0.
    packets = framer.feed(connect + b"\x40\x03\x00\x07\x10")
    assert packets == [Connect("c", 5), Puback(7, 0x10)]
    assert framer.protocol_version == 5


@pytest.mark.parametrize(("version", "name"), [(3, "MQIsdp"), (4, "MQTT"), (5, "MQTT")])
def test_framer_protocol_version_follows_each_protocol_level(version: int, name: str) -> None:
    framer = Framer()
    assert framer.feed(encode(Connect("c", version, name), version)) == [
        Connect("c", version, name)
    ]
    assert framer.protocol_version == version


def test_framer_decodes_as_311_before_connect() -> None:
    # A 5.0 PUBACK with a reason code has a trailing byte in 3.1.1.
    with pytest.raises(MQTTError) as info:
        Framer().feed(b"\x40\x03\x00\x07\x10")
    assert info.value.reason_code == MALFORMED
    assert Framer().feed(b"\x40\x02\x00\x07") == [Puback(7)]


def test_framer_protocol_version_can_be_set() -> None:
    framer = Framer(protocol_version=4)
    framer.protocol_version = 5
    assert framer.feed(b"\x40\x03\x00\x07\x10") == [Puback(7, 0x10)]
