"""Generate docs/configuration.md and examples/hbroker.toml from the configuration schema.

    python tools/gen_config_docs.py          # write both files
    python tools/gen_config_docs.py --check  # exit 1 if either is out of date
"""

from __future__ import annotations

import dataclasses
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hbroker.config import (  # noqa: E402
    OPTIONAL_SECTIONS,
    SECTION_DOCS,
    SECTIONS,
    AdminToken,
    ListenerConfig,
    _toml_value,
)

DOC_PATH = ROOT / "docs" / "configuration.md"
EXAMPLE_PATH = ROOT / "examples" / "hbroker.toml"

INTRO = """\
# Configuration reference

hbroker reads one TOML file: `hbroker serve -c FILE`. Without `-c` it runs on the embedded
default: one TCP listener on 127.0.0.1:1883, every other option at its default.

`hbroker check-config -c FILE` validates a file and prints the effective configuration (every
option, defaults filled in). A mistake is reported with the file, the key and what was expected,
and the broker does not start:

```
hbroker: my.toml: limits.max_inflight: expected an integer from 1 to 65535, got 0
hbroker: my.toml: unknown key 'limits.max_inflght' (did you mean 'max_inflight'?)
```

On `SIGHUP` the broker reads the file again. Options marked *reload: yes* take effect at once
(limits apply to new packets and new connections); the others are logged as needing a restart
and keep their running value. A file that no longer validates is refused as a whole and the
running configuration stays.

[`examples/hbroker.toml`](../examples/hbroker.toml) holds every option at its default, with
these descriptions as comments. Both files are generated from the schema in `hbroker/config.py`
by `tools/gen_config_docs.py`; a test fails if they drift.
"""


def _fields(cls: type) -> list[dataclasses.Field]:
    return list(dataclasses.fields(cls))


def _allowed(f: dataclasses.Field) -> str:
    meta = f.metadata
    if meta["choices"]:
        return ", ".join(f"`{c}`" for c in meta["choices"])
    lo, hi = meta["min"], meta["max"]

    def num(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else str(x)

    if lo is not None and hi is not None:
        return f"{num(lo)} to {num(hi)}"
    if lo is not None:
        return f"≥ {num(lo)}"
    if hi is not None:
        return f"≤ {num(hi)}"
    if str(f.type).startswith("tuple[AdminToken"):
        return "list of tables"
    if str(f.type).startswith("tuple[int"):
        return "list of integers"
    if str(f.type).startswith("tuple[str"):
        return "list of strings"
    return "true, false" if str(f.type) in ("bool", "bool | None") else "any"


def _table(cls: type) -> list[str]:
    rows = ["| key | type | default | allowed | reload | description |",
            "|---|---|---|---|---|---|"]
    for f in _fields(cls):
        default = "unset" if f.default is None else f"`{_toml_value(f.default)}`"
        rows.append(f"| `{f.name}` | {f.type} | {default} | {_allowed(f)} | "
                    f"{'yes' if f.metadata['reload'] else 'no'} | {f.metadata['doc']} |")
    return rows


def render_doc() -> str:
    out = [INTRO, "## `[[listeners]]`", "", SECTION_DOCS["listeners"], ""]
    out += _table(ListenerConfig)
    for name, cls in (*SECTIONS.items(), *OPTIONAL_SECTIONS.items()):
        out += ["", f"## `[{name}]`", "", SECTION_DOCS[name], ""]
        out += _table(cls)
        if name == "admin":
            out += ["", "### `[[admin.tokens]]`", "", "One table per token, e.g. as "
                    "`hbroker token --name prometheus` prints it:", ""]
            out += _table(AdminToken)
    return "\n".join(out) + "\n"


def _comment(text: str) -> list[str]:
    return ["# " + line for line in textwrap.wrap(text, 96)]


def render_example() -> str:
    out = ["# hbroker configuration: every option, set to its default.",
           "# Reference: docs/configuration.md. Check a file with: hbroker check-config -c FILE",
           ""]
    out += _comment(SECTION_DOCS["listeners"])
    out.append("[[listeners]]")
    default_listener = ListenerConfig()  # defaults that depend on the type or host, resolved
    for f in _fields(ListenerConfig):
        out += _comment(f.metadata["doc"])
        out.append(f"{f.name} = {_toml_value(getattr(default_listener, f.name))}")
    for name, cls in SECTIONS.items():
        out.append("")
        out += _comment(SECTION_DOCS[name])
        out.append(f"[{name}]")
        for f in _fields(cls):
            out += _comment(f.metadata["doc"] + ("" if f.metadata["reload"]
                                                 else " (Needs a restart to change.)"))
            out.append(f"{f.name} = {_toml_value(f.default)}")
    # A table whose presence changes what the broker does (`[cluster]` clusters it): shown
    # commented out, so that the example still runs every option at its default.
    for name, cls in OPTIONAL_SECTIONS.items():
        out.append("")
        out += _comment(SECTION_DOCS[name])
        out.append(f"# [{name}]")
        for f in _fields(cls):
            out += ["#" + line[1:] for line in _comment(f.metadata["doc"])]
            out.append(f"# {f.name} = {_toml_value(f.default)}")
    return "\n".join(out) + "\n"


def outdated() -> list[Path]:
    stale = []
    for path, text in ((DOC_PATH, render_doc()), (EXAMPLE_PATH, render_example())):
        if not path.exists() or path.read_text() != text:
            stale.append(path)
    return stale


def main(argv: list[str]) -> int:
    if "--check" in argv:
        stale = outdated()
        for path in stale:
            print(f"{path.relative_to(ROOT)} is out of date: run python tools/gen_config_docs.py")
        return 1 if stale else 0
    DOC_PATH.write_text(render_doc())
    EXAMPLE_PATH.write_text(render_example())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
