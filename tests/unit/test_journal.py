"""The storage journal (hbroker.storage.journal): what each commit holds, and what clients see
before and after it. A restart rebuilds state from these rows and routes nothing again, so a
PUBLISH must be committed together with its routing (test_restore.py has the other half)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from hbroker_ext.codec import PUBACK, PUBREC
from journal_harness import Harness, Publisher, payloads

from hbroker.storage.base import Batch, StorageError


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def the_batch_with(batches: list[Batch], message_id: int) -> Batch:
    """The one batch that stored message `message_id`: its own row, or carried by the row of
    its only delivery."""
    found = [b for b in batches if any(row[0] == message_id for row in b.messages)
             or any(row[2] == message_id and row[10] is not None for row in b.deliveries)]
    assert len(found) == 1, f"message {message_id} stored by {len(found)} batches"
    return found[0]


def test_a_publish_is_committed_with_its_deliveries_and_retained_update_before_its_puback(
        tmp_path: Path) -> None:
    async def main() -> None:
        h = await Harness(tmp_path / "db").start()
        s1 = h.session("s1", "t/#")
        s2 = h.session("s2", "t/r")
        pub = Publisher(h.session("p", expiry=0))
        msg = h.publish(pub, "t/r", b"v", retain=True, packet_id=7)
        assert pub.acks() == [], "acknowledged before anything was committed"
        await h.committed()
        assert pub.acks() == [(PUBACK, 7, 0)]
        batch = the_batch_with(h.backend.batches, msg.store_id)
        # Two deliveries need it: a row of its own, which theirs reference.
        assert [row[:3] for row in batch.messages] == [(msg.store_id, "t/r", b"v")]
        assert sorted((row[0], row[2], row[10]) for row in batch.deliveries) == [
            ("s1", msg.store_id, None), ("s2", msg.store_id, None)]
        assert [row[:2] for row in batch.retained] == [("t/r", b"v")]
        assert [d.message for d in s1.queue] == [msg] == [d.message for d in s2.queue]
        await h.stop()

    run(main())


def test_a_qos2_publish_commits_its_packet_id_with_its_deliveries_before_its_pubrec(
        tmp_path: Path) -> None:
    async def main() -> None:
        h = await Harness(tmp_path / "db").start()
        h.session("s", "t/#", qos=2)
        pub = Publisher(h.session("p"))
        msg = h.publish(pub, "t/x", b"v", qos=2, packet_id=9)
        assert pub.acks() == []
        await h.committed()
        assert pub.acks() == [(PUBREC, 9, 0)]
        batch = the_batch_with(h.backend.batches, msg.store_id)
        assert ("p", 9) in batch.incoming_qos2
        assert [(row[0], row[2], row[3]) for row in batch.deliveries] == [
            ("s", msg.store_id, 2)]
        await h.stop()

    run(main())


def test_the_journal_is_one_holder_of_the_acknowledgement_among_others(
        tmp_path: Path) -> None:
    """A hook holding the PUBACK too: the commit alone does not send it, the hook's release
    alone does not either; it goes out when both are done."""
    async def main() -> None:
        for hook_first in (False, True):
            h = await Harness(tmp_path / f"db{hook_first}").start()
            h.session("s", "t/#")
            pub = Publisher(h.session("p", expiry=0))
            gate = h.backend.gate = asyncio.Event()
            h.publish(pub, "t/x", b"v", packet_id=4)
            ack = h.last_ack
            assert ack is not None
            ack.hold()  # the hook's hold
            if hook_first:
                ack.release()
                assert pub.acks() == []
            gate.set()
            await h.committed()
            if not hook_first:
                assert pub.acks() == []
                ack.release()
            assert pub.acks() == [(PUBACK, 4, 0)] and pub.deferred == 0
            await h.stop()

    run(main())


def test_a_publish_that_reaches_only_retained_state_writes_no_message_row(
        tmp_path: Path) -> None:
    """The retained table holds a retained message; a message row is only for deliveries."""
    async def main() -> None:
        h = await Harness(tmp_path / "db").start()
        pub = Publisher(h.session("p", expiry=0))
        h.publish(pub, "t/r", b"v", retain=True, packet_id=3)
        await h.committed()
        assert pub.acks() == [(PUBACK, 3, 0x10)]  # No matching subscribers
        assert [row[:2] for b in h.backend.batches for row in b.retained] == [("t/r", b"v")]
        assert not any(b.messages for b in h.backend.batches)
        await h.stop()

    run(main())


def test_deliveries_to_subscribers_are_held_until_the_commit_of_the_publish(
        tmp_path: Path) -> None:
    async def main() -> None:
        h = await Harness(tmp_path / "db").start()
        durable = h.online(h.session("s", "t/#"))
        clean = h.online(h.session("c", "t/#", expiry=0))
        pub = Publisher(h.session("p", expiry=0))
        gate = h.backend.gate = asyncio.Event()
        h.publish(pub, "t/x", b"v", packet_id=1)
        await h.until(lambda: h.journal.committing is not None, "the commit started")
        await asyncio.sleep(0)
        assert durable.data == clean.data == b"" and pub.acks() == []
        gate.set()
        await h.committed()
        assert payloads(durable.data) == payloads(clean.data) == [b"v"]
        assert pub.acks() == [(PUBACK, 1, 0)]
        await h.stop()

    run(main())


def test_a_message_with_one_delivery_is_one_row_deleted_after_the_puback(
        tmp_path: Path) -> None:
    """Rows per message to one online persistent subscriber: its delivery, carrying the
    message, written with the PUBLISH and deleted after the PUBACK (a lazy change)."""
    async def main() -> None:
        h = await Harness(tmp_path / "db").start()
        session = h.session("s", "t/#")
        h.online(session)
        pub = Publisher(h.session("p", expiry=0))
        msg = h.publish(pub, "t/x", b"v", packet_id=1)
        await h.committed()
        (packet_id,) = session.inflight
        session.on_puback(packet_id, time.monotonic())
        await h.committed()
        batches = h.backend.batches
        assert [r[2:] for b in batches for r in b.deliveries] == [
            (msg.store_id, 1, 0, None, 1, 1, None, "t/x", b"v", 1, 0, None, None, "p")]
        assert [r for b in batches for r in b.deliveries_deleted] == [("s", 1, 1)]
        assert not any(b.messages or b.messages_deleted for b in batches)
        state = await h.backend.load()
        assert state.messages == [] and state.deliveries == []
        await h.stop()

    run(main())


def test_a_queued_delivery_references_a_message_row_and_sending_it_rewrites_no_payload(
        tmp_path: Path) -> None:
    """A delivery that will change state (queued now, sent later) does not carry its message:
    the message has a row, and the delivery's later rows are small."""
    async def main() -> None:
        h = await Harness(tmp_path / "db").start()
        session = h.session("s", "t/#")
        pub = Publisher(h.session("p", expiry=0))
        msg = h.publish(pub, "t/x", b"queued", packet_id=1)
        await h.committed()
        h.online(session)
        session.drain(time.monotonic())
        await h.committed()
        assert [row[:3] for b in h.backend.batches for row in b.messages] == [
            (msg.store_id, "t/x", b"queued")]
        assert [(row[6], row[10]) for b in h.backend.batches for row in b.deliveries] == [
            (0, None), (*session.inflight, None)]
        await h.stop()

    run(main())


def test_closing_while_storage_fails_tries_once_more_and_gives_up(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A commit under way when the broker stops fails: `close` tries the pending changes once
    more and gives up, without a flood of commits started by the flushes that follow."""
    async def main() -> None:
        h = await Harness(tmp_path / "db").start()
        h.session("s", "t/#")
        pub = Publisher(h.session("p", expiry=0))
        h.backend.fail = StorageError("disk full", full=True)
        gate = h.backend.gate = asyncio.Event()
        h.publish(pub, "t/x", b"v", packet_id=1)
        await h.until(lambda: h.journal.committing is not None, "the commit started")
        closing = asyncio.ensure_future(h.journal.close(timeout=3.0))
        await asyncio.sleep(0)
        gate.set()
        await closing
        assert h.journal.failures == 2
        assert pub.refused == [(1, 0x97)]
        assert "changes of the last moments could not be stored" in caplog.text

    run(main())


def test_deliveries_a_session_completes_in_order_are_deleted_as_one_range(
        tmp_path: Path) -> None:
    """Seqs count per session, so another session's deliveries in between do not split it."""
    async def main() -> None:
        h = await Harness(tmp_path / "db").start()
        first = h.session("a", "t/#")
        h.online(first)
        h.session("b", "t/#")  # offline: keeps its copies
        pub = Publisher(h.session("p", expiry=0))
        for i in range(1, 11):
            h.publish(pub, "t/x", b"%d" % i, packet_id=i)
        await h.committed()
        now = time.monotonic()
        for packet_id in list(first.inflight):
            first.on_puback(packet_id, now)
        await h.committed()
        assert [r for b in h.backend.batches for r in b.deliveries_deleted] == [("a", 1, 10)]
        state = await h.backend.load()
        assert [(row[0], row[1]) for row in state.deliveries] == [("b", i) for i in range(1, 11)]
        await h.stop()

    run(main())


def test_a_publish_storage_refused_is_withdrawn_from_queues_and_retained_state(
        tmp_path: Path) -> None:
    """The publisher is refused (0x97 for a full disk), the offline session's queue loses
    the copy nobody has seen, and the retained message is the one before; the retried commit
    stores none of it."""
    async def main() -> None:
        h = await Harness(tmp_path / "db").start()
        session = h.session("s", "t/#")
        pub = Publisher(h.session("p", expiry=0))
        before = h.publish(pub, "t/r", b"before", retain=True, packet_id=1)
        await h.committed()
        h.backend.fail = StorageError("disk full", full=True)
        h.publish(pub, "t/r", b"refused", retain=True, packet_id=2)
        h.publish(pub, "t/r", b"", retain=True, packet_id=3)  # clears it: refused too
        await h.until(lambda: h.journal.degraded, "the commit failed")
        assert pub.refused == [(2, 0x97), (3, 0x97)]
        assert pub.acks() == [(PUBACK, 1, 0)]
        assert [d.message for d in session.queue] == [before]
        assert session.queued_bytes == len(b"before")
        assert h.broker.retained.get("t/r").payload == b"before"
        h.backend.fail = None
        await h.until(lambda: not h.journal.degraded, "storage recovered")
        await h.committed()
        state = await h.backend.load()
        assert [row[:2] for row in state.retained] == [("t/r", b"before")]
        assert [row[2] for row in state.messages] == [b"before"]
        assert [(row[2], row[10]) for row in state.deliveries] == [(before.store_id, None)]
        await h.stop()

    run(main())


def test_a_publish_storage_refused_stays_with_a_subscriber_it_was_sent_to(
        tmp_path: Path) -> None:
    """The output held behind a failed commit is released (the broker stays responsive):
    an online subscriber that was sent the message completes it; its row is stored by the
    retried commit, so a restart re-sends it with the same packet id."""
    async def main() -> None:
        h = await Harness(tmp_path / "db").start()
        session = h.session("s", "t/#")
        transport = h.online(session)
        pub = Publisher(h.session("p", expiry=0))
        h.backend.fail = StorageError("connection lost")
        h.publish(pub, "t/x", b"sent", packet_id=1)
        await h.until(lambda: h.journal.degraded, "the commit failed")
        assert pub.refused == [(1, 0x80)]
        assert payloads(transport.data) == [b"sent"]
        assert [d.message.payload for d in session.inflight.values()] == [b"sent"]
        h.backend.fail = None
        await h.until(lambda: not h.journal.degraded, "storage recovered")
        await h.committed()
        state = await h.backend.load()
        assert [(row[0], row[6]) for row in state.deliveries] == [("s", *session.inflight)]
        await h.stop()

    run(main())


def test_periodic_mode_commits_a_message_with_its_deliveries(tmp_path: Path) -> None:
    async def main() -> None:
        h = await Harness(tmp_path / "db", sync=False).start()
        h.session("s", "t/#")
        from hbroker.session import Message

        msg = Message("t/x", b"v", 1, False, None, 0.0, "p")
        h.broker.publish(msg, time.monotonic())  # acknowledged at once in periodic mode
        await h.committed()
        batch = the_batch_with(h.backend.batches, msg.store_id)
        assert [(row[0], row[2]) for row in batch.deliveries] == [("s", msg.store_id)]
        await h.stop()

    run(main())
