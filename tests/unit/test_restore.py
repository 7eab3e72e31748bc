"""Restoring at start (hbroker.storage.restore) rebuilds the state the rows describe and routes
nothing again: retained messages from the retained table, each session's queue and inflight
window from its own delivery rows, incoming QoS 2 packet ids from theirs."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgpack
from hbroker_ext.codec import PUBACK
from journal_harness import Harness, Publisher

from hbroker.storage.base import Batch
from hbroker.storage.sqlite import SQLiteStorage


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


async def store(path: Path, batch: Batch) -> None:
    """Rows as a broker would have left them."""
    storage = SQLiteStorage(str(path))
    await storage.open()
    await storage.commit(batch)
    await storage.close()


def offline_session(client_id: str, will: bytes | None = None,
                    connected: bool = False) -> tuple:
    expires_at = None if connected else time.time() + 3600
    return (client_id, 5, 3600.0, expires_at, will, 0.0, None, 1)


def subscription(client_id: str, topic_filter: str, qos: int = 1) -> tuple:
    return (client_id, topic_filter, qos, 0, 0, 0, 0)


def message(msg_id: int, topic: str, payload: bytes, qos: int = 1, retain: bool = False
            ) -> tuple:
    return (msg_id, topic, payload, qos, int(retain), None, None, "p")


def delivery(client_id: str, seq: int, msg_id: int, qos: int = 1, packet_id: int = 0,
             state: int = 0, carries: tuple | None = None) -> tuple:
    """A delivery row; `carries`: the message (a messages row) it carries, if any."""
    return (client_id, seq, msg_id, qos, 0, None, packet_id, state, None,
            *(carries[1:] if carries else (None,) * 7))


def test_retained_messages_come_from_the_retained_table_not_from_queued_copies(
        tmp_path: Path) -> None:
    """The rows of issue 15 item 4: the retained `new`, and `old` queued for a session (its
    queue was full when `new` came). `old` stays that session's, `new` stays retained."""
    async def main() -> None:
        await store(tmp_path / "db", Batch(
            sessions=[offline_session("s")], subscriptions=[subscription("s", "t/#")],
            messages=[message(1, "t/r", b"old", retain=True)],
            deliveries=[delivery("s", 1, 1)],
            retained=[("t/r", b"new", 1, None, None)]))
        h = await Harness(tmp_path / "db").start()
        assert h.broker.retained.get("t/r").payload == b"new"
        assert [d.message.payload for d in h.broker.sessions["s"].queue] == [b"old"]
        assert h.broker.stats.publish_routed == 0
        await h.stop()

    run(main())


def test_a_stored_message_reaches_only_the_sessions_with_a_row_for_it(tmp_path: Path) -> None:
    """`acked` acknowledged the message (its row is gone), `later` subscribed after it was
    published (it never had one): neither gets it from a restart."""
    async def main() -> None:
        await store(tmp_path / "db", Batch(
            sessions=[offline_session(c) for c in ("queued", "acked", "later")],
            subscriptions=[subscription(c, "t/#") for c in ("queued", "acked", "later")],
            messages=[message(1, "t/x", b"m")],
            deliveries=[delivery("queued", 1, 1)]))
        h = await Harness(tmp_path / "db").start()
        sessions = h.broker.sessions
        assert [d.message.payload for d in sessions["queued"].queue] == [b"m"]
        assert not sessions["acked"].queue and not sessions["later"].queue
        assert h.broker.stats.publish_routed == 0
        await h.stop()

    run(main())


def test_queues_and_inflight_windows_come_back_in_order_with_their_packet_ids(
        tmp_path: Path) -> None:
    async def main() -> None:
        await store(tmp_path / "db", Batch(
            sessions=[offline_session("s")], subscriptions=[subscription("s", "t/#", 2)],
            messages=[message(i, "t/x", b"m%d" % i, qos=2) for i in range(1, 6)],
            deliveries=[delivery("s", 10, 1, 2, packet_id=7, state=2),
                        delivery("s", 11, 2, 2, packet_id=8, state=1),
                        delivery("s", 12, 3, 1),
                        delivery("s", 14, 5, 2),
                        delivery("s", 13, 4, 0)]))
        h = await Harness(tmp_path / "db").start()
        session = h.broker.sessions["s"]
        assert {pid: (d.message.payload, d.state) for pid, d in session.inflight.items()} == {
            7: (b"m1", 2), 8: (b"m2", 1)}
        assert [(d.message.payload, d.qos) for d in session.queue] == [
            (b"m3", 1), (b"m4", 0), (b"m5", 2)]
        assert session.queued_bytes == 6
        assert h.counts["deliveries"] == 5
        await h.stop()

    run(main())


def test_a_delivery_carrying_its_message_comes_back_with_it(tmp_path: Path) -> None:
    """The only delivery of a message carries it; where the message also has a row (a second
    delivery came later), both deliveries share the row's message."""
    async def main() -> None:
        carried = message(5, "t/x", b"carried", qos=2, retain=True)
        shared = message(6, "t/y", b"shared")
        await store(tmp_path / "db", Batch(
            sessions=[offline_session("a"), offline_session("b")],
            messages=[shared],
            deliveries=[delivery("a", 1, 5, 2, carries=carried),
                        delivery("a", 2, 6, carries=shared), delivery("b", 1, 6)]))
        h = await Harness(tmp_path / "db").start()
        a, b = h.broker.sessions["a"], h.broker.sessions["b"]
        first, second = a.queue
        assert (first.message.topic, first.message.payload, first.message.qos,
                first.message.retain, first.message.sender) == ("t/x", b"carried", 2, True, "p")
        assert second.message is b.queue[0].message and second.message.store_refs == 2
        assert (h.counts["messages"], h.counts["messages_deleted"]) == (2, 0)
        assert h.journal.next_message_id == 7
        await h.stop()

    run(main())


def test_message_rows_no_delivery_references_are_deleted_not_routed(tmp_path: Path) -> None:
    async def main() -> None:
        await store(tmp_path / "db", Batch(
            sessions=[offline_session("s")], subscriptions=[subscription("s", "t/#")],
            messages=[message(1, "t/x", b"orphan", retain=True), message(2, "t/x", b"kept")],
            deliveries=[delivery("s", 1, 2)]))
        h = await Harness(tmp_path / "db").start()
        assert [d.message.payload for d in h.broker.sessions["s"].queue] == [b"kept"]
        assert h.broker.retained.get("t/x") is None
        assert (h.counts["messages"], h.counts["messages_deleted"]) == (1, 1)
        await h.committed()
        assert [row[2] for row in (await h.backend.load()).messages] == [b"kept"]
        await h.stop()

    run(main())


def test_incoming_qos2_packet_ids_come_back_so_a_resent_publish_is_not_routed_again(
        tmp_path: Path) -> None:
    """A crash after the commit of a QoS 2 PUBLISH, before its PUBREC reached the client: the
    client sends it again with the same packet id, and the broker finds the id waiting for
    PUBREL (routing.pyx answers PUBREC without routing it) while the subscriber's queue has
    the message once."""
    async def main() -> None:
        h = await Harness(tmp_path / "db").start()
        h.session("s", "t/#", qos=2)
        pub = Publisher(h.session("p"))
        h.publish(pub, "t/x", b"once", qos=2, packet_id=5)
        await h.until(lambda: h.backend.batches and h.journal.committing is None,
                      "the PUBLISH was committed")
        await h.crash()

        h = await Harness(tmp_path / "db").start()
        assert 5 in h.broker.sessions["p"].awaiting_pubrel
        assert [d.message.payload for d in h.broker.sessions["s"].queue] == [b"once"]
        await h.stop()

    run(main())


def test_the_issue_scenario_survives_sigterm_and_a_crash_with_the_newest_retained_message(
        tmp_path: Path) -> None:
    """max_queued_messages = 1: `old` and `new` retained on t/r, `s` keeps `old`; after a
    restart `new` is retained, `s` has `old` once, and `later` (subscribed after both) has
    nothing."""
    async def main() -> None:
        for n, stop in enumerate(("stop", "crash")):
            path = tmp_path / f"db{n}"
            h = await Harness(path, max_queued_messages=1).start()
            h.session("s", "t/#")
            pub = Publisher(h.session("p", expiry=0))
            h.publish(pub, "t/r", b"old", retain=True, packet_id=1)
            h.publish(pub, "t/r", b"new", retain=True, packet_id=2)
            await h.until(lambda p=pub: len(p.acks()) == 2, "both PUBLISHes acknowledged")
            assert [a[0] for a in pub.acks()] == [PUBACK, PUBACK]
            h.session("later", "t/#")
            await h.until(lambda j=h.journal: not j.current.urgent and j.committing is None,
                          "the subscription was committed")
            await getattr(h, stop)()

            h = await Harness(path, max_queued_messages=1).start()
            assert h.broker.retained.get("t/r").payload == b"new", stop
            sessions = h.broker.sessions
            assert [d.message.payload for d in sessions["s"].queue] == [b"old"], stop
            assert not sessions["later"].queue, stop
            await h.stop()

    run(main())


def test_the_will_of_a_session_connected_at_a_crash_is_published_once(tmp_path: Path) -> None:
    """A will is a new message, not a replay: published to the subscriptions restored, and
    taken off its session in the same commit as its deliveries, so that a second restart does
    not publish it again."""
    async def main() -> None:
        will = msgpack.packb(["dev/lost", b"gone", 1, False, None], use_bin_type=True)
        await store(tmp_path / "db", Batch(
            sessions=[offline_session("dev", will=will, connected=True),
                      offline_session("watcher")],
            subscriptions=[subscription("watcher", "dev/#")]))
        h = await Harness(tmp_path / "db").start()
        assert h.broker.stats.wills_published == 1
        assert [d.message.payload for d in h.broker.sessions["watcher"].queue] == [b"gone"]
        await h.until(lambda: h.journal.commits >= 1 and h.journal.committing is None,
                      "the will was committed")
        await h.crash()

        h = await Harness(tmp_path / "db").start()
        assert h.broker.stats.wills_published == 0
        assert h.broker.sessions["dev"].will is None
        assert [d.message.payload for d in h.broker.sessions["watcher"].queue] == [b"gone"]
        await h.stop()

    run(main())
