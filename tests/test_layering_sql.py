"""Every SQL statement lives in edgekv/store/: no SQL text in any other module of edgekv."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "edgekv"
STORE = PACKAGE / "store"

# Statement shapes, in SQL's upper case (prose such as "delete the key" is not SQL).
_SQL = re.compile(
    r"\bSELECT\s.+?\sFROM\b|\bSELECT\s+(?:count|max|min|1)\b|\bINSERT\s+(?:OR\s+\w+\s+)?INTO\b"
    r"|\bUPDATE\s+[\w.{}\"]+\s+SET\b|\bDELETE\s+FROM\b"
    r"|\bCREATE\s+(?:UNIQUE\s+)?(?:TABLE|INDEX|VIEW|SCHEMA|TRIGGER)\b"
    r"|\bDROP\s+(?:TABLE|INDEX|VIEW|SCHEMA|TRIGGER)\b|\bALTER\s+TABLE\b|\bPRAGMA\s+\w+"
    r"|\bBEGIN\s+(?:IMMEDIATE|EXCLUSIVE|DEFERRED)\b|\bON\s+CONFLICT\b",
    re.DOTALL,
)


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string nodes that are docstrings (they may quote SQL to explain it)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        for statement in body:
            if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
                found.add(id(statement.value))
    return found


def sql_literals(source: str) -> list[tuple[int, str]]:
    """``(line, text)`` of each string literal in ``source`` that holds SQL.

    Adjacent literals are one constant to the parser, and an f-string is
    checked by its literal parts joined, so a statement split either way is
    still found.
    """
    tree = ast.parse(source)
    skip = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = [v.value for v in node.values if isinstance(v, ast.Constant)]
            text = " ".join(str(part) for part in parts)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) in skip:
                continue
            text = node.value
        else:
            continue
        if _SQL.search(text):
            found.append((node.lineno, text))
    return found


def test_the_check_finds_sql_in_its_usual_shapes() -> None:
    sample = (
        'ROWS = "SELECT node, url FROM members ORDER BY node"\n'
        'conn.execute(f"CREATE INDEX \\"{name}\\" ON docs (collection, {e}, id)")\n'
        'COUNT = ("SELECT count(*)" " FROM kv")\n'
        'def f():\n    """Explains ``SELECT x FROM kv``; a docstring is no statement."""\n'
        'MESSAGE = "delete the key, then select from the list"\n'
    )
    assert sorted({line for line, _ in sql_literals(sample)}) == [1, 2, 3]


def test_no_sql_outside_the_store() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {text[:70]!r}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if STORE not in path.parents
        for line, text in sql_literals(path.read_text(encoding="utf-8"))
    ]
    assert not offenders, "SQL belongs in edgekv/store/:\n" + "\n".join(offenders)
