"""Clients for the integration tests: paho-mqtt 2.x, and a raw-socket client for exact packets.

The raw client encodes with hbroker_ext.codec; what it checks is the broker's behaviour on the
wire (which packets, which reason codes, whether the socket closes).
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from typing import Any

import paho.mqtt.client as paho
from hbroker_ext.codec import (
    Connect,
    Framer,
    MQTTError,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Subscribe,
    Subscription,
    encode,
)
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

WAIT = 5.0  # seconds for something that must happen
QUIET = 0.7  # seconds to wait when proving that something does not happen


class RawClient:
    """A socket speaking MQTT packet by packet."""

    def __init__(self, host: str, port: int, version: int = 5) -> None:
        self.sock = socket.create_connection((host, port), timeout=WAIT)
        self.version = version
        self.framer = Framer(protocol_version=version)
        self.pending: list[Any] = []

    def send(self, packet: Any) -> None:
        self.sock.sendall(encode(packet, self.version))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def connect(self, client_id: str, clean_start: bool = True, keepalive: int = 60,
                properties: dict | None = None, will: Any = None, timeout: float = WAIT,
                **kw: Any) -> Any:
        self.send(Connect(client_id, self.version, "MQTT" if self.version > 3 else "MQIsdp",
                          clean_start, keepalive, will=will, properties=properties, **kw))
        connack = self.recv(timeout)
        assert connack.packet_type == 2, connack
        return connack

    def recv(self, timeout: float = WAIT) -> Any:
        """The next packet; AssertionError if none comes or the socket closes."""
        packet = self.recv_or_none(timeout)
        assert packet is not None, "no packet received"
        return packet

    def recv_or_none(self, timeout: float = QUIET) -> Any:
        deadline = time.monotonic() + timeout
        while not self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return None
            except ConnectionResetError:
                raise AssertionError("connection reset") from None
            if not data:
                raise AssertionError("connection closed by the broker")
            self.pending.extend(self.framer.feed(data))
        return self.pending.pop(0)

    def recv_type(self, packet_type: int, timeout: float = WAIT) -> Any:
        """The next packet of a type, skipping others (e.g. PUBLISH before a SUBACK)."""
        deadline = time.monotonic() + timeout
        while True:
            packet = self.recv(max(0.01, deadline - time.monotonic()))
            if packet.packet_type == packet_type:
                return packet

    def closed_by_broker(self, timeout: float = WAIT) -> list[Any]:
        """Wait until the broker closes the socket; returns the packets received before."""
        got = list(self.pending)
        self.pending.clear()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                return got
            if not data:
                return got
            try:
                got.extend(self.framer.feed(data))
            except MQTTError:
                pass
        raise AssertionError(f"the broker did not close the connection; got {got}")

    def subscribe(self, topic_filter: str, qos: int = 0, packet_id: int = 1,
                  properties: dict | None = None, **options: Any) -> list[int]:
        self.send(Subscribe(packet_id, [Subscription(topic_filter, qos, **options)],
                            properties))
        suback = self.recv_type(9)
        assert suback.packet_id == packet_id
        return suback.reason_codes

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                packet_id: int = 1, properties: dict | None = None) -> Any:
        """Publish and complete the QoS flow as a sender; returns the final ack (or None)."""
        self.send(Publish(topic, payload, qos, retain, False, packet_id if qos else 0,
                          properties))
        if qos == 1:
            return self.recv_type(4)
        if qos == 2:
            rec = self.recv_type(5)
            if rec.reason_code >= 0x80:
                return rec
            self.send(Pubrel(packet_id))
            return self.recv_type(7)
        return None

    def ack(self, publish: Any) -> None:
        """Acknowledge a received PUBLISH as a receiver (QoS 1: PUBACK, QoS 2: full flow)."""
        if publish.qos == 1:
            self.send(Puback(publish.packet_id))
        elif publish.qos == 2:
            self.send(Pubrec(publish.packet_id))
            rel = self.recv_type(6)
            assert rel.packet_id == publish.packet_id
            self.send(Pubcomp(publish.packet_id))

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class PahoClient:
    """A paho-mqtt 2.x client on its own network thread; waits on events, not sleeps."""

    def __init__(self, host: str, port: int, client_id: str, version: int = 5,
                 clean: bool = True, session_expiry: int | None = None,
                 will: tuple | None = None, keepalive: int = 60,
                 connect_properties: Properties | None = None, username: str | None = None,
                 password: str | None = None, max_inflight: int | None = None) -> None:
        """`max_inflight`: paho's window of unfinished outgoing QoS 1/2 messages (its
        default, 20, when None)."""
        protocol = {5: paho.MQTTv5, 4: paho.MQTTv311, 3: paho.MQTTv31}[version]
        kwargs: dict[str, Any] = {"client_id": client_id, "protocol": protocol}
        if version != 5:
            kwargs["clean_session"] = clean
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, **kwargs)
        self.version = version
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connack: tuple[Any, Any] | None = None
        self.disconnect_reason: Any = None
        self.subacks: dict[int, list[Any]] = {}
        self.acks: set[int] = set()  # completed publishes (acknowledged or refused)
        self.ack_codes: dict[int, int] = {}  # their reason codes (>= 0x80: refused)
        self._cond = threading.Condition()
        c = self.client
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = lambda cl, ud, msg: self.messages.put(msg)
        c.on_subscribe = self._on_subscribe
        c.on_publish = self._on_publish
        if username is not None:
            c.username_pw_set(username, password)
        if will is not None:
            topic, payload, qos, retain, *rest = will
            c.will_set(topic, payload, qos, retain, properties=rest[0] if rest else None)
        if max_inflight is not None:
            c.max_inflight_messages_set(max_inflight)
        props = connect_properties
        if version == 5 and session_expiry is not None:
            props = props or Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = session_expiry
        c.connect(host, port, keepalive,
                  clean_start=clean if version == 5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
                  properties=props)
        c.loop_start()
        assert self.connected.wait(WAIT), "no CONNACK"

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connack = (flags, reason_code, properties)
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.disconnect_reason = reason_code
        self.disconnected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        with self._cond:
            self.subacks[mid] = reason_codes
            self._cond.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._cond:
            self.ack_codes[mid] = getattr(reason_code, "value", reason_code)
            self.acks.add(mid)
            self._cond.notify_all()

    @property
    def session_present(self) -> bool:
        assert self.connack is not None
        return bool(self.connack[0].session_present)

    def subscribe(self, topic: str, qos: int = 0, **options: Any) -> list[Any]:
        if self.version == 5:
            from paho.mqtt.subscribeoptions import SubscribeOptions

            props = options.pop("properties", None)
            result, mid = self.client.subscribe(topic, options=SubscribeOptions(qos=qos,
                                                **options), properties=props)
        else:
            result, mid = self.client.subscribe(topic, qos)
        assert result == paho.MQTT_ERR_SUCCESS
        with self._cond:
            assert self._cond.wait_for(lambda: mid in self.subacks, WAIT), "no SUBACK"
            return self.subacks[mid]

    def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False,
                properties: Properties | None = None, wait: bool = True) -> int:
        info = self.client.publish(topic, payload, qos, retain, properties=properties)
        if wait and qos:
            with self._cond:
                assert self._cond.wait_for(lambda: info.mid in self.acks, WAIT), \
                    f"publish {info.mid} not acknowledged"
        return info.mid

    def wait_acked(self, mids: set[int], timeout: float = WAIT) -> bool:
        """Whether every publish in `mids` is acknowledged (completed) within `timeout`."""
        with self._cond:
            return self._cond.wait_for(lambda: mids <= self.acks, timeout)

    def expect(self, timeout: float = WAIT) -> paho.MQTTMessage:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no message received") from None

    def expect_none(self, timeout: float = QUIET) -> None:
        try:
            msg = self.messages.get(timeout=timeout)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected message on {msg.topic}: {msg.payload!r}")

    def disconnect(self, reason_code: int = 0) -> None:
        if self.version == 5 and reason_code:
            from paho.mqtt.reasoncodes import ReasonCode

            self.client.disconnect(ReasonCode(PacketTypes.DISCONNECT, identifier=reason_code))
        else:
            self.client.disconnect()
        self.disconnected.wait(WAIT)
        self.client.loop_stop()

    def drop(self) -> None:
        """Vanish without DISCONNECT, as a device losing power does."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()
