"""CONNECT and CONNACK (MQTT 5.0 section 3.1/3.2, 3.1.1 section 3.1/3.2), and how the broker
closes a connection after a DISCONNECT or a refusing CONNACK."""

import socket
import time
from typing import Any

import pytest
from certs import PKI
from clients import WAIT, PahoClient, RawClient
from hbroker_ext.codec import (
    ASSIGNED_CLIENT_IDENTIFIER,
    AUTHENTICATION_METHOD,
    MAXIMUM_PACKET_SIZE,
    RECEIVE_MAXIMUM,
    REQUEST_RESPONSE_INFORMATION,
    RESPONSE_INFORMATION,
    SERVER_KEEP_ALIVE,
    SESSION_EXPIRY_INTERVAL,
    TOPIC_ALIAS_MAXIMUM,
    Connect,
    Disconnect,
    Framer,
    Pingreq,
    Publish,
    Pubrel,
    Will,
    encode,
)
from listener_clients import SocketClient, tls_context, tls_socket
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri


def test_v5_connect_is_accepted_with_broker_limits_in_connack(broker, uid):
    c = RawClient(broker.host, broker.port, 5)
    connack = c.connect(uid)
    assert connack.reason_code == 0
    assert not connack.session_present
    props = connack.properties
    assert props[RECEIVE_MAXIMUM] == 20
    assert props[TOPIC_ALIAS_MAXIMUM] == 10
    assert props[MAXIMUM_PACKET_SIZE] == 1048576  # the configured maximum (default 1 MiB)


def test_v311_connect_is_accepted(broker, uid):
    c = RawClient(broker.host, broker.port, 4)
    connack = c.connect(uid)
    assert (connack.reason_code, connack.properties) == (0, None)


def test_v31_connect_with_mqisdp_is_accepted(broker, uid):
    c = RawClient(broker.host, broker.port, 3)
    assert c.connect(uid[:23]).reason_code == 0


def test_unsupported_protocol_level_gets_connack_0x01_and_close(broker):
    # [MQTT-3.1.2-2] 3.1.1 return code 0x01: unacceptable protocol version.
    c = RawClient(broker.host, broker.port, 4)
    c.send_raw(b"\x10\x0c\x00\x04MQTT\x07\x02\x00\x3c\x00\x00")
    got = c.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(2, 0x01)]


def test_first_packet_other_than_connect_closes_connection(broker):
    # [MQTT-3.1.0-1]
    c = RawClient(broker.host, broker.port, 4)
    c.send(Pingreq())
    assert c.closed_by_broker() == []


def test_second_connect_is_a_protocol_error(broker, uid):
    # [MQTT-3.1.0-2]
    c = RawClient(broker.host, broker.port, 5)
    c.connect(uid)
    c.send(Connect(uid, 5))
    got = c.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(14, 0x82)]


def test_reserved_connect_flag_closes_connection(broker):
    # [MQTT-3.1.2-3] the reserved flag must be 0.
    c = RawClient(broker.host, broker.port, 4)
    c.send_raw(b"\x10\x0c\x00\x04MQTT\x04\x03\x00\x3c\x00\x00")
    got = c.closed_by_broker()
    assert all(p.packet_type != 2 or p.reason_code != 0 for p in got)


def test_zero_length_client_id_gets_assigned_identifier_in_v5(broker):
    # [MQTT-3.1.3-6, MQTT-3.2.2-16]
    c = RawClient(broker.host, broker.port, 5)
    connack = c.connect("")
    assert connack.reason_code == 0
    assert connack.properties[ASSIGNED_CLIENT_IDENTIFIER].startswith("auto-")


def test_zero_length_client_id_with_clean_session_0_is_rejected_in_v311(broker):
    # [MQTT-3.1.3-8] CONNACK 0x02 identifier rejected, then close.
    c = RawClient(broker.host, broker.port, 4)
    c.send(Connect("", 4, clean_start=False))
    got = c.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(2, 0x02)]


def test_zero_length_client_id_is_accepted_with_clean_session_1_in_v311(broker):
    c = RawClient(broker.host, broker.port, 4)
    assert c.connect("", clean_start=True).reason_code == 0


def test_zero_length_client_id_refused_when_configured(make_broker):
    b = make_broker(sessions={"allow_zero_length_client_id": False})
    c = RawClient(b.host, b.port, 5)
    c.send(Connect("", 5))
    got = c.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(2, 0x85)]


def test_client_id_longer_than_configured_is_rejected(make_broker):
    b = make_broker(sessions={"max_client_id_length": 8})
    c = RawClient(b.host, b.port, 5)
    c.send(Connect("x" * 9, 5))
    got = c.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(2, 0x85)]
    c4 = RawClient(b.host, b.port, 4)
    c4.send(Connect("x" * 9, 4))
    got = c4.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(2, 0x02)]


def test_unknown_authentication_method_is_refused_with_0x8c(broker, uid):
    c = RawClient(broker.host, broker.port, 5)
    c.send(Connect(uid, 5, properties={AUTHENTICATION_METHOD: "SCRAM-SHA-1"}))
    got = c.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(2, 0x8C)]


def test_will_qos_above_maximum_is_refused(make_broker, uid):
    b = make_broker(limits={"max_qos": 1})
    c = RawClient(b.host, b.port, 5)
    c.send(Connect(uid, 5, will=Will("w", b"x", 2)))
    got = c.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(2, 0x9B)]


def test_will_retain_refused_when_retain_not_available(make_broker, uid):
    b = make_broker(limits={"retain_available": False})
    c = RawClient(b.host, b.port, 5)
    c.send(Connect(uid, 5, will=Will("w", b"x", 0, True)))
    got = c.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(2, 0x9A)]


def test_will_topic_with_wildcard_is_refused(broker, uid):
    c = RawClient(broker.host, broker.port, 5)
    c.send(Connect(uid, 5, will=Will("a/+", b"x")))
    got = c.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(2, 0x90)]


def test_takeover_sends_0x8e_to_old_v5_connection_and_publishes_its_will_as_session_ends(
        broker, uid):
    # [MQTT-3.1.4-3] the existing connection is closed; 5.0 tells it why. Its session has no
    # expiry: it ends with the takeover, and the will goes out.
    watcher = PahoClient(broker.host, broker.port, f"{uid}-w")
    watcher.subscribe(f"{uid}/will", 1)
    old = RawClient(broker.host, broker.port, 5)
    old.connect(uid, will=Will(f"{uid}/will", b"gone", 1))
    new = RawClient(broker.host, broker.port, 5)
    assert new.connect(uid).reason_code == 0
    got = old.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got] == [(14, 0x8E)]
    assert watcher.expect().payload == b"gone"


def test_takeover_with_clean_start_1_publishes_the_old_connections_will(broker, uid):
    # The old session had an expiry, but Clean Start 1 ends it.
    watcher = PahoClient(broker.host, broker.port, f"{uid}-w")
    watcher.subscribe(f"{uid}/will", 1)
    old = RawClient(broker.host, broker.port, 5)
    old.connect(uid, properties={SESSION_EXPIRY_INTERVAL: 60},
                will=Will(f"{uid}/will", b"gone", 1))
    new = RawClient(broker.host, broker.port, 5)
    assert not new.connect(uid, clean_start=True).session_present
    assert [p.reason_code for p in old.closed_by_broker()] == [0x8E]
    assert watcher.expect().payload == b"gone"


@pytest.mark.parametrize("version", [5, 4])
def test_takeover_of_a_persistent_session_does_not_publish_the_old_connections_will(
        broker, uid, version):
    # A client reconnecting before its half-open connection timed out takes its session over:
    # the session goes on, so no will says it went offline (as in Mosquitto).
    watcher = PahoClient(broker.host, broker.port, f"{uid}-w")
    watcher.subscribe(f"{uid}/will", 1)
    expiry = {SESSION_EXPIRY_INTERVAL: 60} if version == 5 else None
    old = RawClient(broker.host, broker.port, version)
    old.connect(uid, clean_start=False, properties=expiry,
                will=Will(f"{uid}/will", b"offline", 1))
    new = RawClient(broker.host, broker.port, version)
    assert new.connect(uid, clean_start=False, properties=expiry).session_present
    assert [p.reason_code for p in old.closed_by_broker()] == ([0x8E] if version == 5 else [])
    new.publish(f"{uid}/will", b"still online", 1)
    # The will would have been published during the takeover, before this message.
    assert watcher.expect().payload == b"still online"


def test_takeover_of_v311_connection_closes_it(broker, uid):
    old = RawClient(broker.host, broker.port, 4)
    old.connect(uid)
    new = RawClient(broker.host, broker.port, 4)
    assert new.connect(uid).reason_code == 0
    assert old.closed_by_broker() == []


def test_socket_without_connect_is_closed_after_connect_timeout(make_broker):
    b = make_broker(limits={"connect_timeout": 0.5})
    c = RawClient(b.host, b.port, 4)
    start = time.monotonic()
    assert c.closed_by_broker(timeout=5) == []
    assert time.monotonic() - start >= 0.4


def test_server_keep_alive_caps_client_keepalive(make_broker, uid):
    # [MQTT-3.2.2-21] the client must use the Server Keep Alive value.
    b = make_broker(limits={"max_keepalive": 30})
    c = RawClient(b.host, b.port, 5)
    assert c.connect(uid, keepalive=120).properties[SERVER_KEEP_ALIVE] == 30
    c0 = RawClient(b.host, b.port, 5)
    assert c0.connect(f"{uid}-0", keepalive=0).properties[SERVER_KEEP_ALIVE] == 30


def test_session_expiry_above_maximum_is_capped_in_connack(make_broker, uid):
    b = make_broker(sessions={"max_session_expiry_interval": 60})
    c = RawClient(b.host, b.port, 5)
    connack = c.connect(uid, properties={SESSION_EXPIRY_INTERVAL: 3600})
    assert connack.properties[SESSION_EXPIRY_INTERVAL] == 60


def test_request_response_information_returns_response_information(broker, uid):
    c = RawClient(broker.host, broker.port, 5)
    connack = c.connect(uid, properties={REQUEST_RESPONSE_INFORMATION: 1})
    assert connack.properties[RESPONSE_INFORMATION] == f"responses/{uid}"


def test_paho_v5_and_v311_clients_connect(broker, uid):
    for version in (5, 4):
        c = PahoClient(broker.host, broker.port, f"{uid}-{version}", version=version)
        assert not c.session_present
        c.disconnect()


def test_packet_before_connack_completion_in_same_buffer_is_handled(broker, uid):
    # One buffer with CONNECT, PUBLISH QoS 0 and DISCONNECT: every packet is handled in order.
    from hbroker_ext.codec import encode

    sub = PahoClient(broker.host, broker.port, f"{uid}-s")
    sub.subscribe(f"{uid}/t")
    c = RawClient(broker.host, broker.port, 5)
    c.send_raw(encode(Connect(uid, 5), 5) + encode(Publish(f"{uid}/t", b"batched"), 5)
               + encode(Disconnect(), 5))
    got = c.closed_by_broker()
    assert got[0].packet_type == 2
    assert sub.expect().payload == b"batched"


# -- closing after a DISCONNECT or a refusing CONNACK -----------------------------------------
#
# A client may still be writing when the broker's DISCONNECT (or refusing CONNACK) reaches it:
# the PUBRELs of its window, packets sent right after CONNECT. A broker that closes its socket
# at once answers those writes with a reset, and the client's next write fails before it has
# read the reason code (Eclipse Paho's interoperability test_flow_control2). The broker shuts
# its write side down instead and reads on: the client reads the reason code and the end of
# the stream, and its writes are not reset.

# Writes after the broker's answer: a broker that closed its socket answers the first with a
# reset, and the ones after it fail.
WRITES_AFTER = 1000


def write_on(sock: socket.socket, packet: bytes, count: int = WRITES_AFTER) -> OSError | None:
    """Write `packet` `count` times; the error if the broker reset the connection, else None."""
    try:
        for _ in range(count):
            sock.sendall(packet)
    except OSError as exc:
        return exc
    return None


def wait_for_log(broker: Any, text: str) -> None:
    deadline = time.monotonic() + WAIT
    while text not in broker.log():
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{broker.log()}"
        time.sleep(0.05)


def exceed_receive_maximum(c: RawClient, uid: str) -> list[Any]:
    """Receive Maximum + 1 QoS 2 PUBLISHes [MQTT-3.3.4-9]; the packets up to the broker's end
    of the stream, which follows its DISCONNECT 0x93."""
    assert c.connect(uid).properties[RECEIVE_MAXIMUM] == 2
    c.send_raw(b"".join(encode(Publish(f"{uid}/t", b"x", 2, False, False, pid), 5)
                        for pid in (1, 2, 3)))
    got = c.closed_by_broker()
    assert [(p.packet_type, p.reason_code) for p in got][-1] == (14, 0x93)
    return got


def test_client_still_writing_after_disconnect_0x93_is_not_reset(start, uid):
    b = start({"type": "tcp"}, limits={"max_inflight": 2})
    c = RawClient(b.host, b.port, 5)
    exceed_receive_maximum(c, uid)
    error = write_on(c.sock, encode(Pubrel(1), 5))
    assert error is None, f"the broker reset the connection after its DISCONNECT: {error!r}"


def test_client_still_writing_after_a_refusing_connack_is_not_reset(start, uid):
    # [MQTT-3.2.2-7] (3.1.1: [MQTT-3.2.2-5]) the connection closes after a refusing CONNACK.
    b = start({"type": "tcp"}, sessions={"max_client_id_length": 8})
    for version, code in ((5, 0x85), (4, 0x02)):
        c = RawClient(b.host, b.port, version)
        c.send(Connect("x" * 9, version))
        got = c.closed_by_broker()
        assert [(p.packet_type, p.reason_code) for p in got] == [(2, code)]
        error = write_on(c.sock, encode(Pingreq(), version))
        assert error is None, f"{version}: reset after the refusing CONNACK: {error!r}"
        c.close()


def test_tls_client_still_writing_after_disconnect_is_not_reset(start, pki: PKI, uid):
    # TLS: close_notify after the DISCONNECT; the broker reads on until the client's.
    b = start({"type": "tls", "certfile": str(pki.server.cert), "keyfile": str(pki.server.key)},
              limits={"max_inflight": 2})
    c = SocketClient(tls_socket(b.port, tls_context(pki.ca.cert)), 5)
    exceed_receive_maximum(c, uid)
    error = write_on(c.sock, encode(Pubrel(1), 5))
    assert error is None, f"the broker reset the TLS connection after DISCONNECT: {error!r}"


class FrameWriter:
    """MQTT over a WebSocket, written frame by frame: it can go on writing after the broker's
    Close frame, as a client that has not read it yet does (a WebSocket library would stop).
    What the broker sends is parsed by websockets' sans-I/O client."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.ws = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/mqtt"),
                                 subprotocols=["mqtt"])  # type: ignore[list-item]
        self.ws.send_request(self.ws.connect())
        for chunk in self.ws.data_to_send():
            self.sock.sendall(chunk)
        self.framer = Framer(protocol_version=5)
        self.packets: list[Any] = []
        self.closed = False  # the broker's Close frame arrived
        while self.ws.handshake_exc is None and self.ws.state.name == "CONNECTING":
            self._read()
        assert self.ws.handshake_exc is None, self.ws.handshake_exc

    def _read(self) -> None:
        data = self.sock.recv(65536)
        if data:
            self.ws.receive_data(data)
        else:
            self.ws.receive_eof()
        for event in self.ws.events_received():
            if isinstance(event, Frame):
                if event.opcode is Opcode.BINARY:
                    self.packets += self.framer.feed(bytes(event.data))
                elif event.opcode is Opcode.CLOSE:
                    self.closed = True
        assert data or self.closed, "TCP closed without a WebSocket Close frame"

    def send(self, packet: Any) -> None:
        self.sock.sendall(self.frame(packet))

    @staticmethod
    def frame(packet: Any) -> bytes:
        return Frame(Opcode.BINARY, encode(packet, 5)).serialize(mask=True)

    def until_close_frame(self) -> list[Any]:
        while not self.closed:
            self._read()
        return self.packets

    def close_handshake(self) -> bytes:
        """Answer the broker's Close frame; what arrives until the broker closes TCP."""
        for chunk in self.ws.data_to_send():
            if chunk:
                self.sock.sendall(chunk)
        rest = b""
        while data := self.sock.recv(65536):
            rest += data
        return rest


def test_websocket_client_still_writing_after_disconnect_is_not_reset(start, uid):
    # WebSocket: a Close frame after the DISCONNECT; the broker reads on until the client's
    # Close frame, then closes TCP [RFC 6455 section 7.1.1].
    b = start({"type": "ws"}, limits={"max_inflight": 2})
    c = FrameWriter(b.port)
    c.send(Connect(uid, 5))
    c.send(Publish(f"{uid}/t", b"x", 2, False, False, 1))
    c.send(Publish(f"{uid}/t", b"x", 2, False, False, 2))
    c.send(Publish(f"{uid}/t", b"x", 2, False, False, 3))
    got = c.until_close_frame()
    assert [(p.packet_type, p.reason_code) for p in got][-1] == (14, 0x93)
    error = write_on(c.sock, c.frame(Pubrel(1)))
    assert error is None, f"the broker reset the WebSocket after its DISCONNECT: {error!r}"
    assert c.close_handshake() == b""  # then TCP ends, cleanly


def test_packets_written_after_a_server_disconnect_are_not_handled(start, uid):
    b = start({"type": "tcp"}, limits={"max_inflight": 2})
    watcher = PahoClient(b.host, b.port, f"{uid}-w")
    watcher.subscribe(f"{uid}/after", 0)
    c = RawClient(b.host, b.port, 5)
    exceed_receive_maximum(c, uid)
    assert write_on(c.sock, encode(Publish(f"{uid}/after", b"late"), 5), 100) is None
    c.close()
    marker = PahoClient(b.host, b.port, f"{uid}-m")
    marker.publish(f"{uid}/after", b"marker", 1)
    assert watcher.expect().payload == b"marker"


def test_connection_is_closed_after_disconnect_though_the_client_keeps_it_open(start, uid):
    # The graceful close is bounded: the broker's sweep ends it.
    b = start({"type": "tcp"}, limits={"max_inflight": 2})
    c = RawClient(b.host, b.port, 5)
    exceed_receive_maximum(c, uid)
    wait_for_log(b, f"connection closed client_id={uid} ")
    assert write_on(c.sock, encode(Pingreq(), 5)) is not None  # the socket is gone


# -- 3.1.1 refusals that no return code says ---------------------------------------------------


@pytest.mark.parametrize("version", [4, 3])
def test_v311_refusal_without_a_return_code_closes_without_connack(make_broker, uid, version):
    # [MQTT-3.2.2-6] none of the six return codes applies: no CONNACK. 0x03 "Server
    # unavailable" would tell the client to try again later.
    b = make_broker(limits={"max_qos": 1, "retain_available": False})
    client_id = uid[-20:]
    for will in (Will("", b"x"),  # [MQTT-4.7.3-1] an empty will topic
                 Will("a/+", b"x"),  # a topic name: no wildcards [MQTT-4.7.1-1]
                 Will("w", b"x", 2),  # above the broker's maximum QoS (5.0: 0x9B)
                 Will("w", b"x", 0, True)):  # retain not available (5.0: 0x9A)
        c = RawClient(b.host, b.port, version)
        c.send(Connect(client_id, version, "MQTT" if version == 4 else "MQIsdp", will=will))
        assert c.closed_by_broker() == [], will
    assert "closed without CONNACK" in b.log()


# -- a CONNACK within the client's Maximum Packet Size -----------------------------------------


def read_to_end(sock: socket.socket) -> bytes:
    """Everything the broker sends until it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_connack_leaves_out_response_information_beyond_client_maximum_packet_size(broker,
                                                                                     uid):
    # [MQTT-3.1.2-24] nothing larger than the client's Maximum Packet Size is sent; Response
    # Information is the server's to give (it MAY, 3.1.2.11.6), the limits are not.
    c = RawClient(broker.host, broker.port, 5)
    c.send(Connect(uid, 5, properties={MAXIMUM_PACKET_SIZE: 40,
                                       REQUEST_RESPONSE_INFORMATION: 1}))
    data = c.sock.recv(65536)
    assert data[0] == 0x20 and len(data) == 2 + data[1] <= 40, data
    connack = Framer(protocol_version=5).feed(data)[0]
    assert connack.reason_code == 0
    assert RESPONSE_INFORMATION not in connack.properties
    assert connack.properties[RECEIVE_MAXIMUM] == 20
    roomy = RawClient(broker.host, broker.port, 5)
    connack = roomy.connect(f"{uid}-r", properties={MAXIMUM_PACKET_SIZE: 200,
                                                    REQUEST_RESPONSE_INFORMATION: 1})
    assert connack.properties[RESPONSE_INFORMATION] == f"responses/{uid}-r"


def test_connect_is_refused_when_no_connack_fits_client_maximum_packet_size(broker, uid):
    # The broker's limits (16 bytes of CONNACK here) do not fit in 10 bytes: a bare CONNACK
    # 0x83 (implementation specific error: "valid but not accepted by this Server") does;
    # below its 5 bytes no CONNACK at all.
    c = RawClient(broker.host, broker.port, 5)
    c.send(Connect(uid, 5, properties={MAXIMUM_PACKET_SIZE: 10}))
    data = read_to_end(c.sock)
    assert len(data) <= 10
    assert [(p.packet_type, p.reason_code, p.properties)
            for p in Framer(protocol_version=5).feed(data)] == [(2, 0x83, None)]
    tiny = RawClient(broker.host, broker.port, 5)
    tiny.send(Connect(f"{uid}-4", 5, properties={MAXIMUM_PACKET_SIZE: 4}))
    assert read_to_end(tiny.sock) == b""
