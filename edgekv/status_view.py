"""Rendering of ``/v1/cluster/status`` for operators (rich tables).

Readable at hundreds of members: a summary line first (members up, down and
joining, the worst lag and who has it), then the members grouped by region,
each group and each row worst first -- down before joining before up, larger
lag before smaller -- so what needs a look is at the top of the screen.
``region`` on the node and its members and the ``backbone`` object are
optional in the document (a node without regions renders one group).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

_STATE_STYLE = {"up": "green", "down": "red", "joining": "yellow", "removed": "dim"}
_STATE_RANK = {"down": 0, "joining": 1, "up": 2, "removed": 3}
"""Worst first: a member down needs a look before one still joining."""
_NO_REGION = ""
_UNNAMED = (_NO_REGION, "default")
"""Regions that mean "regions not in use": none given, and the node's default."""

Member = dict[str, Any]


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


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def region_of(member: Member) -> str:
    """A member's region; ``""`` for a node without one (or a seed not yet heard)."""
    return str(member.get("region") or _NO_REGION)


def badness(member: Member) -> tuple[int, int, int]:
    """A sort key putting the worst member first: state, then lag in changes, then in ms."""
    return (
        _STATE_RANK.get(member["state"], 0),
        -(member.get("lag_changes") or 0),
        -(member.get("lag_ms") or 0),
    )


def worst_first(members: Iterable[Member]) -> list[tuple[str, list[Member]]]:
    """The members grouped by region; groups and rows within them worst first."""
    groups: dict[str, list[Member]] = {}
    for member in members:
        groups.setdefault(region_of(member), []).append(member)
    for rows in groups.values():
        rows.sort(key=badness)
    return sorted(groups.items(), key=lambda group: (badness(group[1][0]), group[0]))


def summary_text(members: Sequence[Member], backbone: dict[str, Any] | None) -> Text:
    """One line: how many members in each state, the worst lag and whose, the backbone."""
    states = Counter(member["state"] for member in members)
    regions = {region_of(member) for member in members} - set(_UNNAMED)
    parts: list[tuple[str, str] | str] = [(_count(len(members), "member"), "bold")]
    if regions:
        parts.append(f" in {_count(len(regions), 'region')}")
    parts.append(": ")
    counts = [
        (f"{states[state]} {state}", _STATE_STYLE[state] if states[state] else "")
        for state in ("up", "down", "joining")
    ]
    if states["removed"]:
        counts.append((f"{states['removed']} removed", "dim"))
    for index, count in enumerate(counts):
        parts.extend([", "] if index else [])
        parts.append(count)
    lagging = [m for m in members if m.get("lag_changes")]
    if lagging:
        worst = max(lagging, key=lambda m: (m["lag_changes"], m.get("lag_ms") or 0))
        where = f", {region_of(worst)}" if region_of(worst) else ""
        parts.append(
            f"  worst lag {worst['lag_changes']} changes ({worst['name'] or worst['url']}{where})"
        )
    else:
        parts.append("  worst lag 0")
    if backbone is not None:
        state = backbone["state"]
        parts.extend(["  backbone ", (state, _STATE_STYLE.get(state, "yellow"))])
        if backbone.get("lag_changes") is not None:
            parts.append(f" lag {backbone['lag_changes']}")
    return Text.assemble(*parts)


def _via(member: Member, backbone_from: str | None) -> str:
    """How this node gets the member's changes: its own stream, relayed by peers, or
    the backbone (``backbone_from``: this node's region when it has a backbone)."""
    if member.get("direct", True):
        return "peer"
    if backbone_from is not None and region_of(member) != backbone_from:
        return "backbone"
    return "relayed"


def _member_row(member: Member, backbone_from: str | None) -> list[str | Text]:
    state = member["state"]
    offset = member["clock_offset_ms"]
    return [
        f"{member['name'] or '?'} {(member['node_id'] or '')[:8]}",
        member["url"],
        _via(member, backbone_from),
        Text(state, style=_STATE_STYLE.get(state, "")),
        "-" if member["lag_changes"] is None else str(member["lag_changes"]),
        "-" if member["lag_ms"] is None else str(member["lag_ms"]),
        _ago(member["last_contact_ms"]),
        "-" if offset is None else f"{offset:+d} ms",
        member["last_error"] or "",
    ]


def _service_row(label: str, service: dict[str, Any], where: str) -> list[str | Text]:
    """A row for the upstream or the backbone: state, lag, last contact, last error."""
    state = service["state"]
    lag = service.get("lag_changes")
    return [
        label,
        where,
        "",
        Text(state, style=_STATE_STYLE.get(state, "yellow")),
        "-" if lag is None else str(lag),
        "-",
        _ago(service.get("last_contact_ms")),
        "-",
        service.get("last_error") or "",
    ]


def _table() -> Table:
    table = Table(show_edge=False)
    for column in ("member", "url", "via", "state", "lag", "lag ms", "contact", "clock", "error"):
        table.add_column(column)
    return table


def status_renderable(status: dict[str, Any], region: str | None = None) -> Group:
    """A header line for this node, the summary line, and the members by region.

    ``region`` keeps only that region's members (the summary counts those shown).
    """
    me = status["node"]
    in_region = f"  region {me['region']}" if me.get("region") else ""
    header = Text.assemble(
        (f"{me['name']} ", "bold"),
        f"{me['url']}{in_region}  node {me['node_id']}  seq {me['seq']}  keys {me['keys']}  "
        f"db {_bytes(me['db_bytes'])}  held {me['held_changes']}",
        f"  watchers {me['watch']['watchers_open']}" if "watch" in me else "",
        _fanout_behind(me.get("watch", {})),
    )
    members: list[Member] = status["members"]
    if region is not None:
        members = [m for m in members if region_of(m) == region]
    backbone = status.get("backbone")
    backbone_from = None if backbone is None else region_of(me)
    lines: list[Text | Table] = [header, summary_text(members, backbone)]
    if region is not None and not members:
        lines.append(Text(f"no member in region {region!r}", style="yellow"))
    groups = worst_first(members)
    # One region that is no region at all (a cluster without regions): no heading.
    titled = len(groups) > 1 or any(name not in _UNNAMED for name, _ in groups)
    for name, rows in groups:
        # A table per region, its heading a line of its own: a heading row in
        # a shared table would wrap inside the narrow first column.
        if titled:
            up = sum(m["state"] == "up" for m in rows)
            lines.append(Text(f"region {name or '(none)'}: {up}/{len(rows)} up", style="bold"))
        table = _table()
        for member in rows:
            table.add_row(*_member_row(member, backbone_from))
        lines.append(table)
    services = _table()
    upstream = status.get("upstream")
    if upstream is not None:
        services.add_row(
            *_service_row("upstream", upstream, f"{upstream['url']} ({upstream['schema']})")
        )
    if backbone is not None:
        services.add_row(*_service_row("backbone", backbone, str(backbone.get("url", ""))))
    if services.row_count:
        lines.append(services)
    return Group(*lines)


def _fanout_behind(watch: dict[str, Any]) -> str:
    """The fan-out process's lag when it has one (a host short of CPU): the events wait."""
    behind = watch.get("fanout_behind_ms", 0)
    return f" (events {behind / 1000:.1f} s behind)" if behind >= 1000 else ""
