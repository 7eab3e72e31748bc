"""`ws` and `wss` listeners: MQTT over WebSocket (subprotocol `mqtt`, binary frames)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from broker_process import BrokerProcess
from certs import PKI
from clients import WAIT
from hbroker_ext.codec import Connect, Framer, Pingreq, Publish, Subscribe, Subscription, encode
from listener_clients import Paho, roundtrip, tls_context
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus
from websockets.sync.client import ClientConnection, connect


def ws_connect(broker: BrokerProcess, path: str = "/mqtt") -> ClientConnection:
    return connect(f"ws://127.0.0.1:{broker.port}{path}", subprotocols=["mqtt"],
                   open_timeout=WAIT)


def receive_packets(ws: ClientConnection, count: int, version: int = 5) -> list[Any]:
    """`count` MQTT packets from binary messages, whatever the message boundaries."""
    framer = Framer(protocol_version=version)
    packets: list[Any] = []
    while len(packets) < count:
        message = ws.recv(timeout=WAIT)
        assert isinstance(message, bytes), f"text frame from the broker: {message!r}"
        packets += framer.feed(message)
    return packets


def test_paho_over_websocket(start: Any) -> None:
    broker = start({"type": "ws"})
    sub = Paho("ws-sub", broker.port, transport="websockets")
    pub = Paho("ws-pub", broker.port, transport="websockets", version=4)
    assert sub.accepted and pub.accepted
    roundtrip(sub, pub, "ws/paho", b"over websocket")
    sub.close()
    pub.close()


def test_paho_over_secure_websocket_with_client_certificate(start: Any, pki: PKI) -> None:
    broker = start({"type": "wss", "certfile": str(pki.server.cert),
                    "keyfile": str(pki.server.key), "cafile": str(pki.ca.cert),
                    "require_certificate": True, "use_identity_as_username": True})
    ctx = tls_context(pki.ca.cert, pki.client)
    sub = Paho("wss-sub", broker.port, transport="websockets", tls=ctx)
    pub = Paho("wss-pub", broker.port, transport="websockets", tls=ctx)
    assert sub.accepted and pub.accepted
    roundtrip(sub, pub, "wss/paho", b"over secure websocket")
    assert "client connected client_id=wss-sub" in broker.log()
    assert " username=alice " in next(line for line in broker.log().splitlines()
                                      if "client connected client_id=wss-sub" in line)
    sub.close()
    pub.close()


def test_configured_path_serves_mqtt_and_other_paths_get_404(start: Any) -> None:
    broker = start({"type": "ws", "path": "/custom/mqtt"})
    client = Paho("ws-custom", broker.port, transport="websockets", ws_path="/custom/mqtt")
    assert client.accepted
    client.close()
    with pytest.raises(InvalidStatus) as info:
        ws_connect(broker, "/mqtt")
    assert info.value.response.status_code == 404


def test_the_broker_selects_the_mqtt_subprotocol(start: Any) -> None:
    broker = start({"type": "ws"})
    with ws_connect(broker) as ws:
        assert ws.subprotocol == "mqtt"


def test_one_packet_may_span_messages_and_one_message_may_hold_several_packets(
        start: Any) -> None:
    broker = start({"type": "ws"})
    with ws_connect(broker) as ws:
        connect_packet = encode(Connect("ws-frames", 5, "MQTT", True, 60), 5)
        # CONNECT in three binary messages, the last one fragmented into two frames.
        ws.send(connect_packet[:3])
        ws.send(connect_packet[3:7])
        ws.send([connect_packet[7:10], connect_packet[10:]])
        connack, = receive_packets(ws, 1)
        assert (connack.packet_type, connack.reason_code) == (2, 0)
        # SUBSCRIBE, PUBLISH and two PINGREQs in one message.
        ws.send(encode(Subscribe(1, [Subscription("ws/frames", 0)]), 5)
                + encode(Publish("ws/frames", b"to myself", 0, False, False, 0), 5)
                + encode(Pingreq(), 5) + encode(Pingreq(), 5))
        packets = receive_packets(ws, 4)
        # (PINGRESP may overtake the SUBACK: only PUBLISHes are ordered.)
        assert sorted(p.packet_type for p in packets) == [3, 9, 13, 13]
        assert next(p for p in packets if p.packet_type == 3).payload == b"to myself"


def test_text_frame_closes_the_connection(start: Any) -> None:
    broker = start({"type": "ws"})
    with ws_connect(broker) as ws:
        ws.send("not binary")
        with pytest.raises(ConnectionClosedError) as info:
            ws.recv(timeout=WAIT)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1007
    # The listener goes on serving others.
    other = Paho("after-text", broker.port, transport="websockets")
    assert other.accepted
    other.close()


def test_malformed_mqtt_over_websocket_closes_only_that_connection(start: Any) -> None:
    broker = start({"type": "ws"})
    bystander = Paho("ws-bystander", broker.port, transport="websockets")
    with ws_connect(broker) as ws:
        ws.send(b"\xf0\x00")  # reserved packet type 15 before CONNECT
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=WAIT)
    roundtrip(bystander, bystander, "ws/bystander", b"still served")
    bystander.close()


def test_http_garbage_gets_an_http_error_and_closes_only_that_socket(start: Any) -> None:
    broker = start({"type": "ws"})
    bystander = Paho("http-bystander", broker.port, transport="websockets")
    for request in (b"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n",  # no WebSocket upgrade
                    b"NOT HTTP AT ALL\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", broker.port), timeout=WAIT) as sock:
            sock.sendall(request)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer
    roundtrip(bystander, bystander, "ws/http-bystander", b"still served")
    bystander.close()


def test_plain_mqtt_client_on_a_websocket_listener_is_closed_after_the_connect_timeout(
        tmp_path: Path) -> None:
    workdir = tmp_path / "broker"
    workdir.mkdir()
    broker = BrokerProcess(workdir, {"storage": {"backend": "memory"},
                                     "limits": {"connect_timeout": 0.5}},
                           listeners=[{"type": "ws"}])
    try:
        with socket.create_connection(("127.0.0.1", broker.port), timeout=WAIT) as sock:
            # An MQTT CONNECT is not an HTTP request line: the upgrade never completes.
            sock.sendall(b"\x10\x0d\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x00")
            assert sock.recv(65536) == b""  # closed by the broker, nothing sent
    finally:
        assert broker.stop() == 0, broker.log()


# -- Origin -------------------------------------------------------------------------------


def upgrade_status(broker: BrokerProcess, *origins: str, host: str | None = None) -> int:
    """The HTTP status of an upgrade request carrying these Origin headers (none: a client
    that is not a browser)."""
    lines = ["GET /mqtt HTTP/1.1", f"Host: {host or f'127.0.0.1:{broker.port}'}",
             "Upgrade: websocket", "Connection: Upgrade",
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13",
             "Sec-WebSocket-Protocol: mqtt", *(f"Origin: {o}" for o in origins)]
    with socket.create_connection(("127.0.0.1", broker.port), timeout=WAIT) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = b""
        while b"\r\n" not in answer and (chunk := sock.recv(65536)):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def test_an_upgrade_from_another_origin_is_refused_with_403(start: Any) -> None:
    broker = start({"type": "ws", "name": "web"})
    assert upgrade_status(broker, "http://evil.example:8000") == 403
    line = next(line for line in broker.log().splitlines()
                if "websocket: origin not allowed" in line)
    assert "origin=http://evil.example:8000 " in line and "listener=web" in line, line
    assert upgrade_status(broker, "null") == 403  # a sandboxed page or a local file
    assert upgrade_status(broker, f"http://127.0.0.1:{broker.port + 1}") == 403
    # The listener's own origin, and clients that are not browsers (no Origin at all).
    assert upgrade_status(broker, f"http://127.0.0.1:{broker.port}") == 101
    assert upgrade_status(broker) == 101
    # paho sends its own origin: served.
    client = Paho("ws-own-origin", broker.port, transport="websockets")
    assert client.accepted
    client.close()


def test_allowed_origins_admits_the_origins_it_names(start: Any) -> None:
    broker = start({"type": "ws", "allowed_origins": ["https://app.example.com",
                                                      "http://127.0.0.1:8080"]})
    assert upgrade_status(broker, "https://app.example.com") == 101
    assert upgrade_status(broker, "https://APP.example.com:443") == 101  # the same origin
    assert upgrade_status(broker, "http://127.0.0.1:8080") == 101
    assert upgrade_status(broker, "http://app.example.com") == 403  # another scheme
    assert upgrade_status(broker, "https://other.example") == 403
    assert upgrade_status(broker, "https://app.example.com", "https://other.example") == 403
    anyone = start({"type": "ws", "allowed_origins": ["*"]})
    assert upgrade_status(anyone, "https://other.example") == 101
    with ws_connect(anyone) as ws:
        assert ws.subprotocol == "mqtt"


# -- before the CONNACK -------------------------------------------------------------------


def test_websocket_message_before_the_connack_is_limited_like_the_connect(start: Any) -> None:
    broker = start({"type": "ws"})
    with ws_connect(broker) as ws:
        # 20 kB in one message before any CONNACK: over limits.max_connect_packet_size.
        ws.send(encode(Connect("ws-big", 5, "MQTT", True, 60), 5) + b"\xc0\x00" * 10_000)
        with pytest.raises(ConnectionClosedError) as info:
            ws.recv(timeout=WAIT)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009  # too big
    # Once connected, messages up to max_packet_size.
    with ws_connect(broker) as ws:
        ws.send(encode(Connect("ws-large-after", 5, "MQTT", True, 60), 5))
        connack, = receive_packets(ws, 1)
        assert connack.reason_code == 0
        ws.send(encode(Subscribe(1, [Subscription("ws/large", 0)]), 5))
        assert receive_packets(ws, 1)[0].packet_type == 9
        payload = b"p" * 100_000
        ws.send(encode(Publish("ws/large", payload, 0, False, False, 0), 5))
        assert receive_packets(ws, 1)[0].payload == payload


def test_an_upgrade_request_over_16_kib_closes_that_socket(start: Any) -> None:
    broker = start({"type": "ws"})
    bystander = Paho("upgrade-bystander", broker.port, transport="websockets")
    with socket.create_connection(("127.0.0.1", broker.port), timeout=WAIT) as sock:
        sock.sendall(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n"
                     + b"".join(b"X-Filler-%d: %s\r\n" % (i, b"f" * 4000) for i in range(5)))
        try:
            answer = sock.recv(65536)
        except ConnectionResetError:  # closed with the rest of the request unread
            answer = b""
        assert answer == b""  # closed, the request never completed
    assert "websocket: upgrade request over 16384 bytes, closing" in broker.log()
    roundtrip(bystander, bystander, "ws/upgrade-bystander", b"still served")
    bystander.close()
