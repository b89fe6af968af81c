"""``report.html``: the verdicts, and latency over time per workload with the faults marked.

Plain HTML with inline SVG (no plotting library): one scatter plot per
workload, time on x, latency on a log scale on y, a dot per completed
operation coloured by outcome, and a shaded band per fault interval.
"""

from __future__ import annotations

import html as escape
import json
import math
from typing import Any

from jepsen_like.history import Op, pairs

WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 960, 260, 56, 28, 12
MIN_LATENCY, MAX_LATENCY = 0.0005, 10.0
COLOURS = {"ok": "#2a9d3a", "fail": "#d62728", "info": "#ff9f1c"}
FAULT_COLOURS = {
    "partition": "#9ecae1",
    "kill": "#fdae6b",
    "pause": "#c7b9e2",
    "clock": "#a1d99b",
    "upstream": "#fcbba1",
}
MAX_DOTS = 6000


def html(results: dict[str, Any], ops: list[Op]) -> str:
    """The whole report page."""
    end = max([op["time"] for op in ops] or [1.0])
    verdict = "PASS" if results["valid"] else "FAIL"
    parts = [
        "<!doctype html><meta charset=utf-8><title>EdgeKV fault-injection run</title>",
        "<style>body{font:14px sans-serif;margin:2em}td,th{padding:2px 8px;text-align:left}"
        "pre{background:#f6f6f6;padding:8px;overflow:auto;max-height:300px}</style>",
        f"<h1>EdgeKV fault-injection run: {verdict}</h1>",
        f"<p><code>{escape.escape(results.get('command', ''))}</code></p>",
        _summary_table(results),
        _legend(),
    ]
    for name in results["checkers"]:
        mine = [op for op in ops if op.get("workload") == name]
        parts.append(f"<h2>{escape.escape(name)}</h2>")
        parts.append(_plot(mine, results["faults"], end))
        details = json.dumps(results["checkers"][name], indent=1, sort_keys=True)
        parts.append(f"<pre>{escape.escape(details)}</pre>")
    faults = json.dumps(results["faults"], indent=1)
    parts.append(f"<h2>Faults</h2><pre>{escape.escape(faults)}</pre>")
    return "\n".join(parts)


def _summary_table(results: dict[str, Any]) -> str:
    rows = ["<table><tr><th>checker</th><th>valid</th><th>converged after heal (s)</th></tr>"]
    for name, result in results["checkers"].items():
        rows.append(
            f"<tr><td>{escape.escape(name)}</td><td>{result['valid']}</td>"
            f"<td>{result.get('converged_after_heal_s')}</td></tr>"
        )
    heal = results["convergence_after_heal"]["seconds"]
    rows.append("</table>")
    rows.append(
        f"<p>Convergence after each heal (s): p50 {heal['p50']}, p99 {heal['p99']}, "
        f"max {heal['max']}</p>"
    )
    return "".join(rows)


def _legend() -> str:
    items = [f'<span style="color:{c}">&#9679; {k}</span>' for k, c in COLOURS.items()]
    items += [
        f'<span style="background:{c};padding:0 6px">{k}</span>' for k, c in FAULT_COLOURS.items()
    ]
    return "<p>" + " &nbsp; ".join(items) + "</p>"


def _x(t: float, end: float) -> float:
    return LEFT + (WIDTH - LEFT - 10) * t / end


def _y(latency: float) -> float:
    clamped = min(max(latency, MIN_LATENCY), MAX_LATENCY)
    span = math.log10(MAX_LATENCY) - math.log10(MIN_LATENCY)
    share = (math.log10(clamped) - math.log10(MIN_LATENCY)) / span
    return TOP + (HEIGHT - TOP - BOTTOM) * (1 - share)


def _plot(ops: list[Op], faults: list[dict[str, Any]], end: float) -> str:
    out = [f'<svg width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg">']
    for fault in faults:
        x0, x1 = _x(fault["began"], end), _x(fault["healed"], end)
        colour = FAULT_COLOURS.get(fault["kind"], "#ddd")
        out.append(
            f'<rect x="{x0:.1f}" y="{TOP}" width="{max(1.0, x1 - x0):.1f}" '
            f'height="{HEIGHT - TOP - BOTTOM}" fill="{colour}" opacity="0.5">'
            f"<title>{escape.escape(fault['label'])}</title></rect>"
        )
    for latency in (0.001, 0.01, 0.1, 1.0, 10.0):
        y = _y(latency)
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        label = f"{latency * 1000:g} ms" if latency < 1 else f"{latency:g} s"
        out.append(f'<text x="4" y="{y + 4:.1f}" font-size="10">{label}</text>')
    step = max(1, round(end / 10))
    for t in range(0, int(end) + 1, step):
        out.append(f'<text x="{_x(t, end):.1f}" y="{HEIGHT - 8}" font-size="10">{t} s</text>')
    done = [(inv, c) for inv, c in pairs(ops) if c is not None]
    stride = max(1, len(done) // MAX_DOTS)
    for invocation, completion in done[::stride]:
        x, y = _x(invocation["time"], end), _y(completion["time"] - invocation["time"])
        colour = COLOURS.get(completion["type"], "#000")
        out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="1.6" fill="{colour}"/>')
    out.append("</svg>")
    return "".join(out)
