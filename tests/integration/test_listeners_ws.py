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
