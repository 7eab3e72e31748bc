"""A ledger hook: the publisher's PUBACK/PUBREC waits until the message is on disk.

    hbroker serve -c hbroker.toml --hook examples/hooks/ledger.py:Ledger

Every QoS 1/2 message published to `ledger/#` is appended to `ledger.jsonl` (or the file
HBROKER_LEDGER names) and fsynced before its publisher is acknowledged: the hook holds the
acknowledgement (`ack.hold()`) and releases it once the line is durable. The messages of one
loop iteration are written by one thread in one write and one fsync, and their
acknowledgements released together (`grouped()`: one write per connection), as the storage
journal does for a commit. A message that cannot be written is refused (`ack.refuse`): a 5.0
publisher gets 0x80 in its PUBACK, a 3.1.1 one is disconnected and sends it again.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from hbroker.acknowledgement import HeldAck, grouped
from hbroker.hooks import ClientInfo, Hook
from hbroker.reason_codes import ReasonCode


class Ledger(Hook):
    name = "ledger"
    prefix = "ledger/"

    def __init__(self, path: str | None = None) -> None:
        self.path = path or os.environ.get("HBROKER_LEDGER", "ledger.jsonl")
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="ledger")
        self.batch: list[tuple[str, HeldAck | None]] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    def on_start(self, broker: Any) -> None:
        self.loop = broker.loop

    def on_stop(self) -> None:
        self.executor.shutdown(wait=True)

    def on_message_published(self, client: ClientInfo, msg: Any,
                             ack: HeldAck | None) -> None:
        if not msg.topic.startswith(self.prefix):
            return
        line = json.dumps({"client_id": client.client_id if client else None,
                           "topic": msg.topic, "qos": msg.qos,
                           "payload": base64.b64encode(msg.payload).decode()})
        if ack is not None:
            ack.hold()  # released once the line is fsynced
        if not self.batch:
            assert self.loop is not None
            self.loop.call_soon(self.write_batch)  # after this loop iteration's PUBLISHes
        self.batch.append((line, ack))

    def write_batch(self) -> None:
        batch, self.batch = self.batch, []
        assert self.loop is not None
        future = self.loop.run_in_executor(self.executor, self.append,
                                           [line for line, _ in batch])
        future.add_done_callback(lambda f: self.written(f, [a for _, a in batch if a]))

    def append(self, lines: list[str]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())

    def written(self, future: asyncio.Future, acks: list[HeldAck]) -> None:
        failed = future.exception()
        with grouped():
            for ack in acks:
                if failed is None:
                    ack.release()
                else:
                    ack.refuse(ReasonCode.UNSPECIFIED_ERROR, "ledger_unavailable")
