"""Plain-text tables for the command-line tools (`hbroker ctl`, `hbroker cluster status`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def cell(value: Any) -> str:
    """A value as a table cell: `-` for none, yes/no, floats shortest, lists and objects as
    JSON."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """Rows as a text table: `columns` are (key, heading)."""
    cells = [[heading.upper() for _, heading in columns]]
    cells += [[cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in cells)
