"""TEMPORARY, remove when the compiled inbound handler calls `Journal.defer(ack, msg,
retained_before)` with a HeldAck (hbroker.acknowledgement).

Until then the handler calls `journal.defer(conn, msg, packet_id, reached, retained_before)`;
`LegacyAck` stands in for the HeldAck it will create, doing what the journal did itself before:
the PUBACK/PUBREC written once the commit is done, `Connection.refuse_unstored` when it failed.
"""

from __future__ import annotations

from typing import Any

from hbroker_ext.codec import PUBACK, PUBREC, encode_ack

from hbroker.reason_codes import ReasonCode


class LegacyAck:
    __slots__ = ("conn", "msg", "packet_id", "code")

    def __init__(self, conn: Any, msg: Any, packet_id: int, reached: int) -> None:
        conn.deferred += 1
        self.conn = conn
        self.msg = msg
        self.packet_id = packet_id
        self.code = 0 if reached or conn.protocol_version != 5 else \
            ReasonCode.NO_MATCHING_SUBSCRIBERS

    def hold(self) -> None:
        pass

    def release(self) -> None:
        conn = self.conn
        conn.deferred -= 1
        if not conn.closing:
            conn.write_output([encode_ack(PUBACK if self.msg.qos == 1 else PUBREC,
                                          self.packet_id, self.code, conn.protocol_version)])

    def refuse(self, reason_code: int) -> None:
        conn, msg, packet_id = self.conn, self.msg, self.packet_id
        conn.deferred -= 1
        session = conn.session
        if msg.qos == 2 and session is not None:
            if packet_id in session.awaiting_pubrel:
                session.awaiting_pubrel.discard(packet_id)
            journal = conn.broker.journal
            if session.expiry_interval and journal is not None:
                journal.qos2_changed(session, packet_id)
        conn.refuse_unstored(msg, packet_id, reason_code == ReasonCode.QUOTA_EXCEEDED)
