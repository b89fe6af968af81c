"""Generate the tables in the docs from the code's own tables.

``python -m edgekv.docgen`` rewrites the generated blocks of
``docs/configuration.md`` (from :data:`edgekv.config.SETTINGS`) and
``docs/errors.md`` (from :data:`edgekv_replication.codes.ERROR_CODES`), and
writes the same code table as JSON (:data:`CODES_JSON`) for clients in other
languages (``client-js`` builds its error classes from it); tests fail when a
block or the JSON is stale, so docs and clients cannot drift from the code.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from edgekv.config import SETTINGS
from edgekv_replication.codes import ERROR_CODES

BEGIN = "<!-- generated: {name} -->"
END = "<!-- end generated: {name} -->"


def settings_table() -> str:
    """Return the Markdown table of every setting."""
    lines = [
        "| setting | flag | environment | type | default | meaning |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for s in SETTINGS:
        kind = " \\| ".join(s.choices) if s.choices else s.type.__name__
        if s.multiple:
            kind = f"list of {kind}"
        default = "none" if s.default in (None, ()) else f"`{s.default}`"
        lines.append(f"| `{s.name}` | `{s.flag}` | `{s.env_var}` | {kind} | {default} | {s.help} |")
    return "\n".join(lines)


def errors_table() -> str:
    """Return the Markdown table of every error code."""
    lines = ["| code | status | meaning |", "| --- | --- | --- |"]
    for entry in ERROR_CODES.values():
        lines.append(f"| `{entry.code}` | {entry.status} | {entry.description} |")
    return "\n".join(lines)


CODES_JSON = "replication/edgekv_replication/codes.json"
"""The error-code table as JSON, relative to the repository root."""


def codes_json() -> str:
    """Return the error-code table as JSON text: a list of ``{code, status, description}``."""
    rows = [entry._asdict() for entry in ERROR_CODES.values()]
    return json.dumps(rows, indent=2, ensure_ascii=False) + "\n"


GENERATORS = {"settings": settings_table, "errors": errors_table}
FILES = {"settings": "docs/configuration.md", "errors": "docs/errors.md"}


def render(text: str, name: str) -> str:
    """Return ``text`` with its generated block ``name`` brought up to date."""
    begin, end = BEGIN.format(name=name), END.format(name=name)
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise ValueError(f"no generated block {name!r}")
    block = f"{begin}\n{GENERATORS[name]()}\n{end}"
    return pattern.sub(lambda _: block, text)


def main(root: Path) -> None:
    """Rewrite every generated block under ``root``."""
    for name, relative in FILES.items():
        path = root / relative
        path.write_text(render(path.read_text(), name))
    (root / CODES_JSON).write_text(codes_json())


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd())
