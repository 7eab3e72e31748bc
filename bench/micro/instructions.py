"""Instructions per message on the in-process publish path, counted by callgrind.

The path is the one `test_publish_path_micro.py` times: a read of PUBLISHes through
`Connection.data_received` (framer, PUBLISH handler, match cache, fan-out into the subscribers'
output), the broker's flush to fake transports and, at QoS 1, the subscribers' PUBACKs fed
back. Each case runs twice under `valgrind --tool=callgrind`, with the same setup and warm-up
and a different number of reads; the difference of the two totals, divided by the extra
messages, is what one message costs (setup, imports and interpreter start cancel out).

```
.venv/bin/python bench/micro/instructions.py              # the three cases, about a minute
.venv/bin/python bench/micro/instructions.py --hook noop  # with a "message published" hook
```

`--hook noop` installs a `message_published` upcall that takes no hold (what a hook that only
looks costs), `--hook hold` one that holds the acknowledgement and releases it at once (the
HeldAck path). Counts are deterministic to a few instructions per message
(PYTHONHASHSEED is fixed); a change of more than 3 % with no hook is a regression
(issue 16).
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

# name -> (protocol version, QoS, subscribers)
CASES = {
    "qos0": (4, 0, 1),
    "qos1": (5, 1, 1),
    "fanout8": (5, 0, 8),
}
BATCH = 20  # PUBLISHes per read
WARMUP = 50  # reads before the counted ones (caches filled, free lists warm)
READS = (100, 300)  # the two runs; their difference is counted


def driver(case: str, reads: int, hook: str) -> None:
    """The process valgrind runs: setup, warm-up, then `reads` reads of BATCH PUBLISHes."""
    sys.path.insert(0, str(HERE))
    import test_publish_path_micro as micro

    from hbroker.server import GC_THRESHOLDS

    micro.BATCH = BATCH
    version, qos, subscribers = CASES[case]
    if hook != "none":
        install_hook(micro, hook)
    setup = micro.Setup(version, qos, subscribers)
    # The collector as the server sets it once started (what was built at start is frozen):
    # otherwise a full collection of the interpreter's start-up objects, landing in one run
    # and not in the other, moves a count by a few percent.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    for _ in range(WARMUP + reads):
        setup.one_read()
    assert all(t.packets == setup.rounds * BATCH for _, t in setup.subscribers)


def install_hook(micro: Any, kind: str) -> None:
    """A Broker whose `message_published` upcall is on: `noop` returns None (no hold), `hold`
    holds the acknowledgement and releases it at once, as a hook whose work is done in the
    call would."""
    from hbroker.broker import Broker

    try:
        from hbroker.acknowledgement import HeldAck
    except ImportError:  # a tree without the HeldAck of the hook seam: a stand-in like it
        HeldAck = held_ack_stand_in()

    class HookedBroker(Broker):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.publish_hooks = True

        if kind == "noop":
            def message_published(self, conn: Any, msg: Any, packet_id: int) -> None:
                return None
        else:
            def message_published(self, conn: Any, msg: Any, packet_id: int) -> Any:
                if not packet_id:
                    return None
                ack = HeldAck(conn, msg, packet_id)
                ack.hold()
                ack.release()
                return ack

    micro.Broker = HookedBroker


def held_ack_stand_in() -> type:
    """What hbroker.acknowledgement.HeldAck does for a hold released at once: the ack queued
    on the connection in PUBLISH order, written when done."""
    from collections import deque

    from hbroker_ext.codec import PUBACK, PUBREC, encode_ack

    class HeldAck:
        __slots__ = ("conn", "msg", "packet_id", "code", "holders")

        def __init__(self, conn: Any, msg: Any, packet_id: int) -> None:
            self.conn, self.msg, self.packet_id = conn, msg, packet_id
            self.code = 0
            self.holders = 1
            if conn.held_acks is None:
                conn.held_acks = deque()
            conn.held_acks.append(self)
            conn.deferred += 1

        def hold(self) -> None:
            self.holders += 1

        def routed(self, reached: int) -> None:
            if not reached and self.conn.protocol_version == 5:
                self.code = 0x10
            self.release()

        def release(self) -> None:
            self.holders -= 1
            conn = self.conn
            out = []
            while conn.held_acks and conn.held_acks[0].holders == 0:
                ack = conn.held_acks.popleft()
                conn.deferred -= 1
                out.append(encode_ack(PUBACK if ack.msg.qos == 1 else PUBREC, ack.packet_id,
                                      ack.code, conn.protocol_version))
            if out:
                conn.write_output(out)

    return HeldAck


def count(case: str, reads: int, hook: str, keep: Path | None) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        env = dict(os.environ, PYTHONHASHSEED="0")
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
             sys.executable, __file__, "--driver", case, str(reads), "--hook", hook],
            check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        text = out.read_text()
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            (keep / f"callgrind.{case}.{hook}.{reads}").write_text(text)
    match = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
    if match is None:
        raise RuntimeError("no total in callgrind's output")
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="*", metavar="CASE",
                        help=f"of {', '.join(CASES)} (default: all)")
    parser.add_argument("--hook", choices=("none", "noop", "hold"), default="none")
    parser.add_argument("--keep", type=Path, help="keep the callgrind files in this folder")
    parser.add_argument("--driver", nargs=2, metavar=("CASE", "READS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.driver:
        driver(args.driver[0], int(args.driver[1]), args.hook)
        return
    low, high = READS
    for case in args.cases or CASES:
        if case not in CASES:
            parser.error(f"unknown case {case!r}")
        version, qos, subscribers = CASES[case]
        first = count(case, low, args.hook, args.keep)
        second = count(case, high, args.hook, args.keep)
        per_message = (second - first) / ((high - low) * BATCH)
        name = "5.0" if version == 5 else "3.1.1"
        print(f"{case:8} QoS {qos}, {name}, 1 → {subscribers}, reads of {BATCH}, "
              f"hook {args.hook}: {per_message:,.0f} instructions per message", flush=True)


if __name__ == "__main__":
    main()
