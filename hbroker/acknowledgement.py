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

`HeldAck` and `grouped` are compiled (hbroker_ext/acknowledgement.pyx, part of the routing
extension): the inbound handler makes one per held PUBLISH and settles it in C.

- `HeldAck(conn, msg, packet_id, deciding=False)`: made by the broker; `conn`, `msg`,
  `packet_id`, `holders`, `session` read-only; `code` the reason code it will carry; `settled`.
- `hold()`, `release()`: a holder takes and lets go; `routed(reached)`: the handler's own
  hold, dropped once the message is routed; `refuse(reason_code, reason)`: never a success;
  `discard()`: taken back (a hook refused while it was asked).
- `with grouped():` acknowledgements released inside the block are written at its end, one
  write per connection (a storage commit's).
"""

from __future__ import annotations

from hbroker_ext.routing import HeldAck, grouped

__all__ = ["HeldAck", "grouped"]
