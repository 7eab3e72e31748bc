"""MQTT 5 clients for fault loops: each runs on its own thread, keeps a persistent session
(Clean Start 0, a session expiry) and, whenever its connection fails, connects again to any
running instance of the cluster, resuming the session as a real client library does: a QoS 1
PUBLISH without its PUBACK is sent again with DUP, a QoS 2 one without its PUBREC too, and a
PUBREL without its PUBCOMP.

    pub = RoamingPublisher(instances, "c1", "t/q1", qos=1); pub.start()
    sub = RoamingSubscriber(instances, "c2", "t/q1", qos=1); sub.start()
    ...; pub.finish(); sub.wait_for(pub.acknowledged)

What the publisher counts as acknowledged: a PUBACK (QoS 1) or PUBREC (QoS 2) with a reason
code below 0x80, the point from which the broker owns the message. A refused message (0x80 and
up) is not sent again. The subscriber records every delivery, duplicates included: a QoS 2
PUBLISH counts once per packet id until its PUBREL, as the receiver's side of the protocol
says [MQTT-4.3.3-10]."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from typing import Any

from clients import RawClient
from hbroker_ext.codec import (
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SESSION_EXPIRY_INTERVAL,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
)

EXPIRY = 3600
ATTEMPT = 3.0  # seconds a CONNECT or an acknowledgement is waited for before another try


class _Roaming(threading.Thread):
    def __init__(self, instances: list[Any], client_id: str) -> None:
        super().__init__(daemon=True, name=client_id)
        self.instances = instances
        self.client_id = client_id
        self.conn: RawClient | None = None
        self.stopping = threading.Event()
        self.connects = 0
        self.sessions_lost = 0  # CONNACKs without Session Present after the first
        self.refusals: Counter[int] = Counter()  # CONNACK reason codes >= 0x80
        self.error: BaseException | None = None

    def _connect(self) -> bool:
        """Connect to a running instance chosen at random; True when the session is
        there (Session Present), False when it is new."""
        while not self.stopping.is_set():
            running = [b for b in self.instances if b.proc.poll() is None]
            if not running:
                time.sleep(0.05)
                continue
            b = random.choice(running)
            try:
                conn = RawClient(b.host, b.port)
                connack = conn.connect(self.client_id, clean_start=False, timeout=ATTEMPT,
                                       properties={SESSION_EXPIRY_INTERVAL: EXPIRY})
            except (OSError, AssertionError):
                time.sleep(0.05)
                continue
            if connack.reason_code >= 0x80:
                self.refusals[connack.reason_code] += 1
                conn.close()
                time.sleep(0.05)  # the client's back-off before it tries again
                continue
            self.conn = conn
            first = self.connects == 0
            self.connects += 1
            if not connack.session_present and not first:
                self.sessions_lost += 1
            return bool(connack.session_present)
        return False

    def _drop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self._drop()

    def _run(self) -> None:
        raise NotImplementedError


class RoamingPublisher(_Roaming):
    """Publishes 0, 1, 2, ... on `topic`, one message at a time, until `finish()`."""

    def __init__(self, instances: list[Any], client_id: str, topic: str, qos: int) -> None:
        super().__init__(instances, client_id)
        self.topic = topic
        self.qos = qos
        self.acknowledged: set[int] = set()
        self.refused: set[int] = set()
        self.resent = 0

    def finish(self, timeout: float = 60) -> None:
        self.stopping.set()
        self.join(timeout)
        assert not self.is_alive(), f"{self.client_id} did not finish"
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        n = 0
        pid = 0
        state = None  # None: nothing in flight; "publish": no ack yet; "rel": PUBREC had
        present = self._connect()
        while not self.stopping.is_set() or state is not None:
            if self.conn is None:
                present = self._connect()
                if self.conn is None:
                    return
                if state == "rel" and not present:
                    state = None  # the new session knows nothing of it: the broker had it
                    n += 1
                    continue
            try:
                if state is None:
                    if self.stopping.is_set():
                        return
                    pid = pid % 65535 + 1
                    state = "publish"
                    self.conn.send(Publish(self.topic, str(n).encode(), self.qos, False,
                                           False, pid, None))
                elif state == "publish":
                    self.resent += 1
                    self.conn.send(Publish(self.topic, str(n).encode(), self.qos, False,
                                           True, pid, None))
                else:
                    self.conn.send(Pubrel(pid))
                state, n = self._await(state, n, pid)
            except (OSError, AssertionError):
                self._drop()

    def _await(self, state: str, n: int, pid: int) -> tuple[str | None, int]:
        assert self.conn is not None
        deadline = time.monotonic() + ATTEMPT
        while True:
            p = self.conn.recv(max(0.01, deadline - time.monotonic()))
            if p.packet_type == PUBACK and p.packet_id == pid and state == "publish":
                (self.acknowledged if p.reason_code < 0x80 else self.refused).add(n)
                return None, n + 1
            if p.packet_type == PUBREC and p.packet_id == pid and state == "publish":
                if p.reason_code >= 0x80:
                    self.refused.add(n)
                    return None, n + 1
                self.acknowledged.add(n)
                self.conn.send(Pubrel(pid))
                state = "rel"
                deadline = time.monotonic() + ATTEMPT
            elif p.packet_type == PUBCOMP and p.packet_id == pid and state == "rel":
                return None, n + 1


class RoamingSubscriber(_Roaming):
    """Holds one subscription on `topic` and acknowledges what it receives."""

    def __init__(self, instances: list[Any], client_id: str, topic: str, qos: int) -> None:
        super().__init__(instances, client_id)
        self.topic = topic
        self.qos = qos
        self.received: Counter[int] = Counter()
        self._awaiting_rel: dict[int, int] = {}  # QoS 2 packet id -> the number it carried
        self.reused_ids: list[tuple[int, int, int]] = []  # (id, first number, second)
        self._cond = threading.Condition()
        self.subscribed = threading.Event()

    def _subscribe(self) -> None:
        assert self.conn is not None
        assert self.conn.subscribe(self.topic, self.qos) == [self.qos]
        self.subscribed.set()

    def wait_for(self, wanted: set[int], timeout: float = 90) -> set[int]:
        """Until every number of `wanted` was received; the missing ones after `timeout`."""
        with self._cond:
            self._cond.wait_for(lambda: wanted <= set(self.received) or self.error is not None,
                                timeout)
            return wanted - set(self.received)

    def finish(self) -> None:
        self.stopping.set()
        self.join(30)
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        while not self.stopping.is_set():
            if self.conn is None:
                present = self._connect()
                if self.conn is None:
                    return
                try:
                    if not present:
                        self._awaiting_rel.clear()
                        self._subscribe()
                except (OSError, AssertionError):
                    self._drop()
                    continue
            try:
                p = self.conn.recv_or_none(0.2)
                if p is not None:
                    self._handle(p)
            except (OSError, AssertionError):
                self._drop()

    def _handle(self, p: Any) -> None:
        assert self.conn is not None
        if p.packet_type == PUBLISH:
            if not p.payload.isdigit():
                return self._ack(p)
            n = int(p.payload)
            if p.qos == 2 and p.packet_id in self._awaiting_rel:
                if self._awaiting_rel[p.packet_id] != n:  # a new message on an id in use
                    self.reused_ids.append((p.packet_id, self._awaiting_rel[p.packet_id], n))
                return self._ack(p)  # the same message again: already received
            with self._cond:
                self.received[n] += 1
                self._cond.notify_all()
            self._ack(p)
        elif p.packet_type == PUBREL:
            self._awaiting_rel.pop(p.packet_id, None)
            self.conn.send(Pubcomp(p.packet_id))

    def _ack(self, p: Any) -> None:
        assert self.conn is not None
        if p.qos == 1:
            self.conn.send(Puback(p.packet_id))
        elif p.qos == 2:
            self._awaiting_rel.setdefault(
                p.packet_id, int(p.payload) if p.payload.isdigit() else -1)
            self.conn.send(Pubrec(p.packet_id))
