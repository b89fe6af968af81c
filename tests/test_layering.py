"""Imports run one way: from the wire types up to the command line, never back.

The layers, lowest first (docs/design.md, "Layers"):

``wire``      edgekv_replication: wire types and both protocol roles, no I/O
``store``     edgekv/store/: every table and every SQL statement
``support``   small shared modules with no knowledge of peers or routes
``services``  edgekv/peers/, edgekv/upstream/, edgekv/documents/
``node``      edgekv/node.py: the node, built whole by one factory
``http``      edgekv/http/: every route, the peer WebSocket, the OpenAPI
``server``    edgekv/server.py: the process that serves a node
``cli``       edgekv/cli.py and what only the command line uses

A module may import its own layer or a lower one, and two packages (or two
top-level modules) may not import each other, even through a third. Every
import counts: at module level, inside a function, and under
``TYPE_CHECKING`` -- a type-only import still ties the importer to the
imported module's layer, and an upward one is the same design smell.
:data:`LAYER_OF` is the one table of layers; a module missing from it fails
:func:`test_every_module_has_a_layer`, so the table stays complete.

The imports are read with :mod:`ast`, so nothing is imported to check them.
"""

from __future__ import annotations

import ast
import itertools
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PACKAGES = {
    "edgekv": ROOT / "edgekv",
    "edgekv_replication": ROOT / "replication" / "edgekv_replication",
    "edgekv_client": ROOT / "client" / "edgekv_client",
}
"""Where each of the three packages' source lives."""

LAYERS = ("wire", "store", "support", "services", "node", "http", "server", "cli")
"""The layers, lowest first: an import may go only to the same layer or to the left."""

LAYER_OF = {
    "edgekv_replication.*": "wire",
    "edgekv.store.*": "store",
    # Leaves shared by the services and everything above: none knows of peers,
    # routes or the node. ``edgekv`` itself holds only the version string.
    "edgekv": "support",
    "edgekv.auth": "support",
    "edgekv.config": "support",
    "edgekv.event_loop": "support",
    "edgekv.json_text": "support",
    "edgekv.metrics": "support",
    "edgekv.ratelimit": "support",
    "edgekv.runtime_tokens": "support",
    "edgekv.skewed_clock": "support",
    "edgekv.tasks": "support",
    "edgekv.peers.*": "services",
    "edgekv.upstream.*": "services",
    "edgekv.documents.*": "services",
    "edgekv.watch.*": "services",
    "edgekv.node": "node",
    "edgekv.http.*": "http",
    "edgekv.console.*": "http",
    "edgekv.server": "server",
    "edgekv.cli": "cli",
    "edgekv.__main__": "cli",
    "edgekv.demo": "cli",
    "edgekv.docgen": "cli",
    "edgekv.status_view": "cli",
    "edgekv.importing": "cli",
    "edgekv.operator_cli": "cli",
    "edgekv.operator_http": "cli",
}
"""The layer of each module of edgekv and edgekv_replication.

A key ending in ``.*`` is a package and everything in it; any other key is
exactly one module.
"""

CLIENT_MAY_IMPORT = frozenset(
    {
        "edgekv_replication.bookmarks",
        "edgekv_replication.codes",
        "edgekv_replication.versions",
        "edgekv_replication.json_objects",
        "edgekv_replication.counters",
        "edgekv_replication.orsets",
        "edgekv_replication.watch_tokens",
    }
)
"""The light wire modules the client shares with the node (standard library only,
so the client installs without the node's dependencies)."""

ALLOWED_CROSSINGS = {
    ("edgekv.cli", "edgekv_client"): (
        "`edgekv cluster ...` and `edgekv status` talk to a node over HTTP: the command "
        "line is a client of a remote node, and it uses the client for that."
    ),
}
"""Imports outside the layer order that are there by design, each with its reason."""

ALLOWED_UPWARD: dict[tuple[str, str], str] = {}
"""Upward imports kept on purpose, ``(importer, imported)``: reason. None today."""

TOOLS = ("testkit", "jepsen_like", "bench", "tests")
"""Code that drives nodes from outside: the three packages never import it."""


def module_name(package: str, path: Path) -> str:
    """The dotted name of the module at ``path`` inside ``package``."""
    parts = list(path.relative_to(PACKAGES[package]).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def source_modules() -> dict[str, Path]:
    """Every module of the three packages, by dotted name."""
    return {
        module_name(package, path): path
        for package, root in PACKAGES.items()
        for path in sorted(root.rglob("*.py"))
    }


def imported_names(module: str, path: Path, known: Iterable[str]) -> set[str]:
    """The modules ``module`` imports, anywhere in its file (functions, TYPE_CHECKING too).

    ``from a.b import c`` imports ``a.b.c`` when that is a module of ours,
    else ``a.b``. Relative imports are resolved against ``module``.
    """
    known = set(known)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                found.add(candidate if candidate in known else source)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of the three packages (or their packages) it imports."""
    modules = source_modules()
    ours = tuple(PACKAGES)
    graph = {}
    for module, path in modules.items():
        imported = imported_names(module, path, modules)
        graph[module] = {name for name in imported if name.split(".")[0] in ours and name != module}
    return graph


def layer_of(module: str) -> str | None:
    """The layer :data:`LAYER_OF` gives ``module`` (the most specific key), or None."""
    if module in LAYER_OF:
        return LAYER_OF[module]
    parts = module.split(".")
    for cut in range(len(parts), 0, -1):
        layer = LAYER_OF.get(".".join(parts[:cut]) + ".*")
        if layer is not None:
            return layer
    return None


def unit_of(module: str) -> str:
    """The package a module belongs to, for the cycle check.

    Each package of edgekv (``edgekv.store``) and each top-level module
    (``edgekv.config``) is one unit; ``edgekv_replication`` and
    ``edgekv_client`` are one unit each.
    """
    parts = module.split(".")
    if parts[0] != "edgekv" or len(parts) == 1:
        return parts[0]
    return ".".join(parts[:2])


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``importer -> imported`` for each import against the layer order."""
    found = []
    for importer, imported in sorted(graph.items()):
        if importer.startswith("edgekv_client"):
            continue
        low = layer_of(importer)
        for name in sorted(imported):
            if (importer, name) in ALLOWED_UPWARD or (importer, unit_of(name)) in ALLOWED_CROSSINGS:
                continue
            high = layer_of(name)
            if low is None or high is None:
                found.append(f"{importer} -> {name}: not in LAYER_OF (tests/test_layering.py)")
            elif LAYERS.index(high) > LAYERS.index(low):
                found.append(f"{importer} ({low}) -> {name} ({high})")
    return found


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one node (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(edges.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


def package_edges(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The import graph between units (:func:`unit_of`), each import counted once."""
    edges: dict[str, set[str]] = {}
    for importer, imported in graph.items():
        for name in imported:
            if unit_of(importer) != unit_of(name):
                edges.setdefault(unit_of(importer), set()).add(unit_of(name))
    return edges


def shortest_cycle(edges: dict[str, set[str]], group: list[str]) -> list[str]:
    """A shortest closed path through ``group[0]`` inside ``group`` (its first node repeated)."""
    start, inside = group[0], set(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for successor in sorted(edges.get(node, set()) & inside):
                if successor == start:
                    return [*paths[node], start]
                if successor not in paths:
                    paths[successor] = [*paths[node], successor]
                    following.append(successor)
        frontier = following
    return group


def witnesses(graph: dict[str, set[str]], path: list[str]) -> Iterator[str]:
    """The module imports behind each step of a cycle of units."""
    for here, there in itertools.pairwise(path):
        for importer, imported in sorted(graph.items()):
            for name in sorted(imported):
                if unit_of(importer) == here and unit_of(name) == there:
                    yield f"  {importer} -> {name}"


GRAPH = import_graph()


def test_every_module_has_a_layer() -> None:
    missing = [
        module
        for module in sorted(GRAPH)
        if not module.startswith("edgekv_client") and layer_of(module) is None
    ]
    assert not missing, "give each a layer in LAYER_OF (tests/test_layering.py): " + ", ".join(
        missing
    )


def test_every_layer_key_names_a_module() -> None:
    stale = [
        key
        for key in LAYER_OF
        if not any(m == key.removesuffix(".*") or m.startswith(key[:-1]) for m in GRAPH)
    ]
    assert not stale, f"LAYER_OF names modules that are gone: {stale}"


def test_no_module_imports_a_higher_layer() -> None:
    upward = upward_imports(GRAPH)
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_no_two_packages_import_each_other() -> None:
    edges = package_edges(GRAPH)
    found = cycles(edges)
    report = []
    for group in found:
        path = shortest_cycle(edges, group)
        report.append(" -> ".join(path) + ":\n" + "\n".join(witnesses(GRAPH, path)))
    assert not found, "packages in an import cycle:\n" + "\n".join(report)


def test_no_two_modules_import_each_other() -> None:
    found = cycles(GRAPH)  # the node's, the wire's and the client's modules alike
    report = [" -> ".join(shortest_cycle(GRAPH, group)) for group in found]
    assert not found, "modules in an import cycle:\n" + "\n".join(report)


def test_the_client_imports_only_the_light_wire_modules() -> None:
    wrong = [
        f"{importer} -> {name}"
        for importer, imported in sorted(GRAPH.items())
        if importer.startswith("edgekv_client")
        for name in sorted(imported)
        if not name.startswith("edgekv_client") and name not in CLIENT_MAY_IMPORT
    ]
    assert not wrong, (
        "the client may import only "
        + ", ".join(sorted(CLIENT_MAY_IMPORT))
        + (":\n" + "\n".join(wrong))
    )


@pytest.mark.parametrize("module", sorted(CLIENT_MAY_IMPORT))
def test_the_light_wire_modules_need_only_the_standard_library(module: str) -> None:
    path = source_modules()[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    outside = sorted(
        name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        )
        if name
        and name.split(".")[0] not in sys.stdlib_module_names
        and name not in CLIENT_MAY_IMPORT
    )
    assert not outside, f"{module} imports {outside}"


def test_the_packages_never_import_the_tools() -> None:
    wrong = [
        f"{path.relative_to(ROOT)} imports {name}"
        for package in PACKAGES
        for module, path in source_modules().items()
        if module.split(".")[0] == package
        for name in imported_names(module, path, ())
        if name.split(".")[0] in TOOLS
    ]
    assert not wrong, "\n".join(wrong)


def test_the_tools_never_import_the_tests() -> None:
    wrong = [
        f"{path.relative_to(ROOT)} imports {name}"
        for tool in ("testkit", "jepsen_like", "bench")
        for path in sorted((ROOT / tool).rglob("*.py"))
        for name in imported_names(tool, path, ())
        if name.split(".")[0] == "tests"
    ]
    assert not wrong, "\n".join(wrong)


def where_things_live() -> list[tuple[str, list[str]]]:
    """The rows of docs/design.md's "Where does X live": (concept, paths it names)."""
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    section = text.split("## Where does X live", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] not in ("Concept", "---"):
            rows.append((cells[0], re.findall(r"`([^`]+)`", cells[1])))
    return rows


def test_the_design_table_names_modules_that_exist() -> None:
    rows = where_things_live()
    assert len(rows) > 20, "docs/design.md lost its table"
    unnamed = [concept for concept, paths in rows if not paths]
    assert not unnamed, f"rows naming no module: {unnamed}"
    missing = [path for _, paths in rows for path in paths if not (ROOT / path).exists()]
    assert not missing, f"docs/design.md names paths that do not exist: {missing}"


def test_the_check_finds_an_upward_import_and_a_cycle() -> None:
    graph = {
        "edgekv.store.kv": {"edgekv.http.errors"},
        "edgekv.http.errors": {"edgekv.store.kv"},
        "edgekv.peers.feed": {"edgekv.node"},
        "edgekv.new_module": set(),
        "edgekv.node": {"edgekv.new_module"},
    }
    assert upward_imports(graph) == [
        "edgekv.node -> edgekv.new_module: not in LAYER_OF (tests/test_layering.py)",
        "edgekv.peers.feed (services) -> edgekv.node (node)",
        "edgekv.store.kv (store) -> edgekv.http.errors (http)",
    ]
    edges = package_edges(graph)
    assert cycles(edges) == [["edgekv.http", "edgekv.store"]]
    path = shortest_cycle(edges, ["edgekv.http", "edgekv.store"])
    assert path == ["edgekv.http", "edgekv.store", "edgekv.http"]
    assert list(witnesses(graph, path)) == [
        "  edgekv.http.errors -> edgekv.store.kv",
        "  edgekv.store.kv -> edgekv.http.errors",
    ]
