#!/usr/bin/env python3
"""Writes the fuzzer's seed corpus (c_agent/fuzz/corpus/) from the shared HARCP vectors: every
valid and reject frame, and every valid frame's payload alone (msgpack seeds). Run it again
after the vectors change; it replaces the corpus."""

import json
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
VECTORS = HERE.parents[1] / "tests" / "vectors" / "harcp"


def main() -> None:
    corpus = HERE / "corpus"
    shutil.rmtree(corpus, ignore_errors=True)
    corpus.mkdir()
    for kind in ("valid", "reject"):
        for v in json.loads((VECTORS / f"{kind}.json").read_text())["vectors"]:
            (corpus / f"{kind}-{v['name']}").write_bytes(bytes.fromhex(v["frame"]))
            if kind == "valid":
                payload = bytes.fromhex(v["fields"]["payload_hex"])
                (corpus / f"payload-{v['name']}").write_bytes(payload)
    print(f"{len(list(corpus.iterdir()))} seeds in {corpus}")


if __name__ == "__main__":
    main()
