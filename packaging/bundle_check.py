"""The build's check that the single-file binary holds every module the broker can load.

Two halves, run by `packaging/hbroker.spec`:

- in the development interpreter, `python packaging/bundle_check.py --list ROOT` prints the
  modules the broker can load at run time, one a line: every module of `hbroker` and
  `hbroker_ext` (found as files in the source tree, not through imports), every module their
  code names in an import statement (lazy imports inside functions included), and everything
  in `sys.modules` after importing all of them and running the probes below (what the
  third-party packages load behind those names);
- in the frozen binary, `hbroker --check-bundle FILE` (a hidden argument of
  `packaging/hbroker_entry.py`) runs the same probes, then imports every module named in FILE,
  and exits 1 naming each one that is missing. The spec deletes the binary and fails the build.

The probes drive the code paths a running broker takes: a SQLite store opened, loaded and
closed; a PostgreSQL connection attempt through asyncpg (to a closed loopback port: it must
fail with the broker's own StorageError, not an ImportError); a broker under uvloop that
accepts an MQTT CONNECT and answers CONNACK; a NATS connection of the `[cluster]` table with
an nkey seed over TLS (nats-py, which imports `nkeys` only when it signs with one), to a closed
port; msgpack's compiled packer (it falls back to pure Python in silence when `_cmsgpack` is
missing); `--version`.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import os
import re
import socket
import sys
import tempfile
import traceback
from pathlib import Path

FIRST_PARTY = ("hbroker", "hbroker_ext")

# Modules of the development interpreter that a frozen program has no use for: site set-up,
# the editable install's finder, this checker run as a script.
DEV_ONLY = {"__main__", "site", "sitecustomize", "usercustomize", "_sitebuiltins",
            "_distutils_hack", "bundle_check"}
DEV_ONLY_PREFIXES = ("__editable__", "_virtualenv", "_distutils_hack.")

# Python imports in Cython sources (`cimport` lines are compile-time only).
_PYX_IMPORT = re.compile(r"^\s*(?:import\s+([\w.]+(?:\s*,\s*[\w.]+)*)|from\s+([\w.]+)\s+import\b)",
                         re.MULTILINE)


def included_sources(directory: Path) -> set[str]:
    """The `.pyx` files of `directory` compiled as part of another module (`include
    "session.pyx"` in routing.pyx): not modules of their own."""
    return {line.split(None, 1)[1].strip().strip("\"'")
            for pyx in directory.glob("*.pyx")
            for line in pyx.read_text(encoding="utf-8").splitlines()
            if line.startswith("include ")}


def first_party_modules(root: Path) -> list[str]:
    """Every module of hbroker and hbroker_ext, from the files of the source tree: `.py`
    modules and the `.pyx` sources of the compiled extensions. `hbroker/__main__.py` (for
    `python -m hbroker`) is left out: importing it runs the CLI, and the binary has its own
    entry point."""
    names: set[str] = set()
    for package in FIRST_PARTY:
        for path in (root / package).rglob("*"):
            if path.suffix not in (".py", ".pyx") or "__pycache__" in path.parts:
                continue
            if path.suffix == ".pyx" and path.name in included_sources(path.parent):
                continue
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__main__":
                continue
            if parts[-1] == "__init__":
                parts.pop()
            names.add(".".join(parts))
    return sorted(names)


def imported_names(root: Path) -> set[str]:
    """Every module named by an import statement in first-party code, at any depth (lazy
    imports inside functions too), with each parent package."""
    names: set[str] = set()
    for package in FIRST_PARTY:
        for path in (root / package).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    if node.module != "__future__":
                        names.add(node.module)
        for path in (root / package).rglob("*.pyx"):
            for m in _PYX_IMPORT.finditer(path.read_text(encoding="utf-8")):
                for name in re.split(r"\s*,\s*", m.group(1) or m.group(2)):
                    if name.split(".")[0] not in ("cython", "cpython", "libc", "libcpp"):
                        names.add(name)
    for name in list(names):
        parts = name.split(".")
        names.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return names


# -- probes: the run-time code paths, in whichever interpreter runs this ---------------------

def _probe_msgpack() -> None:
    import msgpack

    if msgpack.Packer.__module__ != "msgpack._cmsgpack":
        raise RuntimeError(f"msgpack runs its pure-Python fallback ({msgpack.Packer.__module__})"
                           ": msgpack._cmsgpack is missing")
    assert msgpack.unpackb(msgpack.packb({"a": [1, b"x"]})) == {"a": [1, b"x"]}


async def _probe_sqlite(directory: str) -> None:
    from hbroker.storage.sqlite import SQLiteStorage

    store = SQLiteStorage(os.path.join(directory, "probe.db"), fsync=False)
    await store.open()
    await store.load()
    await store.inspect()
    await store.close()


async def _probe_postgres() -> None:
    from hbroker.storage import StorageError
    from hbroker.storage.postgres import PostgresStorage

    with socket.socket() as s:  # a loopback port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = PostgresStorage(f"postgresql://probe:secret@127.0.0.1:{port}/probe?sslmode=prefer",
                            connect_timeout=5.0)
    try:
        await store.open()
    except StorageError:
        return
    finally:
        await store.close()
    raise RuntimeError("a PostgreSQL connection to a closed port did not fail")


async def _probe_nats(directory: str) -> None:
    """hbroker.cluster.nats_connection.connect as a clustered broker calls it, with an nkey
    seed and TLS, to a loopback port that nothing listens on: the first refusal ends it."""
    import nkeys

    from hbroker.cluster.nats_connection import connect
    from hbroker.config import parse_config

    seed = os.path.join(directory, "probe.nk")
    with open(seed, "wb") as fh:
        fh.write(nkeys.encode_seed(bytes(32), nkeys.PREFIX_BYTE_USER))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = parse_config({"cluster": {"backend": "nats", "servers": [f"tls://127.0.0.1:{port}"],
                                       "name": "probe", "nkey_seed_file": seed}}, "<probe>")
    assert config.cluster is not None

    class Refused(Exception):
        pass

    async def refused(exc: Exception) -> None:
        raise Refused from exc

    try:
        await connect(config.cluster, name="probe", on_error=refused)
    except Refused:
        return
    raise RuntimeError("a NATS connection to a closed port did not fail")


async def _probe_broker() -> None:
    """A broker on a free loopback port accepts an MQTT 3.1.1 CONNECT and answers CONNACK."""
    from hbroker.config import parse_config
    from hbroker.server import Server

    config = parse_config({"listeners": [{"host": "127.0.0.1", "port": 0}],
                           "storage": {"backend": "memory"}}, "<probe>")
    server = Server(config)
    await server.start()
    try:
        port = server.listeners[0].server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        reader, writer = await asyncio.open_connection("localhost", port)
        # CONNECT: protocol MQTT level 4, clean session, keep alive 60, client id "probe".
        writer.write(b"\x10\x11\x00\x04MQTT\x04\x02\x00\x3c\x00\x05probe")
        connack = await asyncio.wait_for(reader.readexactly(4), 5)
        if connack != b"\x20\x02\x00\x00":
            raise RuntimeError(f"unexpected CONNACK {connack!r}")
        writer.write(b"\xe0\x00")  # DISCONNECT
        writer.close()
    finally:
        await server.stop()


def probe() -> None:
    """Drive the broker's run-time code paths; raises on the first failure."""
    import uvloop

    from hbroker import cli

    cli.version_text()
    _probe_msgpack()
    socket.getaddrinfo("localhost", 1883)  # host names go through the idna codec

    async def run() -> None:
        with tempfile.TemporaryDirectory(prefix="hbroker-probe-") as directory:
            await _probe_sqlite(directory)
            await _probe_nats(directory)
        await _probe_postgres()
        await _probe_broker()

    uvloop.run(run())


def runtime_modules(root: Path) -> list[str]:
    """What the broker can load at run time, as seen in this (development) interpreter."""
    wanted = set(first_party_modules(root)) | imported_names(root)
    for name in sorted(wanted):
        importlib.import_module(name)
    probe()
    for name, module in list(sys.modules.items()):
        # Real modules under their own names: not Cython's in-memory helpers (no spec), nor
        # the aliases some extensions add (CFFI's nacl._sodium is also `_sodium`; os.path is
        # posixpath), which no import statement asks for.
        if getattr(module, "__spec__", None) is not None and \
                getattr(module, "__name__", name) == name:
            wanted.add(name)
    return sorted(n for n in wanted
                  if n not in DEV_ONLY and not n.startswith(DEV_ONLY_PREFIXES))


def check_main(argv: list[str]) -> int:
    """`hbroker --check-bundle FILE`: in the frozen binary, probe then import every module
    named in FILE; 0 if all is there, 1 naming what is not."""
    if len(argv) != 1:
        print("usage: hbroker --check-bundle MODULE_LIST_FILE", file=sys.stderr)
        return 2
    names = Path(argv[0]).read_text().split()
    failures: list[str] = []
    try:
        probe()
    except Exception:
        failures.append("probe failed:\n" + traceback.format_exc())
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # ImportError, or a module failing on a missing dependency
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
    if failures:
        print(f"bundle check: {len(failures)} of {len(names)} modules or probes failed:",
              file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    print(f"bundle check: {len(names)} modules import, probes passed "
          "(sqlite, postgres, broker CONNECT/CONNACK, nats, msgpack, version)")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] != ["--list"] or len(sys.argv) != 3:
        raise SystemExit("usage: python packaging/bundle_check.py --list SOURCE_ROOT")
    source = Path(sys.argv[2]).resolve()
    sys.path.insert(0, str(source))
    print("\n".join(runtime_modules(source)))
