"""The ``edgekv`` command line: a thin layer over the library.

Each command opens a library object and calls one method. ``docs/cli.md``
documents every command; a test keeps the two in step.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from edgekv import __version__
from edgekv.config import SETTINGS, ConfigError, load_config

F = TypeVar("F", bound=Callable[..., Any])


def setting_options(command: F) -> F:
    """Add one option per setting of the settings table (``--data-dir`` ...)."""
    for setting in reversed(SETTINGS):
        kind: click.ParamType[Any]
        if setting.choices:
            kind = click.Choice(setting.choices)
        elif setting.type is bool:
            kind = click.BOOL
        elif setting.type is int:
            kind = click.INT
        elif setting.type is float:
            kind = click.FLOAT
        else:
            kind = click.STRING
        default = "" if setting.default in (None, ()) else f" [default: {setting.default}]"
        command = click.option(
            setting.flag,
            setting.name,
            type=kind,
            multiple=setting.multiple,
            default=None,
            help=f"{setting.help}{default} (env {setting.env_var})",
        )(command)
    return command


def client_options(command: F) -> F:
    """Add ``--url`` and ``--token`` for commands that talk to a node."""
    command = click.option(
        "--token",
        envvar="EDGEKV_TOKEN",
        default=None,
        help="Bearer token (env EDGEKV_TOKEN).",
    )(command)
    return click.option(
        "--url",
        envvar="EDGEKV_URL",
        default="http://127.0.0.1:8787",
        show_default=True,
        help="Node URL (env EDGEKV_URL).",
    )(command)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgekv")
def main() -> None:
    """EdgeKV: an edge-first replicated key-value store.

    Example: edgekv serve --data-dir ./edgekv-data
    """


@main.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    envvar="EDGEKV_CONFIG",
    help="TOML configuration file (env EDGEKV_CONFIG).",
)
@setting_options
def serve(config_file: str | None, **settings: Any) -> None:
    """Run a PoP node until SIGTERM or Ctrl-C.

    Prints one line with its URL, data directory and node id once it serves.
    On SIGTERM/SIGINT it stops accepting requests, finishes those in flight and
    commits every acknowledged write before exiting.

    Example: edgekv serve --data-dir ./edgekv-data --port 8787
    """
    from edgekv.server import serve as run_server
    from edgekv.store.datadir import DataDirError

    try:
        config = load_config(settings, config_file=config_file)
        run_server(config, reload=lambda: load_config(settings, config_file=config_file))
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    except DataDirError as exc:  # exit 1 with the reason, not a traceback
        raise click.ClickException(str(exc)) from None


@main.group()
def token() -> None:
    """Manage bearer tokens.

    Example: edgekv token create --name edge-fn --scope read:flags
    """


@token.command("create")
@click.option("--name", required=True, help="A name for the token, shown in logs.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    help="admin, read:PATTERN or write:PATTERN (repeatable; PATTERN a namespace glob).",
)
@click.option(
    "--url",
    envvar="EDGEKV_URL",
    default=None,
    help="Create it at this running node (kept in its database, replicated) instead of "
    "printing config lines (env EDGEKV_URL).",
)
@click.option("--token", "admin_token", envvar="EDGEKV_TOKEN", default=None, help="Admin token.")
@click.option(
    "--rate-limit", type=float, default=None, help="Requests per second (default: the node's)."
)
def token_create(
    name: str,
    scopes: tuple[str, ...],
    url: str | None,
    admin_token: str | None,
    rate_limit: float | None,
) -> None:
    """Print a new token and the config lines that grant it (or, with --url, create it
    at a running node, no restart needed).

    The node stores only the token's hash: keep the token itself safe, it is
    shown once.

    Example: edgekv token create --name edge-fn --scope read:flags --scope write:sessions
    """
    from edgekv.auth import new_token, token_toml, validate_scope

    try:
        checked = [validate_scope(scope) for scope in scopes]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--scope") from None
    if url is not None:
        from edgekv.operator_cli import create_remote

        create_remote(url, admin_token, name, checked, rate_limit)
        return
    secret = new_token()
    click.echo(f"token: {secret}")
    click.echo("\nAdd to the node's config file:\n")
    click.echo(token_toml(name, secret, checked))


@main.group()
def kv() -> None:
    """Read and write keys on a running node over HTTP.

    Example: edgekv kv put flags beta on && edgekv kv get flags beta
    """


def _client(url: str, token: str | None) -> Any:
    from edgekv_client import Client

    return Client(url, token=token)


def _fail(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(1)


@kv.command("get")
@client_options
@click.argument("namespace")
@click.argument("key")
@click.option("--metadata", "show_metadata", is_flag=True, help="Print metadata and expiration.")
def kv_get(url: str, token: str | None, namespace: str, key: str, show_metadata: bool) -> None:
    """Print a value to stdout (exit 1 if absent).

    Example: edgekv kv get flags beta
    """
    from edgekv_client import EdgeKVError

    try:
        entry = _client(url, token).get_with_metadata(namespace, key)
    except EdgeKVError as exc:
        _fail(exc)
    if entry is None:
        click.echo("not found", err=True)
        sys.exit(1)
    if show_metadata:
        click.echo(
            json.dumps({"metadata": entry.metadata, "expiration": entry.expiration}), err=True
        )
    sys.stdout.buffer.write(entry.value)
    sys.stdout.buffer.flush()


@kv.command("put")
@client_options
@click.argument("namespace")
@click.argument("key")
@click.argument("value", required=False)
@click.option(
    "--file", "source", type=click.File("rb"), help="Read the value from a file (- for stdin)."
)
@click.option("--ttl", type=int, default=None, help="Expire after this many seconds.")
@click.option("--metadata", default=None, help="Metadata as a JSON object.")
def kv_put(
    url: str,
    token: str | None,
    namespace: str,
    key: str,
    value: str | None,
    source: Any,
    ttl: int | None,
    metadata: str | None,
) -> None:
    """Write a value given as an argument or read from --file.

    Example: edgekv kv put sessions user-42 '{"cart": 3}' --ttl 3600
    """
    from edgekv_client import EdgeKVError

    if (value is None) == (source is None):
        raise click.UsageError("give VALUE or --file, not both")
    data: bytes = source.read() if source is not None else str(value).encode("utf-8")
    try:
        meta = json.loads(metadata) if metadata else None
        answer = _client(url, token).put(namespace, key, data, ttl=ttl, metadata=meta)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--metadata") from None
    except EdgeKVError as exc:
        _fail(exc)
    click.echo(json.dumps(answer))


@kv.command("delete")
@client_options
@click.argument("namespace")
@click.argument("key")
def kv_delete(url: str, token: str | None, namespace: str, key: str) -> None:
    """Delete a key (succeeds when it is absent).

    Example: edgekv kv delete sessions user-42
    """
    from edgekv_client import EdgeKVError

    try:
        answer = _client(url, token).delete(namespace, key)
    except EdgeKVError as exc:
        _fail(exc)
    click.echo(json.dumps(answer))


@kv.command("list")
@client_options
@click.argument("namespace")
@click.option("--prefix", default="", help="Only keys starting with this.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per key.")
def kv_list(url: str, token: str | None, namespace: str, prefix: str, as_json: bool) -> None:
    """List every key of a namespace in byte order, following pages.

    Example: edgekv kv list flags --prefix beta-
    """
    from edgekv_client import EdgeKVError

    try:
        for item in _client(url, token).list(namespace, prefix):
            click.echo(json.dumps(item) if as_json else item["name"])
    except EdgeKVError as exc:
        _fail(exc)


@main.group()
def cluster() -> None:
    """Inspect and manage the cluster a node belongs to.

    Example: edgekv cluster status --url http://127.0.0.1:8787
    """


@cluster.command("status")
@client_options
@click.option("--json", "as_json", is_flag=True, help="Print the status document as JSON.")
@click.option("--watch", is_flag=True, help="Refresh every second until Ctrl-C.")
def cluster_status(url: str, token: str | None, as_json: bool, watch: bool) -> None:
    """Show each member's state, lag, last contact, clock offset and last error.

    Example: edgekv cluster status --watch
    """
    from rich.console import Console
    from rich.live import Live

    from edgekv.status_view import status_renderable
    from edgekv_client import EdgeKVError

    client = _client(url, token)
    try:
        status = client.cluster_status()
        if as_json:
            click.echo(json.dumps(status, indent=2))
            return
        if not watch:
            Console().print(status_renderable(status))
            return
        with Live(status_renderable(status), refresh_per_second=2) as live:
            while True:
                time.sleep(1)
                live.update(status_renderable(client.cluster_status()))
    except EdgeKVError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        pass


@cluster.command("remove")
@client_options
@click.argument("node_id")
def cluster_remove(url: str, token: str | None, node_id: str) -> None:
    """Remove a dead member (by its hex node id) from the cluster.

    Example: edgekv cluster remove 5c0224d15cc98941
    """
    from edgekv_client import EdgeKVError

    try:
        click.echo(json.dumps(_client(url, token).remove_member(node_id)))
    except EdgeKVError as exc:
        _fail(exc)


@main.command()
@click.option(
    "--base-port",
    type=int,
    default=8787,
    show_default=True,
    help="Ports of the three PoPs: this and the next two (0: any free ports).",
)
def demo(base_port: int) -> None:
    """Start three replicating PoPs on loopback with temporary data, until Ctrl-C.

    Writes a key at the first PoP, shows it arriving at the other two, then
    prints each URL and the cluster status table.

    Example: edgekv demo --base-port 8787
    """
    from edgekv.demo import run_demo

    run_demo(base_port)


def _add_operator_commands() -> None:
    """backup, restore, export, import and token list|revoke (edgekv.operator_cli)."""
    from edgekv import operator_cli

    for command in (
        operator_cli.backup,
        operator_cli.restore,
        operator_cli.export,
        operator_cli.import_,
    ):
        main.add_command(command)
    token.add_command(operator_cli.token_list)
    token.add_command(operator_cli.token_revoke)


_add_operator_commands()

if __name__ == "__main__":  # pragma: no cover
    main()
