# The PUBLISH fan-out (included by routing.pyx, fields declared in routing.pxd): `BrokerCore`,
# the match cache (topic -> Targets), routing a message to the sessions it reaches, and the
# output coalescing (one writelines per connection per loop iteration).

# Topic -> Targets entries kept at most; cleared whole when full or when the subscription tree
# changes (its generation counter moves).
cdef enum:
    MATCH_CACHE_LIMIT = 65536


cdef class Target:
    """One client's aggregate of the non-shared subscriptions matching a topic: delivered
    once, at the highest QoS, with every subscription identifier [MQTT-3.3.4-2,
    MQTT-3.3.4-3]. `local` is the same computed without its No Local subscriptions, used when
    the publisher is the subscriber itself [MQTT-3.8.3-3]: the target itself when none is No
    Local, None when all are."""

    def __repr__(self):
        return (f"Target({self.client_id!r}, qos={self.qos}, rap={self.retain_as_published}, "
                f"sub_ids={self.sub_ids})")


cdef Target _combine(object client_id, list options):
    cdef Target target = Target.__new__(Target)
    cdef int qos = 0
    cdef bint rap = False
    ids = set()
    for o in options:
        if o.qos > qos:
            qos = o.qos
        if o.retain_as_published:
            rap = True
        if o.sub_id:
            ids.add(o.sub_id)
    target.client_id = client_id
    target.qos = qos
    target.retain_as_published = rap
    target.sub_ids = tuple(sorted(ids))
    return target


cdef tuple _aggregate(object normal):
    """The Targets of a topic's non-shared matches, (client id, SubscriptionOptions) pairs:
    one per client."""
    cdef Target target
    cdef dict by_client = {}
    for client_id, opts in normal:
        options = by_client.get(client_id)
        if options is None:
            by_client[client_id] = [opts]
        else:
            options.append(opts)
    targets = []
    for client_id, options in by_client.items():
        target = _combine(client_id, options)
        local_options = [o for o in options if not o.no_local]
        if len(local_options) == len(options):
            target.local = target
        elif local_options:
            target.local = _combine(client_id, local_options)
        targets.append(target)
    return tuple(targets)


cdef class Targets:
    """A match cache entry: `normal`, the Target of each client with non-shared
    subscriptions; `shared`, the shared groups as the subscription tree matched them,
    [(group key, [(client id, SubscriptionOptions), ...]), ...]."""

    def __init__(self, tuple normal, shared):
        self.normal = normal
        self.shared = shared

    def __repr__(self):
        return f"Targets({self.normal!r}, {self.shared!r})"


cdef class BrokerCore:
    """The broker's state on the per-message path, typed so compiled code reads it without a
    Python attribute lookup. `hbroker.broker.Broker` extends it with everything else; Python
    code sees these as ordinary attributes. `limits` copies the values the PUBLISH path checks
    into typed fields whenever it is set (at start and on SIGHUP)."""

    @property
    def limits(self):
        return self._limits

    @limits.setter
    def limits(self, limits):
        self.max_qos = limits.max_qos
        self.retain_available = limits.retain_available
        self.topic_alias_maximum = limits.topic_alias_maximum
        self.max_inflight = limits.max_inflight
        self._limits = limits

    cdef void _mark_dirty(self, object conn) except *:
        """`conn` has output for this loop iteration: flushed with the others once."""
        self._dirty.append(conn)
        if not self.flush_scheduled:
            self.schedule_flush()

    cpdef schedule_flush(self):
        """Flush at the end of this loop iteration (once, however many connections wrote)."""
        self.flush_scheduled = True
        if self.loop is None:
            raise RuntimeError("the broker has no event loop yet")
        self.loop.call_soon(self.flush)

    def flush(self):
        """Write everything queued this loop iteration: one writelines per connection. With
        durable storage in sync mode, the output waits for the commit of what this iteration
        changed (the journal holds it) and that commit starts now."""
        cdef ConnectionCore conn
        self.flush_scheduled = False
        dirty = self._dirty
        self._dirty = []
        journal = self.journal
        if journal is not None:
            if journal.holds_output():
                for conn in dirty:
                    journal.hold(conn)
                dirty = []
            if journal.sync:
                journal.kick()  # periodic mode commits on its own timer
        for conn in dirty:
            conn._flush()

    def publish(self, Message msg, double now, skip=None):
        """Route one application message; returns the number of subscriptions it reached.
        `skip`: client ids not to deliver to."""
        return _publish(self, msg, now, skip)

    # -- the match cache ---------------------------------------------------------------------

    cpdef Targets _targets(self, str topic):
        """Who a message on `topic` goes to: the match cache entry, made from the subscription
        tree (and the read ACL, `_readers`) when there is none for the tree's generation."""
        cdef Targets entry
        tree = self.subscriptions
        cache = self._match_cache
        if <long long>tree.generation != self._match_generation:
            cache.clear()
            self._match_generation = tree.generation
        entry = cache.get(topic)
        if entry is None:
            normal, shared = tree.match(topic)
            if self.hooks.check_acl:
                # Only subscribers the ACL lets read the topic, decided once per cache entry.
                normal, shared = self._readers(topic, normal, shared)
            entry = Targets.__new__(Targets)
            entry.normal = _aggregate(normal) if normal else ()
            entry.shared = shared
            if len(cache) >= MATCH_CACHE_LIMIT:
                cache.clear()
            cache[topic] = entry
        return entry

    cpdef bint has_durable_target(self, str topic) except -1:
        """Whether a message on `topic` would reach a session that outlives its connection
        (and so must be stored before it is acknowledged)."""
        cdef Targets entry = self._targets(topic)
        cdef Target target
        cdef Session session
        sessions = self.sessions
        for target in entry.normal:
            session = sessions.get(target.client_id)
            if session is not None and session.expiry_interval:
                return True
        for _group, members in entry.shared:
            for client_id, _opts in members:
                session = sessions.get(client_id)
                if session is not None and session.expiry_interval:
                    return True
        return False

    # -- upcalls (hbroker.broker.Broker overrides them) --------------------------------------

    cpdef _retain(self, Message msg):
        """A retained PUBLISH is being routed: the retained store takes it (or clears its
        topic for an empty payload)."""

    cpdef int _publish_shared(self, Message msg, object shared, double now,
                              object skip) except -1:
        """Deliver to one member of each shared subscription group in `shared` (a Targets
        entry's); returns how many groups it reached."""
        return 0

    cpdef tuple _readers(self, str topic, object normal, object shared):
        """The matches the read ACL lets read `topic`, for a new match cache entry."""
        return normal, shared

    cpdef object message_published(self, ConnectionCore conn, Message msg, int packet_id):
        """Called only when `publish_hooks`, for a PUBLISH that passed every check and is
        about to be routed: None to go on, an int reason code (>= 0x80) to refuse it, or the
        HeldAck some hook holds."""
        return None

    def hold_ack(self, ConnectionCore conn, Message msg, int packet_id):
        """A new HeldAck for a QoS 1/2 PUBLISH whose acknowledgement must wait (storage, a
        hook, or earlier held acknowledgements of the connection), in its place on `conn`."""
        return _new_held_ack(conn, msg, packet_id, False)

    cpdef message_dropped(self, Message msg, object client_id, str reason):
        """Called only when `drop_hooks`, wherever a message or a delivery is dropped (and
        counted): `reason` is one of the DROP_* strings, `client_id` the session it was for
        (the publisher's for a refused PUBLISH)."""



cdef int _publish(BrokerCore broker, Message msg, double now, object skip) except -1:
    """Route one application message; returns the number of subscriptions it reached.

    The topic's targets come from the broker's match cache while the subscription tree has
    not changed (the same test as `BrokerCore._targets`, which fills the cache)."""
    cdef int reached
    cdef Targets entry = None
    if msg.retain:
        broker._retain(msg)
    topic = msg.topic
    if <long long>broker.subscriptions.generation == broker._match_generation:
        entry = broker._match_cache.get(topic)
    if entry is None:
        entry = broker._targets(topic)
    reached = _route(broker.sessions, entry.normal, msg, now, skip)
    if entry.shared:
        reached += broker._publish_shared(msg, entry.shared, now, skip)
    broker.stats.publish_routed += 1
    if not reached:
        broker.stats.dropped_no_subscribers += 1
        if broker.drop_hooks:
            broker.message_dropped(msg, msg.sender, DROP_NO_SUBSCRIBERS)
    return reached


cdef int _route(dict sessions, tuple normal, Message msg, double now, object skip) except -1:
    cdef int reached = 0
    cdef int qos
    cdef int msg_qos = msg.qos
    cdef bint retain
    cdef Target target
    cdef PyObject* found
    cdef Session session
    sender = msg.sender
    for target in normal:
        client_id = target.client_id
        if skip is not None and client_id in skip:
            continue
        if client_id == sender:
            target = target.local
            if target is None:
                continue  # [MQTT-3.8.3-3] No Local
        found = PyDict_GetItem(sessions, client_id)
        if found is NULL:
            continue
        session = <Session>found
        reached += 1
        qos = target.qos
        if qos > msg_qos:
            qos = msg_qos
        retain = msg.retain and target.retain_as_published
        if qos == 0:
            session.deliver_qos0(msg, retain, target.sub_ids, now)
        else:
            session.deliver(_new_delivery(msg, qos, retain, target.sub_ids), now)
    return reached
