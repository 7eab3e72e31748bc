# cython: language_level=3
"""Protocol constants of the compiled per-message path, declared once as C enums and cimported
where they are compared (no Python global lookup per message). `hbroker_ext.routing.CONSTANTS`
exposes them to Python; tests/unit/test_protocol_constants.py checks that each one equals its
counterpart in hbroker/reason_codes.py (RC_*) or hbroker_ext/codec.py (T_*, P_*)."""


# Control packet types (section 2.1.2; hbroker_ext.codec CONNECT ... AUTH).
cdef enum PacketType:
    T_CONNECT = 1
    T_CONNACK = 2
    T_PUBLISH = 3
    T_PUBACK = 4
    T_PUBREC = 5
    T_PUBREL = 6
    T_PUBCOMP = 7
    T_SUBSCRIBE = 8
    T_SUBACK = 9
    T_UNSUBSCRIBE = 10
    T_UNSUBACK = 11
    T_PINGREQ = 12
    T_PINGRESP = 13
    T_DISCONNECT = 14
    T_AUTH = 15


# Property identifiers the PUBLISH path reads or writes (section 2.2.2.2).
cdef enum PropertyId:
    P_PAYLOAD_FORMAT_INDICATOR = 0x01
    P_MESSAGE_EXPIRY_INTERVAL = 0x02
    P_SUBSCRIPTION_IDENTIFIER = 0x0B
    P_TOPIC_ALIAS = 0x23


# Reason codes the compiled path sends (section 2.4; hbroker.reason_codes.ReasonCode).
cdef enum ReasonCode:
    RC_SUCCESS = 0x00
    RC_NO_MATCHING_SUBSCRIBERS = 0x10
    RC_UNSPECIFIED_ERROR = 0x80
    RC_PROTOCOL_ERROR = 0x82
    RC_NOT_AUTHORIZED = 0x87
    RC_TOPIC_NAME_INVALID = 0x90
    RC_PACKET_IDENTIFIER_NOT_FOUND = 0x92
    RC_RECEIVE_MAXIMUM_EXCEEDED = 0x93
    RC_TOPIC_ALIAS_INVALID = 0x94
    RC_MESSAGE_RATE_TOO_HIGH = 0x96
    RC_QUOTA_EXCEEDED = 0x97
    RC_PAYLOAD_FORMAT_INVALID = 0x99
    RC_RETAIN_NOT_SUPPORTED = 0x9A
    RC_QOS_NOT_SUPPORTED = 0x9B


# States of an outgoing QoS 1/2 delivery (`Delivery.state`; 0 while queued).
cdef enum DeliveryState:
    S_AWAITING_PUBACK_OR_PUBREC = 1  # PUBLISH sent
    S_AWAITING_PUBCOMP = 2  # PUBREL sent


# What an acknowledgement from the client (PUBACK, PUBREC, PUBCOMP) was to the session's
# outgoing flows (`Session.on_puback`, `on_pubrec`, `on_pubcomp`).
cdef enum AckOutcome:
    A_ACCEPTED = 0  # it advanced the flow of its packet id
    A_UNKNOWN = 1  # no message is in flight with that packet id
    A_WRONG_TYPE = 2  # the packet id is in flight, but this packet has no place in its flow


# Which publish rate a PUBLISH exceeds (`PublishQuota.check`; 0: none).
cdef enum OverRate:
    OVER_MESSAGE_RATE = 1
    OVER_BYTE_RATE = 2
