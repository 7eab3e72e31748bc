# cython: language_level=3
"""The per-message half of the broker, compiled into one extension from one-job files (C calls
between them, typed fields declared once in routing.pxd, protocol constants in protocol.pxd):

- stats.pyx: `Stats`, the broker's counters;
- message.pyx: `Message` (an application message), `Delivery` (one message on its way to one
  session), the properties of one delivery and a PUBLISH encoded once per distinct form;
- quotas.pyx: `TokenBucket`, `PublishQuota`, `TopicLimits` ([quotas]);
- session.pyx: `Session` (section 4.1): the inflight window, the bounded queue, the re-sends
  of a resumed session, PUBACK/PUBREC/PUBCOMP, incoming QoS 2 packet ids awaiting PUBREL;
- fanout.pyx: `BrokerCore`, the match cache (`Targets`, `Target`), routing and the output
  coalescing;
- connection_core.pyx: `ConnectionCore`: `data_received`, the packet loop, the output;
- acknowledgement.pyx: `HeldAck`, a publisher's PUBACK/PUBREC held until every holder (the
  journal, a hook) is done, written in PUBLISH order, and `grouped`;
- inbound.pyx: the PUBLISH handler and its refusals.

`hbroker.session` is the Python face of the session and message types. Connections, the
broker and the journal are Python objects above these cores: the cores call them through the
upcalls declared in routing.pxd; this module does no I/O of its own beyond the transports'
writelines.
"""

import logging
import math
from collections import deque
from time import monotonic

from libc.math cimport ceil
from cpython.dict cimport PyDict_GetItem
from cpython.object cimport PyObject

from hbroker_ext.codec cimport (
    Framer,
    Puback,
    Publish,
    encode_ack,
    encode_publish,
    set_packet_id,
)
from hbroker_ext.codec import (
    MESSAGE_EXPIRY_INTERVAL,
    SUBSCRIPTION_IDENTIFIER,
    TOPIC_ALIAS,
    MQTTError,
)
from hbroker_ext.protocol cimport *

NEVER = math.inf

# Most sessions never queue a message or receive a QoS 2 PUBLISH: they share these empty,
# immutable stand-ins until they do (a deque costs 624 bytes, a set 216; with 10,000 idle
# connections that was a third of the broker's memory per connection).
NO_QUEUE = ()
NO_PACKET_IDS = frozenset()

# Outgoing QoS 1/2 states and acknowledgement outcomes, for Python (protocol.pxd).
AWAITING_PUBACK_OR_PUBREC = S_AWAITING_PUBACK_OR_PUBREC
AWAITING_PUBCOMP = S_AWAITING_PUBCOMP
ACK_ACCEPTED = A_ACCEPTED
ACK_UNKNOWN = A_UNKNOWN
ACK_WRONG_TYPE = A_WRONG_TYPE

# Why a message or a delivery was dropped (BrokerCore.message_dropped): hbroker.hooks's
# constants, checked equal by tests/unit/test_protocol_constants.py.
DROP_QUEUE_FULL = "queue_full"
DROP_EXPIRED = "expired"
DROP_TOO_LARGE = "too_large"
DROP_SLOW_SUBSCRIBER = "slow_subscriber"
DROP_QUOTA = "quota"
DROP_NOT_AUTHORIZED = "not_authorized"
DROP_TOPIC_INVALID = "topic_invalid"
DROP_PAYLOAD_FORMAT_INVALID = "payload_format_invalid"
DROP_STORAGE_UNAVAILABLE = "storage_unavailable"
DROP_NO_SUBSCRIBERS = "no_subscribers"
DROP_REFUSED = "refused"

# Every constant of protocol.pxd by name, for Python (checked against hbroker.reason_codes and
# hbroker_ext.codec by tests/unit/test_protocol_constants.py).
CONSTANTS = {
    "T_CONNECT": T_CONNECT, "T_CONNACK": T_CONNACK, "T_PUBLISH": T_PUBLISH,
    "T_PUBACK": T_PUBACK, "T_PUBREC": T_PUBREC, "T_PUBREL": T_PUBREL, "T_PUBCOMP": T_PUBCOMP,
    "T_SUBSCRIBE": T_SUBSCRIBE, "T_SUBACK": T_SUBACK, "T_UNSUBSCRIBE": T_UNSUBSCRIBE,
    "T_UNSUBACK": T_UNSUBACK, "T_PINGREQ": T_PINGREQ, "T_PINGRESP": T_PINGRESP,
    "T_DISCONNECT": T_DISCONNECT, "T_AUTH": T_AUTH,
    "P_PAYLOAD_FORMAT_INDICATOR": P_PAYLOAD_FORMAT_INDICATOR,
    "P_MESSAGE_EXPIRY_INTERVAL": P_MESSAGE_EXPIRY_INTERVAL,
    "P_SUBSCRIPTION_IDENTIFIER": P_SUBSCRIPTION_IDENTIFIER, "P_TOPIC_ALIAS": P_TOPIC_ALIAS,
    "RC_SUCCESS": RC_SUCCESS, "RC_NO_MATCHING_SUBSCRIBERS": RC_NO_MATCHING_SUBSCRIBERS,
    "RC_UNSPECIFIED_ERROR": RC_UNSPECIFIED_ERROR, "RC_PROTOCOL_ERROR": RC_PROTOCOL_ERROR,
    "RC_NOT_AUTHORIZED": RC_NOT_AUTHORIZED, "RC_TOPIC_NAME_INVALID": RC_TOPIC_NAME_INVALID,
    "RC_PACKET_IDENTIFIER_NOT_FOUND": RC_PACKET_IDENTIFIER_NOT_FOUND,
    "RC_RECEIVE_MAXIMUM_EXCEEDED": RC_RECEIVE_MAXIMUM_EXCEEDED,
    "RC_TOPIC_ALIAS_INVALID": RC_TOPIC_ALIAS_INVALID,
    "RC_MESSAGE_RATE_TOO_HIGH": RC_MESSAGE_RATE_TOO_HIGH,
    "RC_QUOTA_EXCEEDED": RC_QUOTA_EXCEEDED,
    "RC_PAYLOAD_FORMAT_INVALID": RC_PAYLOAD_FORMAT_INVALID,
    "RC_RETAIN_NOT_SUPPORTED": RC_RETAIN_NOT_SUPPORTED,
    "RC_QOS_NOT_SUPPORTED": RC_QOS_NOT_SUPPORTED,
    "S_AWAITING_PUBACK_OR_PUBREC": S_AWAITING_PUBACK_OR_PUBREC,
    "S_AWAITING_PUBCOMP": S_AWAITING_PUBCOMP,
    "A_ACCEPTED": A_ACCEPTED, "A_UNKNOWN": A_UNKNOWN, "A_WRONG_TYPE": A_WRONG_TYPE,
    "OVER_MESSAGE_RATE": OVER_MESSAGE_RATE, "OVER_BYTE_RATE": OVER_BYTE_RATE,
}

include "stats.pyx"
include "message.pyx"
include "quotas.pyx"
include "session.pyx"
include "fanout.pyx"
include "connection_core.pyx"
include "acknowledgement.pyx"
include "inbound.pyx"
