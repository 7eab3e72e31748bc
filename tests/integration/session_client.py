"""An MQTT client that keeps its session across broker restarts, as a careful device would.

It speaks through a raw socket (packets encoded by hbroker_ext.codec) and keeps, across
reconnections, what MQTT says a client keeps (section 4.1): its outgoing QoS 1/2 messages not
yet completed, and the packet ids of incoming QoS 2 messages awaiting PUBREL. Incoming QoS 2
messages reach the "application" (`received`) once, when their PUBLISH first arrives (method A
of section 4.3.3), so a duplicate delivery by the broker shows up as a duplicate in `received`.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from hbroker_ext.codec import (
    DISCONNECT,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SESSION_EXPIRY_INTERVAL,
    SUBACK,
    Connect,
    Disconnect,
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

WAIT = 10.0


class SessionClient:
    def __init__(self, host: str, port: int, client_id: str, version: int = 5,
                 session_expiry: int = 3600) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self.version = version
        self.session_expiry = session_expiry
        self.lock = threading.Condition()
        self.send_lock = threading.Lock()  # the reader and the publisher both write
        self.sock: socket.socket | None = None
        self.connected = False
        self.session_present = False
        self.next_pid = 1
        # outgoing: packet id -> [publish, "published" | "released"]
        self.outgoing: dict[int, list[Any]] = {}
        self.acked: list[bytes] = []  # payloads PUBACKed (QoS 1) or PUBRECed (QoS 2)
        self.refused: list[tuple[bytes, int]] = []  # (payload, reason code >= 0x80)
        self.completed = 0
        self.incoming_qos2: set[int] = set()
        self.received: list[Any] = []  # PUBLISH packets delivered to the application
        self.last_received = time.monotonic()
        self.suback: Any = None
        self.disconnect_packet: Any = None
        self._reader: threading.Thread | None = None

    # -- connection ----------------------------------------------------------------------

    def connect(self, clean_start: bool) -> bool:
        """Connect (again); on a resumed session, re-send what is unfinished [MQTT-4.4.0-1].
        Returns the session present flag."""
        sock = socket.create_connection((self.host, self.port), timeout=WAIT)
        framer = Framer(protocol_version=self.version)
        props = {SESSION_EXPIRY_INTERVAL: self.session_expiry} if self.version == 5 else None
        sock.sendall(encode(Connect(self.client_id, self.version, "MQTT", clean_start, 60,
                                    properties=props), self.version))
        pending: list[Any] = []
        while not pending:
            data = sock.recv(65536)
            assert data, "connection closed before CONNACK"
            pending.extend(framer.feed(data))
        connack = pending.pop(0)
        assert connack.packet_type == 2 and connack.reason_code == 0, connack
        with self.lock:
            if clean_start:
                self.outgoing.clear()
                self.incoming_qos2.clear()
            self.sock = sock
            self.connected = True
            self.last_received = time.monotonic()  # quiet is measured from here
            self.session_present = connack.session_present
            resend = []
            for pid in sorted(self.outgoing):
                publish, stage = self.outgoing[pid]
                if stage == "released":
                    resend.append(encode(Pubrel(pid), self.version))
                else:
                    resend.append(encode(Publish(publish.topic, publish.payload, publish.qos,
                                                 False, True, pid), self.version))
            if resend:
                with self.send_lock:
                    sock.sendall(b"".join(resend))
        # Blocking reads from here on, set before the reader starts: a test may close the
        # socket right after connecting, and the reader must find a closed socket in recv.
        sock.settimeout(None)
        self._reader = threading.Thread(target=self._read, args=(sock, framer, pending),
                                        daemon=True)
        self._reader.start()
        return connack.session_present

    def _send(self, packet: Any) -> None:
        sock = self.sock
        if sock is None or not self.connected:
            return
        try:
            with self.send_lock:
                sock.sendall(encode(packet, self.version))
        except OSError:
            self._lost()

    def _lost(self) -> None:
        with self.lock:
            self.connected = False
            self.lock.notify_all()

    def _read(self, sock: socket.socket, framer: Framer, pending: list[Any]) -> None:
        packets = pending
        while True:
            for packet in packets:
                self._handle(packet)
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            try:
                packets = framer.feed(data)
            except MQTTError:
                break
        if self.sock is sock:
            self._lost()

    def _handle(self, p: Any) -> None:
        t = p.packet_type
        with self.lock:
            if t == PUBLISH:
                self.last_received = time.monotonic()
                if p.qos == 2:
                    if p.packet_id not in self.incoming_qos2:
                        self.incoming_qos2.add(p.packet_id)
                        self.received.append(p)
                    self._send(Pubrec(p.packet_id))
                else:
                    self.received.append(p)
                    if p.qos == 1:
                        self._send(Puback(p.packet_id))
            elif t == PUBREL:
                self.incoming_qos2.discard(p.packet_id)
                self._send(Pubcomp(p.packet_id))
            elif t == PUBACK:
                entry = self.outgoing.pop(p.packet_id, None)
                if entry is not None:
                    if p.reason_code >= 0x80:
                        self.refused.append((entry[0].payload, p.reason_code))
                    else:
                        self.acked.append(entry[0].payload)
                        self.completed += 1
            elif t == PUBREC:
                entry = self.outgoing.get(p.packet_id)
                if entry is not None and entry[1] == "published":
                    if p.reason_code >= 0x80:
                        del self.outgoing[p.packet_id]
                        self.refused.append((entry[0].payload, p.reason_code))
                    else:
                        entry[1] = "released"
                        self.acked.append(entry[0].payload)
                if entry is not None and p.reason_code < 0x80:
                    self._send(Pubrel(p.packet_id))
            elif t == PUBCOMP:
                if self.outgoing.pop(p.packet_id, None) is not None:
                    self.completed += 1
            elif t == SUBACK:
                self.suback = p
            elif t == DISCONNECT:
                self.disconnect_packet = p
            self.lock.notify_all()

    # -- actions -----------------------------------------------------------------------------

    def subscribe(self, topic_filter: str, qos: int) -> None:
        with self.lock:
            self.suback = None
        self._send(Subscribe(1, [Subscription(topic_filter, qos)]))
        with self.lock:
            assert self.lock.wait_for(lambda: self.suback is not None, WAIT), "no SUBACK"
            assert self.suback.reason_codes == [qos], self.suback

    def publish_many(self, topic: str, payloads: list[bytes], qos: int, window: int) -> int:
        """Publish with at most `window` unfinished; stops when the connection is lost.
        Returns how many PUBLISH packets were sent."""
        sent = 0
        for payload in payloads:
            with self.lock:
                if not self.lock.wait_for(
                        lambda: not self.connected or len(self.outgoing) < window, WAIT):
                    raise AssertionError("publish window never opened")
                if not self.connected:
                    return sent
                pid = self.next_pid
                while pid in self.outgoing:
                    pid = pid % 65535 + 1
                self.next_pid = pid % 65535 + 1
                publish = Publish(topic, payload, qos, False, False, pid)
                self.outgoing[pid] = [publish, "published"]
            self._send(publish)
            sent += 1
        return sent

    def wait_until(self, predicate: Any, timeout: float = WAIT) -> bool:
        with self.lock:
            return self.lock.wait_for(predicate, timeout)

    def wait_quiet(self, quiet: float = 1.5, timeout: float = 60.0) -> None:
        """Wait until nothing has arrived for `quiet` seconds and nothing is unfinished."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                idle = time.monotonic() - self.last_received
                if idle >= quiet and not self.outgoing and not self.incoming_qos2:
                    return
            time.sleep(0.1)
        raise AssertionError(f"{self.client_id}: still busy after {timeout} s "
                             f"(outgoing {len(self.outgoing)}, "
                             f"incoming QoS 2 {len(self.incoming_qos2)})")

    def payloads(self) -> list[bytes]:
        with self.lock:
            return [p.payload for p in self.received]

    def disconnect(self) -> None:
        self._send(Disconnect(0))
        self.drop()

    def drop(self) -> None:
        sock, self.sock = self.sock, None
        self._lost()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
