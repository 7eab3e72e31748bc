"""The session (MQTT section 4.1) and the application messages it carries: the Python face of
the compiled types. They are on the path of every PUBLISH, so their code is Cython, in
`hbroker_ext/`, one file per job (the extension `hbroker_ext.routing`, see routing.pyx):

- 4.1 Session State: `Session` (session.pyx): subscriptions, the inflight window, the
  queue, the will, expiry.
- 3.3 PUBLISH, outgoing: `Message` and `Delivery` (message.pyx): one message shared by its
  deliveries, a PUBLISH encoded once per distinct form; subscription identifiers and message
  expiry per delivery; topic aliases per connection (3.3.2.3.4).
- 3.3 PUBLISH, incoming: inbound.pyx: the checks and refusals, routing, the acknowledgement.
- 3.4 PUBACK, 3.5 PUBREC, 3.7 PUBCOMP: `Session.on_puback`, `on_pubrec`, `on_pubcomp`, the
  acknowledgements of outgoing QoS 1/2 messages (outcomes `ACK_*`).
- 4.3.3 QoS 2, incoming: `Session.receive_qos2`, `release_qos2`, `awaiting_pubrel`: packet ids
  awaiting PUBREL, so that a re-sent PUBLISH is not delivered twice.
- 4.4 Message delivery retry: `Session.resend_inflight`: on resume, the PUBRELs, then the
  unacknowledged PUBLISHes with DUP.
- 4.9 Flow Control: `Session.send_window`, `deliver`, `drain`: at most Receive Maximum QoS 1/2
  PUBLISHes inflight, the rest queued (bounded by `max_queued_messages` / `_bytes`).
- 4.8.2 Shared Subscriptions: `Session.take_shared_deliveries`: what another member of the
  group may take over.
- 3.8.3.1 No Local, overlapping subscriptions: `Target` (fanout.pyx): one delivery per client,
  at the highest QoS, with every subscription identifier.

A `Delivery` is queued (`state` 0) or inflight with a packet id (`AWAITING_PUBACK_OR_PUBREC`,
then for QoS 2 `AWAITING_PUBCOMP`). `NO_QUEUE` and `NO_PACKET_IDS` are the empty stand-ins an
idle session shares until it queues a message or receives a QoS 2 PUBLISH; `NEVER` is the
expiry of a session that does not expire.
"""

from hbroker_ext.routing import (
    ACK_ACCEPTED,
    ACK_UNKNOWN,
    ACK_WRONG_TYPE,
    AWAITING_PUBACK_OR_PUBREC,
    AWAITING_PUBCOMP,
    NEVER,
    NO_PACKET_IDS,
    NO_QUEUE,
    Delivery,
    Message,
    Session,
)

__all__ = ["ACK_ACCEPTED", "ACK_UNKNOWN", "ACK_WRONG_TYPE", "AWAITING_PUBACK_OR_PUBREC",
           "AWAITING_PUBCOMP", "NEVER", "NO_PACKET_IDS", "NO_QUEUE", "Delivery", "Message",
           "Session"]
