# cython: language_level=3
"""What other compiled modules take from the codec without a Python call (cimport): the PUBLISH
and acknowledgement packet layouts, and the hot-path encoders. hbroker_ext/routing.pyx reads
a decoded PUBLISH's fields and encodes deliveries through these."""


cdef class Packet:
    pass


cdef class Publish(Packet):
    cdef public str topic
    cdef public bytes payload
    cdef public int qos
    cdef public bint retain
    cdef public bint dup
    cdef public int packet_id
    cdef public object properties


cdef class _PacketIdAck(Packet):
    cdef public int packet_id
    cdef public int reason_code
    cdef public object properties


cdef class Puback(_PacketIdAck):
    pass


cdef class Framer:
    cdef public int max_packet_size
    cdef public int protocol_version
    # Before the CONNECT is accepted (`connecting`): one packet per feed, the bytes after it
    # kept unread (`held`) until the connection resumes or accepts.
    cdef public bint connecting
    cdef readonly bint held
    cdef bytearray pending
    cdef str last_topic  # the last PUBLISH topic name, when it is ASCII
    # The last PUBLISH property block (the bytes after its Property Length; none when 0 bytes)
    # and, once a second PUBLISH has carried the same bytes, the dict it decodes to.
    cdef Py_ssize_t last_props_size
    cdef unsigned char last_props_raw[48]
    cdef dict last_props

    cpdef list feed(self, data)
    cdef void _hold(self, data) except *


cpdef bytes encode_ack(int packet_type, int packet_id, int reason_code, int protocol_version)
cpdef bytes encode_publish(str topic, object payload, int qos, bint retain, bint dup,
                           int packet_id, object properties, int protocol_version)
cpdef bytes set_packet_id(bytes encoded, int packet_id, bint dup)

# The variable byte integer (MQTT 5.0 section 1.5.5) of every encoder, HARCP's included
# (hbroker_ext/harcp.pyx): its size, and the one writer (returns the bytes written).
cdef int varint_size(Py_ssize_t n) noexcept nogil
cdef Py_ssize_t write_varint(unsigned char* w, Py_ssize_t n) noexcept nogil
