"""Dependencies run one way: no module of hbroker imports one of a higher layer, not even for
type checking (`if TYPE_CHECKING:` imports count).

The layers, highest first. A module may import its own layer and the layers below; the
compiled extension (hbroker_ext) is below them all. A package named here holds its submodules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LAYERS: tuple[tuple[str, ...], ...] = (
    # Command line and tools.
    ("hbroker.__main__", "hbroker.cli", "hbroker.control"),
    # Wiring: configuration, listeners, broker, storage and hooks put together; the admin
    # listener, started and stopped by the server, which it reads when asked.
    ("hbroker.server", "hbroker.admin"),
    # Extensions built on the hooks and the in-process client: the cluster layer.
    ("hbroker.cluster",),
    # Listeners: the transports a connection comes through, and the in-process client (a
    # connection without a socket).
    ("hbroker.transports", "hbroker.inprocess"),
    # One client's connection: the MQTT state machine, CONNECT/CONNACK and AUTH.
    ("hbroker.connection", "hbroker.connect"),
    # Routing decisions: sessions, subscriptions, retained messages, wills, expiry; a
    # session's state exported from one broker and imported into another.
    ("hbroker.broker", "hbroker.session_state"),
    # $SYS topics: an extension of the broker, which reads it through a Protocol.
    ("hbroker.sys_topics",),
    # Session state and flow, subscriptions, quotas, storage, and the hooks and auth checks
    # they call.
    ("hbroker.session", "hbroker.subscription", "hbroker.acknowledgement", "hbroker.quotas",
     "hbroker.stats", "hbroker.storage", "hbroker.hooks", "hbroker.auth"),
    # What every layer may use: configuration, reason codes, logging.
    # The admin tokens' hashes are checked by the configuration.
    ("hbroker.config", "hbroker.reason_codes", "hbroker.log", "hbroker.admin.tokens",
     "hbroker"),
)


ROOT = Path(__file__).resolve().parents[2]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted((ROOT / "hbroker").rglob("*.py"))}


def layer(module: str) -> int | None:
    """The index of `module`'s layer (0 is the highest): that of the longest name in LAYERS
    that is the module or a package holding it."""
    best: tuple[int, int] | None = None
    for index, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and (
                    best is None or len(name) > best[0]):
                best = (len(name), index)
    return None if best is None else best[1]


def imported(path: Path, module: str) -> set[str]:
    """The hbroker modules `path` imports, wherever the import statement is."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                # `from hbroker import hooks` imports the module hbroker.hooks.
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return {m for m in found if m == "hbroker" or m.startswith("hbroker.")}


def upward(module: str) -> list[str]:
    own = layer(module)
    assert own is not None
    return sorted(m for m in imported(MODULES[module], module)
                  if (other := layer(m)) is not None and other < own)


def test_every_module_has_a_layer():
    assert [m for m in MODULES if layer(m) is None] == []


@pytest.mark.parametrize("module", list(MODULES))
def test_module_imports_no_higher_layer(module: str):
    assert upward(module) == []


def test_the_checker_sees_an_upward_import_under_type_checking(tmp_path):
    source = tmp_path / "session.py"
    source.write_text("from typing import TYPE_CHECKING\n"
                      "if TYPE_CHECKING:\n    from hbroker.broker import Broker\n")
    found = imported(source, "hbroker.session")
    assert found == {"hbroker.broker"}
    assert layer("hbroker.broker") < layer("hbroker.session")
