"""Sessions: the state MQTT keeps for a client id across network connections (section 4.1).

A session owns the outgoing flow of its client: the inflight window of QoS 1/2 messages awaiting
acknowledgement, the bounded queue of messages waiting for the window or for the client to come
back, and the packet ids of incoming QoS 2 messages awaiting PUBREL. They are on the hot path of
every PUBLISH, so they are compiled: `hbroker_ext/routing.pyx` holds `Session`, `Message` (an
application message, shared by every delivery of it) and `Delivery` (one message on its way to
one session).
"""

from hbroker_ext.routing import (
    AWAITING_PUBACK_OR_PUBREC,
    AWAITING_PUBCOMP,
    NEVER,
    NO_PACKET_IDS,
    NO_QUEUE,
    Delivery,
    Message,
    Session,
)

__all__ = ["AWAITING_PUBACK_OR_PUBREC", "AWAITING_PUBCOMP", "NEVER", "NO_PACKET_IDS", "NO_QUEUE",
           "Delivery", "Message", "Session"]
