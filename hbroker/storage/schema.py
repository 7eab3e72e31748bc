"""The storage row layout, declared once: tables, their columns in row order, their types and
keys. Both backends' SQL follows from it (`create`, `migrations`, `statements`, `select`), and
the rows of a `Batch` (`hbroker.storage.journal.Journal.serialize`) and of a `StoredState`
(`hbroker.storage.restore`) are tuples of the columns of a table, in the order declared here.

Types are named for what they hold; each backend has its own SQL type for each (`SQLITE`,
`POSTGRES`): PostgreSQL stores flags and small numbers as SMALLINT (0/1 for flags, so that rows
read back equal the SQLite backend's), ids and sequence numbers as BIGINT, and compares key
text columns in the "C" collation, so that rows come back in the (byte) order SQLite returns
them in.

A column's `since` is the schema version that added it: version 1 created the tables with the
columns of version 1, each later version adds its columns at the end of their table (ALTER
TABLE ... ADD COLUMN, so they are nullable). A released column never changes: a change is a
new version, with its own migration.

Times are wall-clock seconds since the epoch (`time.time()`), so that expiry continues across a
restart from where it was; NULL means "never" or "not set".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

TEXT = "text"
BLOB = "blob"
REAL = "real"
FLAG = "flag"  # 0 or 1
SMALL = "small"  # a small number: a QoS, a version, a state
INT = "int"  # up to 2**31 - 1: a packet id, a subscription identifier
BIGINT = "bigint"  # a message id or a delivery sequence number

SQLITE = {TEXT: "TEXT", BLOB: "BLOB", REAL: "REAL", FLAG: "INTEGER", SMALL: "INTEGER",
          INT: "INTEGER", BIGINT: "INTEGER"}
POSTGRES = {TEXT: "TEXT", BLOB: "BYTEA", REAL: "DOUBLE PRECISION", FLAG: "SMALLINT",
            SMALL: "SMALLINT", INT: "INTEGER", BIGINT: "BIGINT"}


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str
    null: bool = False  # whether it may be NULL
    since: int = 1


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    # SQLite: keyed by its rowid (its key is one INTEGER column); the other tables are
    # WITHOUT ROWID.
    rowid: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


def _c(name: str, type_: str, *, null: bool = False, since: int = 1) -> Column:
    return Column(name, type_, null, since)


# A session that outlives its connection.
#   expiry_interval: seconds, NULL = never expires.
#   expires_at: when a disconnected session ends; NULL while its client is connected (after a
#               crash the session counts as disconnected from the restart) or if it never ends.
#   will: a packed message (topic, payload, qos, retain, packed properties) or NULL;
#   will_due: when a delayed will is due.
SESSIONS = Table("sessions", (
    _c("client_id", TEXT), _c("protocol_version", SMALL), _c("expiry_interval", REAL, null=True),
    _c("expires_at", REAL, null=True), _c("will", BLOB, null=True), _c("will_delay", REAL),
    _c("will_due", REAL, null=True), _c("next_packet_id", INT),
), key=("client_id",))

SUBSCRIPTIONS = Table("subscriptions", (
    _c("client_id", TEXT), _c("topic_filter", TEXT), _c("qos", SMALL), _c("no_local", FLAG),
    _c("retain_as_published", FLAG), _c("retain_handling", SMALL),
    _c("subscription_identifier", INT),
), key=("client_id", "topic_filter"))

RETAINED = Table("retained", (
    _c("topic", TEXT), _c("payload", BLOB), _c("qos", SMALL), _c("properties", BLOB, null=True),
    _c("expires_at", REAL, null=True),
), key=("topic",))

# A message that queued or inflight deliveries reference (unless its only delivery carries it,
# see DELIVERIES): written once, with the first delivery that references it, never changed, and
# deleted in the commit that deletes the last delivery that needs it. (A retained message lives
# in RETAINED only.)
MESSAGES = Table("messages", (
    _c("id", BIGINT), _c("topic", TEXT), _c("payload", BLOB), _c("qos", SMALL),
    _c("retain", FLAG), _c("properties", BLOB, null=True), _c("expires_at", REAL, null=True),
    _c("sender", TEXT, null=True),
), key=("id",), rowid=True)

# One message on its way to one session. packet_id 0: queued; otherwise inflight, with state 1
# (PUBLISH sent, awaiting PUBACK/PUBREC) or 2 (PUBREL sent, awaiting PUBCOMP). A QoS 1 delivery
# that was inflight when its row was first written (sent at once: its next change is its
# deletion) to the only session its message reached *carries* the message: the message_*
# columns hold it as a MESSAGES row would (topic, payload, qos, retain, properties, expires_at,
# sender) and no message row is written, so one persistent subscriber online costs one row per
# message. Otherwise they are NULL and message_id is a MESSAGES row; when both exist (a second
# delivery came later), the MESSAGES row is it. seq orders a session's deliveries (it counts
# per session); subscription_ids is a packed list. At start these rows are the sessions' queues
# and inflight windows as they were: stored messages are never routed again.
DELIVERIES = Table("deliveries", (
    _c("client_id", TEXT), _c("seq", BIGINT), _c("message_id", BIGINT), _c("qos", SMALL),
    _c("retain", FLAG), _c("subscription_ids", BLOB, null=True), _c("packet_id", INT),
    _c("state", SMALL), _c("share_group", TEXT, null=True),
    _c("message_topic", TEXT, null=True, since=2), _c("message_payload", BLOB, null=True, since=2),
    _c("message_qos", SMALL, null=True, since=2), _c("message_retain", FLAG, null=True, since=2),
    _c("message_properties", BLOB, null=True, since=2),
    _c("message_expires_at", REAL, null=True, since=2),
    _c("message_sender", TEXT, null=True, since=2),
), key=("client_id", "seq"))

# QoS 2 packet ids received and PUBRECed, awaiting PUBREL [MQTT-4.3.3-9].
INCOMING_QOS2 = Table("incoming_qos2", (
    _c("client_id", TEXT), _c("packet_id", INT),
), key=("client_id", "packet_id"))

SCHEMA = (SESSIONS, SUBSCRIPTIONS, RETAINED, MESSAGES, DELIVERIES, INCOMING_QOS2)
TABLES = tuple(t.name for t in SCHEMA)
BY_NAME = {t.name: t for t in SCHEMA}

# Bumped whenever the schema changes; each backend migrates older schemas on open.
# 2: a delivery may carry its message (the message_* columns of deliveries).
SCHEMA_VERSION = max(c.since for t in SCHEMA for c in t.columns)

# The statements of a batch, in the order `Batch` documents: (the Batch part whose rows they
# take, what they do, the table). "upsert": a whole row that replaces the row with the same
# key (or, when every column is key, is kept if there is one); "key": delete the row with that
# key; "range": delete the rows whose key starts with the first values and whose last key
# column lies between the last two, both ends included; "client": delete every row of a
# client id (a session ended: its rows go before the session's own, and before any of a new
# session with the same client id).
PLAN: tuple[tuple[str, str, str], ...] = (
    ("sessions_deleted", "client", "subscriptions"),
    ("sessions_deleted", "client", "deliveries"),
    ("sessions_deleted", "client", "incoming_qos2"),
    ("sessions_deleted", "key", "sessions"),
    ("sessions", "upsert", "sessions"),
    ("subscriptions", "upsert", "subscriptions"),
    ("subscriptions_deleted", "key", "subscriptions"),
    ("messages", "upsert", "messages"),
    ("deliveries", "upsert", "deliveries"),
    ("deliveries_deleted", "range", "deliveries"),
    ("messages_deleted", "range", "messages"),
    ("incoming_qos2", "upsert", "incoming_qos2"),
    ("incoming_qos2_deleted", "key", "incoming_qos2"),
    ("retained", "upsert", "retained"),
    ("retained_deleted", "key", "retained"),
)


# What `hbroker storage inspect` reads (the same SQL on both backends): per session, in client id
# order, these fields; the number of stored messages (rows of their own or carried by their
# only delivery); the number of retained messages.
INSPECT_FIELDS = ("client_id", "protocol_version", "expiry_interval", "expires_at", "will",
                  "subscriptions", "queued", "inflight", "incoming_qos2")
INSPECT_SESSIONS = (
    "SELECT client_id, protocol_version, expiry_interval, expires_at, will IS NOT NULL, "
    "(SELECT count(*) FROM subscriptions s WHERE s.client_id = x.client_id), "
    "(SELECT count(*) FROM deliveries d WHERE d.client_id = x.client_id AND d.packet_id = 0), "
    "(SELECT count(*) FROM deliveries d WHERE d.client_id = x.client_id AND d.packet_id != 0), "
    "(SELECT count(*) FROM incoming_qos2 q WHERE q.client_id = x.client_id) "
    "FROM sessions x ORDER BY client_id")
INSPECT_MESSAGES = (
    "SELECT count(*) FROM (SELECT id FROM messages UNION "
    "SELECT message_id FROM deliveries WHERE message_payload IS NOT NULL) m")
INSPECT_RETAINED = "SELECT count(*) FROM retained"


def inspected_session(row: tuple) -> dict:
    """One row of INSPECT_SESSIONS as `Storage.inspect` reports it."""
    session = dict(zip(INSPECT_FIELDS, row, strict=True))
    session["will"] = bool(session["will"])
    return session


class Dialect(ABC):
    """How one backend spells SQL: its types, its parameters, its upsert."""

    def __init__(self, name: str, types: dict[str, str]) -> None:
        self.name = name
        self.types = types

    @abstractmethod
    def param(self, n: int) -> str:
        """The n-th parameter of a statement (from 1)."""

    def params(self, count: int, first: int = 1) -> list[str]:
        return [self.param(i) for i in range(first, first + count)]

    def column(self, table: Table, column: Column) -> str:
        """A column's definition in CREATE TABLE."""
        text = f"{column.name} {self.types[column.type]}"
        if table.key == (column.name,):
            return text + " PRIMARY KEY"
        return text if column.null else text + " NOT NULL"

    def create(self, table: Table, version: int = 1) -> str:
        lines = [self.column(table, c) for c in table.columns if c.since <= version]
        if len(table.key) > 1:
            lines.append(f"PRIMARY KEY ({', '.join(table.key)})")
        body = ",\n    ".join(lines)
        return f"CREATE TABLE {table.name} (\n    {body}\n){self.table_options(table)}"

    def table_options(self, table: Table) -> str:
        return ""

    @abstractmethod
    def add_columns(self, table: Table, columns: list[Column]) -> str:
        """ALTER TABLE adding `columns` (a migration)."""

    @abstractmethod
    def upsert(self, table: Table) -> str:
        """INSERT of a row that replaces the row with the same key."""

    def where(self, columns: tuple[str, ...] | list[str]) -> str:
        return " AND ".join(f"{c} = {p}" for c, p in zip(columns, self.params(len(columns)),
                                                        strict=True))

    def statement(self, kind: str, table: Table) -> str:
        if kind == "upsert":
            return self.upsert(table)
        if kind == "key":
            return f"DELETE FROM {table.name} WHERE {self.where(table.key)}"
        if kind == "client":
            return f"DELETE FROM {table.name} WHERE {self.where(('client_id',))}"
        if kind == "range":
            *equal, last = table.key
            low, high = self.params(2, len(equal) + 1)
            between = f"{last} BETWEEN {low} AND {high}"
            return f"DELETE FROM {table.name} WHERE " + \
                " AND ".join(([self.where(equal)] if equal else []) + [between])
        raise ValueError(f"no statement kind {kind!r}")

    def statements(self) -> tuple[tuple[str, str], ...]:
        """(Batch part, SQL) for every step of `PLAN`, in order."""
        return tuple((part, self.statement(kind, BY_NAME[table])) for part, kind, table in PLAN)

    def migrations(self) -> list[str]:
        """migrations()[n] takes a database at schema version n to version n + 1."""
        steps = [";\n".join(self.create(t) for t in SCHEMA) + ";\n"]
        for version in range(2, SCHEMA_VERSION + 1):
            parts = []
            for table in SCHEMA:
                added = [c for c in table.columns if c.since == version]
                assert all(c.null for c in added), "a column added later must be nullable"
                if added:
                    parts.append(self.add_columns(table, added))
            steps.append("".join(parts))
        return steps

    def select(self, table: Table) -> str:
        """All rows of `table`, in row order, ordered by key."""
        return (f"SELECT {', '.join(table.names)} FROM {table.name} "
                f"ORDER BY {', '.join(table.key)}")


class SQLiteDialect(Dialect):
    def __init__(self) -> None:
        super().__init__("sqlite", SQLITE)

    def param(self, n: int) -> str:
        return "?"

    def table_options(self, table: Table) -> str:
        return "" if table.rowid else " WITHOUT ROWID"

    def add_columns(self, table: Table, columns: list[Column]) -> str:
        return "".join(f"ALTER TABLE {table.name} ADD COLUMN {c.name} {self.types[c.type]};\n"
                       for c in columns)

    def upsert(self, table: Table) -> str:
        # INSERT OR REPLACE: the row with the same key goes, the new one takes its place.
        verb = "OR IGNORE" if set(table.names) == set(table.key) else "OR REPLACE"
        return (f"INSERT {verb} INTO {table.name} ({', '.join(table.names)}) "
                f"VALUES ({', '.join(self.params(len(table.columns)))})")


class PostgresDialect(Dialect):
    def __init__(self) -> None:
        super().__init__("postgres", POSTGRES)

    def param(self, n: int) -> str:
        return f"${n}"

    def column(self, table: Table, column: Column) -> str:
        text = super().column(table, column)
        if column.type == TEXT and column.name in table.key:
            name, _, rest = text.partition(" TEXT")
            return f'{name} TEXT COLLATE "C"{rest}'
        return text

    def add_columns(self, table: Table, columns: list[Column]) -> str:
        adds = ",\n    ".join(f"ADD COLUMN {c.name} {self.types[c.type]}" for c in columns)
        return f"ALTER TABLE {table.name}\n    {adds};\n"

    def upsert(self, table: Table) -> str:
        """INSERT of a whole row that replaces the row with the same key (INSERT OR
        REPLACE)."""
        columns, keys = table.names, table.key
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in keys)
        action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
        return (f"INSERT INTO {table.name} ({', '.join(columns)}) "
                f"VALUES ({', '.join(self.params(len(columns)))}) "
                f"ON CONFLICT ({', '.join(keys)}) {action}")
