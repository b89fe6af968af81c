"""Rendering of ``/v1/cluster/status`` for operators (rich tables)."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

_STATE_STYLE = {"up": "green", "down": "red", "joining": "yellow", "removed": "dim"}


def _ago(epoch_ms: int | None) -> str:
    if epoch_ms is None:
        return "never"
    seconds = max(0.0, time.time() - epoch_ms / 1000)
    return f"{seconds:.1f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


def _bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def status_renderable(status: dict[str, Any]) -> Group:
    """A header line for this node and a table with a row per member."""
    me = status["node"]
    header = Text.assemble(
        (f"{me['name']} ", "bold"),
        f"{me['url']}  node {me['node_id']}  seq {me['seq']}  keys {me['keys']}  "
        f"db {_bytes(me['db_bytes'])}  held {me['held_changes']}",
        f"  watchers {me['watch']['watchers_open']}" if "watch" in me else "",
    )
    table = Table(show_edge=False)
    for column in ("member", "url", "state", "lag", "lag ms", "contact", "clock", "last error"):
        table.add_column(column)
    for m in status["members"]:
        state = m["state"]
        offset = m["clock_offset_ms"]
        table.add_row(
            f"{m['name'] or '?'} {(m['node_id'] or '')[:8]}",
            m["url"],
            Text(state, style=_STATE_STYLE.get(state, "")),
            "-" if m["lag_changes"] is None else str(m["lag_changes"]),
            "-" if m["lag_ms"] is None else str(m["lag_ms"]),
            _ago(m["last_contact_ms"]),
            "-" if offset is None else f"{offset:+d} ms",
            m["last_error"] or "",
        )
    upstream = status.get("upstream")
    if upstream is not None:
        state = upstream["state"]
        table.add_row(
            "upstream",
            f"{upstream['url']} ({upstream['schema']})",
            Text(state, style=_STATE_STYLE.get(state, "yellow")),
            str(upstream["lag_changes"]),
            "-",
            _ago(upstream["last_contact_ms"]),
            "-",
            upstream["last_error"] or "",
        )
    return Group(header, table)
