"""Docs cannot drift from the code: settings, error codes, commands, routes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
import pytest

from edgekv import docgen
from edgekv.cli import main
from edgekv.config import Config
from edgekv.http.app import create_app
from edgekv.http.openapi import openapi_document
from edgekv.node import Node

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", sorted(docgen.FILES))
def test_generated_doc_blocks_are_current(name: str) -> None:
    text = (ROOT / docgen.FILES[name]).read_text()
    assert docgen.render(text, name) == text, "run: python -m edgekv.docgen"


def _commands(group: click.Group, prefix: str = "edgekv") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            found.extend(_commands(command, path))
        else:
            found.append((path, command))
    return found


@pytest.mark.parametrize(("path", "command"), _commands(main))
def test_every_command_is_documented_with_an_example(path: str, command: click.Command) -> None:
    assert f"`{path}`" in (ROOT / "docs/cli.md").read_text()
    assert "Example:" in (command.help or "")


def test_every_route_is_in_openapi_and_the_api_doc(tmp_path: Path) -> None:
    async def app_routes() -> set[tuple[str, str]]:
        node = await Node.open(Config(data_dir=str(tmp_path)), "http://127.0.0.1:8787")
        try:
            app = create_app(node)
            return {
                (route.method.lower(), route.resource.canonical)
                for route in app.router.routes()
                if route.resource is not None and route.method not in ("HEAD", "*")
            }
        finally:
            await node.close()

    routes = asyncio.run(app_routes())
    paths = openapi_document()["paths"]
    documented = {(method, path) for path, item in paths.items() for method in item}
    canonical = {(m, p.replace("{key:(?s:.+)}", "{key}")) for m, p in routes}
    assert canonical == documented
    api_doc = (ROOT / "docs/api.md").read_text()
    for method, path in canonical:
        assert f"`{method.upper()} {path}" in api_doc, (method, path)


def test_readme_quick_start_has_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "python3 -m pip install . && python3 -m edgekv serve" in readme
    assert "\nbash .ci/run\n" in readme
    ci = (ROOT / ".ci/run").read_text()
    # The README's test command installs the test extras and runs both suites.
    assert 'python3 -m pip install --quiet -e ".[test]"' in ci
    assert "python3 -m pytest" in ci
    assert "npm test" in ci
