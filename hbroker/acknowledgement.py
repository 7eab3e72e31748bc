"""A publisher's acknowledgement held back until every holder is done with its message.

A QoS 1/2 PUBLISH is acknowledged (PUBACK, or PUBREC for QoS 2) once the broker has routed
it. Some work must be done before the acknowledgement may promise the message is safe: a
storage commit (`hbroker.storage.journal`), a hook's own durable write (a cluster's stream, a
bridge's ledger). Each of them `hold`s the message's `HeldAck` and `release`s it when done;
the inbound PUBLISH handler holds it until it has routed the message (`routed`). When the last
holder lets go, the acknowledgement is written at once, in PUBLISH order for the connection
[MQTT-4.6.0-2]: an acknowledgement waits behind those of earlier PUBLISHes still held
(`Connection.held_acks`, in PUBLISH order; `Connection.deferred` counts them).

A holder that cannot do its work `refuse`s the message instead: it is never acknowledged as a
success. A 5.0 client gets the reason code in its PUBACK/PUBREC; a 3.1.1 client, which has no
way to be told no, is disconnected (it sends the message again on its next connection). A
connection that closes with acknowledgements held writes none of them; each is forgotten as
its holders finish.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from hbroker_ext.codec import PUBACK, PUBREC, encode_ack

from hbroker.hooks import STORAGE_UNAVAILABLE
from hbroker.reason_codes import ReasonCode

if TYPE_CHECKING:
    from hbroker.session import Message

log = logging.getLogger("hbroker.acknowledgement")

# States of a HeldAck.
_HELD = 0  # some holder has not let go
_READY = 1  # every holder is done: acknowledged once the earlier ones are
_REFUSED = 2  # refused: the refusal goes out (5.0) or the connection closes (3.1.1) in order
_DONE = 3  # written, refused, or forgotten (its connection closed): nothing more to do

_NO_MATCHING_SUBSCRIBERS = ReasonCode.NO_MATCHING_SUBSCRIBERS

# While `grouped()` is active: connection -> acknowledgements to write when it ends.
_grouped: dict[Any, list[bytes]] | None = None


@contextlib.contextmanager
def grouped() -> Iterator[None]:
    """Acknowledgements released inside the block are written at its end, one write per
    connection (e.g. every PUBLISH a storage commit made durable) instead of one each."""
    global _grouped
    if _grouped is not None:  # nested: the outer block writes
        yield
        return
    _grouped = {}
    try:
        yield
    finally:
        pending, _grouped = _grouped, None
        for conn, out in pending.items():
            if not conn.closing:
                conn.write_output(out)


def _write(conn: Any, out: list[bytes]) -> None:
    if _grouped is None:
        conn.write_output(out)
        return
    queued = _grouped.get(conn)
    if queued is None:
        _grouped[conn] = out
    else:
        queued.extend(out)


def _write_grouped_now(conn: Any) -> None:
    """Write what `grouped()` holds for `conn` (before the connection closes)."""
    if _grouped is not None:
        out = _grouped.pop(conn, None)
        if out:
            conn.write_output(out)


def _queue(conn: Any) -> deque:
    """The connection's HeldAcks in PUBLISH order (ConnectionCore.held_acks)."""
    queue = conn.held_acks
    if queue is None:
        queue = conn.held_acks = deque()
    return queue


def _forget_queue(conn: Any) -> None:
    """The connection holds no acknowledgement any more."""
    conn.held_acks = None


class HeldAck:
    """The acknowledgement of one QoS 1/2 PUBLISH, written when every holder released it and
    every earlier one of its connection is done. `code`: the reason code it will carry (0, or
    0x10 No matching subscribers from `routed`; the refusal's code once refused). Created
    with one hold, the inbound handler's, which `routed` drops."""

    __slots__ = ("conn", "msg", "packet_id", "code", "holders", "state", "session", "deciding")

    def __init__(self, conn: Any, msg: Message, packet_id: int, deciding: bool = False
                 ) -> None:
        self.conn = conn
        self.msg = msg
        self.packet_id = packet_id
        self.code = 0
        self.holders = 1
        self.state = _HELD
        self.session = conn.session
        # True while Broker.message_published asks the hooks: the acknowledgement takes its
        # place on the connection only when a hook holds it (most do not: nothing to undo),
        # and a refusal then is answered by the handler, as an ACL refusal is (`refuse` only
        # records its code).
        self.deciding = deciding
        if not deciding:
            _queue(conn).append(self)
            conn.deferred += 1

    def __repr__(self) -> str:
        state = ("held", "ready", "refused", "done")[self.state]
        return (f"<HeldAck {self.msg.topic!r} packet_id={self.packet_id} {state} "
                f"holders={self.holders}>")

    @property
    def settled(self) -> bool:
        """Whether every holder is done (released or refused)."""
        return self.state != _HELD

    def hold(self) -> None:
        """One more holder (a hook, the journal): the acknowledgement waits for its release.
        A hook holds it while on_message_published is called (later, only a holder may add
        another hold)."""
        if self.state == _HELD:
            if self.deciding and self.holders == 1:
                _queue(self.conn).append(self)
                self.conn.deferred += 1
            self.holders += 1

    def routed(self, reached: int) -> None:
        """The handler routed the message to `reached` subscriptions: a 5.0 acknowledgement
        says 0x10 No matching subscribers when none; the handler's hold is dropped."""
        if not reached and self.conn.protocol_version == 5:
            self.code = _NO_MATCHING_SUBSCRIBERS
        self.release()

    def release(self) -> None:
        """A holder is done. When none is left, the acknowledgement goes out after those of
        the connection's earlier PUBLISHes."""
        if self.state != _HELD:
            return
        self.holders -= 1
        if self.holders > 0:
            return
        self.state = _READY
        self._settle()

    def refuse(self, reason_code: int, reason: str = STORAGE_UNAVAILABLE) -> None:
        """Never acknowledge the message as a success: a 5.0 client gets `reason_code`
        (0x97 Quota exceeded when storage is full, 0x80 Unspecified error otherwise, or a
        hook's code); a 3.1.1 client is disconnected. A QoS 2 packet id is freed, so the
        client's next PUBLISH with it is a new message. Counted as dropped, and reported to
        the hooks providing on_message_dropped with `reason`. What the message's routing
        delivered stays delivered (the journal withdraws what it had stored)."""
        if self.state != _HELD:
            return
        self.code = reason_code
        if self.deciding:
            self.state = _REFUSED
            return
        conn = self.conn
        broker = conn.broker
        broker.stats.publish_dropped += 1
        if broker.drop_hooks:
            broker.message_dropped(self.msg, conn.client_id, reason)
        if self.msg.qos == 2 and self.session is not None:
            self.session.release_qos2(self.packet_id)
        self.state = _REFUSED
        self._settle()

    def discard(self) -> None:
        """Take back an acknowledgement no holder took, or one a hook refused while it was
        asked (Broker.message_published): it leaves no trace on the connection."""
        if self.state == _DONE:
            return
        held = self.holders > 1 or self.state == _REFUSED
        self.state = _DONE
        if self.deciding and not held:
            return  # never took its place on the connection
        conn = self.conn
        queue = _queue(conn)
        if queue and queue[-1] is self:
            queue.pop()
        else:
            with contextlib.suppress(ValueError):
                queue.remove(self)
        conn.deferred -= 1
        if not queue:
            _forget_queue(conn)
        elif queue[0].state != _HELD:
            queue[0]._settle()  # it waited behind this one

    def _settle(self) -> None:
        """Write, in order, the acknowledgements at the head of the connection's queue whose
        holders are all done."""
        conn = self.conn
        queue = _queue(conn)
        if conn.closing:
            self._forget_settled(conn, queue)
            return
        out: list[bytes] = []
        version = conn.protocol_version
        while queue and queue[0].state != _HELD:
            ack = queue.popleft()
            conn.deferred -= 1
            state, ack.state = ack.state, _DONE
            ptype = PUBACK if ack.msg.qos == 1 else PUBREC
            if state == _READY:
                out.append(encode_ack(ptype, ack.packet_id, ack.code, version))
            elif version == 5:
                out.append(encode_ack(ptype, ack.packet_id, ack.code, 5))
            else:
                # 3.1.1 has no way to say no: the connection closes, after the
                # acknowledgements of the PUBLISHes before this one.
                if out:
                    _write(conn, out)
                    out = []
                _write_grouped_now(conn)
                log.warning("publish refused: closing the 3.1.1 connection", extra={
                    "client_id": conn.client_id, "topic": ack.msg.topic,
                    "reason": f"{ack.code:#04x}"})
                conn.abort("publish refused: a 3.1.1 client cannot be told")
                self._forget_settled(conn, queue)
                return
        if out:
            _write(conn, out)
        if not queue:
            _forget_queue(conn)

    @staticmethod
    def _forget_settled(conn: Any, queue: deque) -> None:
        """The connection is closing: nothing is written; settled acknowledgements leave the
        queue now, held ones when their holders finish."""
        for ack in list(queue):
            if ack.state != _HELD:
                queue.remove(ack)
                ack.state = _DONE
                conn.deferred -= 1
        if not queue:
            _forget_queue(conn)


__all__ = ["HeldAck", "grouped"]
