# cython: language_level=3
"""The cores of hbroker_ext.routing: every field of the compiled classes, their C methods and
the upcalls the compiled code makes, so that the included files (routing.pyx) call each other
in C and the Python subclasses (hbroker.broker.Broker, hbroker.connection.Connection)
override the upcalls by defining a method of the same name.

Upcalls are `cpdef` methods with a default: compiled code calls them as C methods, and when
the object's class is a Python subclass that defines the name, Cython calls that instead.

ConnectionCore upcalls (hbroker.connection.Connection overrides): `protocol_error`,
`codec_error`, `abort`, `disconnect`, `transport_buffer_size`.
BrokerCore upcalls (hbroker.broker.Broker overrides): `_retain` (the retained store),
`_publish_shared` (round robin of shared groups), `_readers` (the read ACL of a new match
cache entry), `message_published`, `message_dropped` (the hook seam, called only
when `publish_hooks` / `drop_hooks`).
Other objects the compiled code calls without a declared type: the journal
(hbroker.storage.journal.Journal: `sync`, `degraded`, `full`, `defer(ack, msg, previous)`,
`qos2_changed`, `delivery_changed`, `delivery_removed`, `holds_output`, `hold`, `kick`),
the hooks (hbroker.hooks.Hooks: `check_acl`, `allowed`), the subscription tree (`generation`, `match`), the retained tree (`get`)
and the transport (`is_closing`, `writelines`, `pause_reading`, `get_write_buffer_size`).
Attributes of the Python subclasses read on cold paths: `Broker.throttled` (the throttle) and
`Connection.peer` (log lines of the refusals).
"""

from hbroker_ext.codec cimport Framer, Publish


# -- stats.pyx -------------------------------------------------------------------------------

cdef class Stats:
    cdef public long long packets_received
    cdef public long long packets_sent
    cdef public long long bytes_received
    cdef public long long bytes_sent
    cdef public long long publish_received
    cdef public long long publish_sent
    # By QoS: received as the PUBLISH came, sent as each delivery went (re-sends included);
    # each triple adds up to its total.
    cdef public long long publish_received_qos0
    cdef public long long publish_received_qos1
    cdef public long long publish_received_qos2
    cdef public long long publish_sent_qos0
    cdef public long long publish_sent_qos1
    cdef public long long publish_sent_qos2
    cdef public long long publish_routed
    cdef public long long publish_dropped
    cdef public long long clients_connected
    cdef public long long clients_maximum
    cdef public long long connections_total
    cdef public long long takeovers
    cdef public long long wills_published
    cdef public long long sessions_expired
    cdef public long long retained_changes
    cdef public long long dropped_qos0_slow
    cdef public long long dropped_queue_full
    cdef public long long dropped_expired
    cdef public long long dropped_too_large
    cdef public long long dropped_no_subscribers  # routed messages that reached no one
    cdef public long long protocol_errors
    cdef public long long connections_rate_limited
    cdef public long long publish_rate_limited
    cdef public long long publish_throttled


# -- message.pyx -----------------------------------------------------------------------------

cdef class Message:
    cdef public str topic
    cdef public bytes payload
    cdef public int qos
    cdef public bint retain
    cdef public object properties
    cdef public double expires_at
    cdef public object sender
    cdef public long long store_id
    cdef public long store_refs
    cdef public bint store_written
    # The first encoding made, by (protocol version, QoS, retain, subscription ids, expiry):
    # every copy of a 1:N fan-out to one kind of client. Other forms go to `encodings`.
    cdef int _version
    cdef int _qos
    cdef bint _retain
    cdef object _sub_ids
    cdef long _expiry
    cdef bytes _encoded
    cdef public object encodings

    cpdef bint expired(self, double now)
    cpdef long remaining_expiry(self, double now)
    cdef bytes _cached(self, int version, int qos, bint retain, object sub_ids, long expiry)
    cdef void _cache(self, int version, int qos, bint retain, object sub_ids, long expiry,
                     bytes data)


cdef class Delivery:
    cdef public Message message
    cdef public int qos
    cdef public bint retain
    cdef public object sub_ids
    cdef public int packet_id
    cdef public int state
    cdef public object group
    cdef public long long seq
    cdef public bint written
    cdef public bint awaiting_resend


# -- quotas.pyx ------------------------------------------------------------------------------

cdef class TokenBucket:
    cdef public double rate
    cdef public double burst
    cdef public double tokens
    cdef public double updated

    cdef void _refill(self, double now)
    cpdef bint allows(self, double amount, double now)
    cpdef bint try_take(self, double amount, double now)
    cpdef double take(self, double amount, double now)


cdef class PublishQuota:
    cdef public TokenBucket messages
    cdef public TokenBucket payload_bytes
    cdef public bint throttle
    cdef public bint disconnect
    cdef public long long refused
    cdef public double logged_at

    cpdef int check(self, Py_ssize_t size, double now)
    cpdef double charge(self, Py_ssize_t size, double now)


cdef class TopicLimits:
    cdef public Py_ssize_t max_levels
    cdef public Py_ssize_t max_length

    cpdef bint allows(self, str topic)


# -- session.pyx -----------------------------------------------------------------------------

cdef class ConnectionCore
cdef class BrokerCore


cdef class Session:
    cdef public object client_id
    cdef public int protocol_version
    cdef public ConnectionCore connection
    # topic filter (as subscribed, `$share/...` included) -> SubscriptionOptions
    cdef public dict subscriptions
    cdef public object expiry_interval  # seconds after disconnect; NEVER for no expiry
    cdef public dict inflight  # packet id -> Delivery
    # Inflight PUBLISHes of an earlier network connection not yet re-sent on this one, in
    # their original order (NO_QUEUE when none): those with `awaiting_resend` set, counted
    # by `resends_pending` (an entry whose flag was cleared is skipped when popped).
    cdef public object resends
    cdef public long resends_pending
    cdef public object queue  # NO_QUEUE, a deque once something is queued
    cdef public long long queued_bytes
    cdef public int next_packet_id
    # incoming QoS 2 packet ids [MQTT-4.3.3-9]; a set once there is one (receive_qos2)
    cdef public object awaiting_pubrel
    cdef public object will
    cdef public object will_delay
    cdef public object will_due  # monotonic time at which a delayed will is published
    cdef public object expires_at  # monotonic time at which a disconnected session ends
    cdef public long send_window  # the client's Receive Maximum, or max_inflight for 3.1.1
    cdef public long long max_queued_messages
    cdef public long long max_queued_bytes
    cdef public bint queue_qos0
    cdef public long long dropped
    cdef public Stats stats
    cdef public object journal
    # The broker, for the hook seam (`message_dropped`); None for a session made without one.
    cdef public BrokerCore broker
    cdef public bint ended
    # The connection's publish rate buckets ([quotas]); None when no rate is configured, so
    # the check costs one comparison per PUBLISH.
    cdef public PublishQuota publish_quota

    cdef void _stored(self, Delivery delivery) except *
    cdef void _unstored(self, Delivery delivery) except *
    cdef void _dropped(self, Message msg, str reason) except *
    cpdef deliver(self, Delivery delivery, double now)
    cpdef deliver_qos0(self, Message msg, bint retain, object sub_ids, double now)
    cpdef receive_qos2(self, int packet_id)
    cpdef bint release_qos2(self, int packet_id) except -1
    cpdef restore_qos2(self, int packet_id)
    cpdef queue_for_append(self)
    cdef void _enqueue(self, Delivery delivery) except *
    cdef void _send_new(self, Delivery delivery, ConnectionCore conn, double now) except *
    cdef int _allocate_packet_id(self) except -1
    cpdef drain(self, double now)
    cdef void _resend(self, ConnectionCore conn, double now) except *
    cdef Delivery _inflight(self, int packet_id)
    cdef void _release(self, int packet_id, Delivery delivery) except *
    cpdef int on_puback(self, int packet_id, double now) except -1
    cpdef int on_pubrec(self, int packet_id, int reason_code) except -1
    cpdef int on_pubcomp(self, int packet_id, double now) except -1
    cdef void _completed(self, int packet_id, Delivery delivery, double now) except *
    cpdef restore_delivery(self, Delivery delivery)
    cpdef list withdraw(self, object refused)


# -- fanout.pyx ------------------------------------------------------------------------------

cdef class Target:
    # One client's aggregate of the non-shared subscriptions matching a topic (overlapping
    # ones are delivered once [MQTT-3.3.4-2, MQTT-3.3.4-3]).
    cdef readonly object client_id
    cdef readonly int qos
    cdef readonly bint retain_as_published
    cdef readonly tuple sub_ids
    # The same without its No Local subscriptions, for a message the client published itself
    # [MQTT-3.8.3-3]: self when none is No Local, None when all are.
    cdef readonly Target local


cdef class Targets:
    # A match cache entry: who a message on one topic goes to.
    cdef readonly tuple normal  # of Target
    cdef readonly object shared  # [(group key, [(client id, options), ...]), ...]


cdef class BrokerCore:
    cdef public Stats stats
    cdef public dict sessions  # client id -> Session
    cdef public object subscriptions  # hbroker_ext.topics.SubscriptionTree
    # topic -> Targets, valid while _match_generation is the tree's
    cdef public dict _match_cache
    cdef public long long _match_generation
    cdef public object hooks
    cdef public object journal  # hbroker.storage.journal.Journal, None with the memory backend
    cdef public object retained  # hbroker_ext.topics.RetainedTree
    cdef public TopicLimits topic_limits
    cdef public list _dirty  # connections with output this loop iteration
    cdef public bint flush_scheduled
    cdef public object loop
    # Some hook provides on_message_published / on_message_dropped (set by the broker when
    # its hooks are configured): the upcalls below are made only then.
    cdef public bint publish_hooks
    cdef public bint drop_hooks
    cdef object _limits
    cdef readonly int max_qos
    cdef readonly bint retain_available
    cdef readonly int topic_alias_maximum
    cdef readonly int max_inflight

    cdef void _mark_dirty(self, object conn) except *
    cpdef schedule_flush(self)
    cpdef Targets _targets(self, str topic)
    cpdef bint has_durable_target(self, str topic) except -1
    # upcalls
    cpdef _retain(self, Message msg)
    cpdef int _publish_shared(self, Message msg, object shared, double now,
                              object skip) except -1
    cpdef tuple _readers(self, str topic, object normal, object shared)
    cpdef object message_published(self, ConnectionCore conn, Message msg, int packet_id)
    cpdef message_dropped(self, Message msg, object client_id, str reason)


# -- connection_core.pyx ---------------------------------------------------------------------

cdef class ConnectionCore:
    cdef public BrokerCore broker
    cdef public Session session
    cdef public object client_id
    cdef public int protocol_version
    cdef public bint connected
    cdef public bint closing
    cdef public bint write_paused
    cdef public double last_received  # monotonic time of the last read
    cdef public list out  # packets queued for this loop iteration's flush
    cdef public dict topic_aliases_in
    cdef public object topic_aliases_out  # topic -> alias, None when the client takes none
    cdef public int topic_alias_maximum_out
    cdef public long max_packet_size_out
    cdef public long deferred  # HeldAcks outstanding: PUBLISHes whose ack is held
    # The connection's HeldAcks in PUBLISH order (a deque made by the first HeldAck), None
    # until one is made.
    cdef public object held_acks
    cdef public object client_info
    cdef public object pending_connect
    cdef public object transport
    cdef public Framer framer
    # packet type -> handler(connection, packet) for what handle_packets does not handle
    cdef public dict handlers

    cdef void _flush(self) except *
    cdef void _write_output(self, list out) except *
    cdef void _write(self, bytes data) except *

    # upcalls
    cpdef protocol_error(self, int reason_code, str message)
    cpdef codec_error(self, object error)
    cpdef abort(self, str reason)
    cpdef disconnect(self, int reason_code, str reason, bint publish_will)
    cpdef Py_ssize_t transport_buffer_size(self) except -1


# -- acknowledgement.pyx ---------------------------------------------------------------------

# States of a HeldAck.
cdef enum:
    H_HELD = 0  # some holder has not let go
    H_READY = 1  # every holder is done: acknowledged once the earlier ones are
    H_REFUSED = 2  # refused: the refusal goes out (5.0) or the connection closes (3.1.1)
    H_DONE = 3  # written, refused, or forgotten (its connection closed): nothing more to do


cdef class HeldAck:
    cdef readonly ConnectionCore conn
    cdef readonly Message msg
    cdef readonly int packet_id
    cdef public int code  # the reason code it will carry
    cdef readonly int holders
    cdef readonly int state
    cdef readonly Session session
    cdef public bint deciding

    cdef void _start(self, ConnectionCore conn, Message msg, int packet_id,
                     bint deciding) except *
    cpdef hold(self)
    cpdef routed(self, long reached)
    cpdef release(self)
    cpdef refuse(self, int reason_code, str reason=*)
    cpdef discard(self)
    cdef void _settle(self) except *


cdef HeldAck _new_held_ack(ConnectionCore conn, Message msg, int packet_id, bint deciding)
