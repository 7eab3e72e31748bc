"""Clients for the listener tests: paho-mqtt over tcp, tls, websockets and unix sockets, and a
raw MQTT client over any connected socket (TLS or Unix)."""

from __future__ import annotations

import queue
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from certs import Issued
from clients import WAIT, RawClient
from hbroker_ext.codec import Framer


class SocketClient(RawClient):
    """RawClient over a socket the test connected itself."""

    def __init__(self, sock: socket.socket, version: int = 5) -> None:
        sock.settimeout(WAIT)
        self.sock = sock
        self.version = version
        self.framer = Framer(protocol_version=version)
        self.pending: list[Any] = []


def tls_context(ca: Path, cert: Issued | None = None,
                maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A client context trusting `ca`, presenting `cert` if given."""
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    if maximum is not None:
        ctx.maximum_version = maximum
    return ctx


def tls_socket(port: int, ctx: ssl.SSLContext, host: str = "127.0.0.1") -> ssl.SSLSocket:
    """A TLS connection to the broker; the handshake is done when this returns."""
    raw = socket.create_connection((host, port), timeout=WAIT)
    try:
        return ctx.wrap_socket(raw, server_hostname="localhost")
    except BaseException:
        raw.close()
        raise


def tls_refused(port: int, ctx: ssl.SSLContext) -> str:
    """Assert that the broker refuses this TLS client: the handshake fails, or (TLS 1.3, where
    the server checks the client certificate after the client finished its side) the
    connection closes without answering a CONNECT. Returns what the client saw."""
    try:
        sock = tls_socket(port, ctx)
    except (ssl.SSLError, ConnectionError) as exc:
        return f"handshake: {exc}"
    client = SocketClient(sock)
    try:
        client.send_raw(b"\x10\x0d\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x00")
        data = sock.recv(1024)
    except (ssl.SSLError, ConnectionError) as exc:
        return f"after handshake: {exc}"
    finally:
        client.close()
    assert data == b"", f"the broker accepted the TLS connection and answered {data!r}"
    return "closed without answer"


class Paho:
    """paho-mqtt 2.x on any transport; records the CONNACK reason code."""

    def __init__(self, client_id: str, port: int = 0, *, host: str = "127.0.0.1",
                 transport: str = "tcp", version: int = 5, tls: ssl.SSLContext | None = None,
                 ws_path: str = "/mqtt", username: str | None = None,
                 unix_path: str | None = None, password: str | None = None) -> None:
        protocol = {5: paho.MQTTv5, 4: paho.MQTTv311, 3: paho.MQTTv31}[version]
        self.client = c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                                      protocol=protocol, transport=transport)  # type: ignore[arg-type]
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.reason_code: Any = None
        c.on_connect = self._on_connect
        c.on_message = lambda cl, ud, msg: self.messages.put(msg)
        c.on_subscribe = lambda *args: self.subscribed.set()
        if tls is not None:
            c.tls_set_context(tls)
        if transport == "websockets":
            c.ws_set_options(path=ws_path)
        if username is not None:
            c.username_pw_set(username, password)
        if transport == "unix":
            c.connect(unix_path or "", 1883, 60)  # paho checks the port even here
        else:
            c.connect(host, port, 60)
        c.loop_start()
        assert self.connected.wait(WAIT), "no CONNACK"

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        self.reason_code = reason_code
        self.connected.set()

    @property
    def accepted(self) -> bool:
        return self.reason_code is not None and not self.reason_code.is_failure

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self.subscribed.clear()
        result, _ = self.client.subscribe(topic, qos)
        assert result == paho.MQTT_ERR_SUCCESS
        assert self.subscribed.wait(WAIT), "no SUBACK"

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos)
        info.wait_for_publish(WAIT)
        assert info.is_published(), "publish not acknowledged"

    def expect(self, timeout: float = WAIT) -> paho.MQTTMessage:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no message received") from None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def roundtrip(subscriber: Paho, publisher: Paho, topic: str, payload: bytes) -> None:
    """publisher → broker → subscriber, asserting the message arrives unchanged."""
    subscriber.subscribe(topic)
    publisher.publish(topic, payload)
    msg = subscriber.expect()
    assert (msg.topic, msg.payload) == (topic, payload)
