"""Storage backends for durable broker state.

This release keeps all state in the broker's own memory structures (`backend = "memory"`):
sessions, subscriptions, retained messages, inflight and queued messages live in
`hbroker.broker.Broker` and `hbroker.session.Session`, and are lost on restart. Durable backends
(SQLite, PostgreSQL) plug in as hooks and are selected by `[storage] backend`.
"""
