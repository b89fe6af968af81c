"""The operator's commands: backup, restore, export, import, and runtime tokens.

Each is a thin layer over :mod:`edgekv.store.backup`, :mod:`edgekv.importing`
and the admin routes (:mod:`edgekv.http.operator_routes`), with a progress bar
on stderr. :mod:`edgekv.cli` adds them to the ``edgekv`` group.
"""

from __future__ import annotations

import json
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import click

from edgekv.operator_http import OperatorError, open_request, request_json

_CHUNK = 1024 * 1024
_DEFAULT_HORIZON = 7 * 86400.0


F = TypeVar("F", bound=Callable[..., Any])


def _url_option(required: bool = True) -> Callable[[F], F]:
    return click.option(
        "--url",
        envvar="EDGEKV_URL",
        default=None,
        required=required,
        help="Node URL (env EDGEKV_URL).",
    )


_token_option = click.option(
    "--token", envvar="EDGEKV_TOKEN", default=None, help="Admin bearer token (env EDGEKV_TOKEN)."
)


def _bytes_bar() -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )


def _count_bar() -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


# -- backup and restore --------------------------------------------------------------


@click.command()
@_url_option(required=False)
@_token_option
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Back up the stopped node of this data directory instead of a running one.",
)
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Backup file."
)
def backup(url: str | None, token: str | None, data_dir: Path | None, out: Path) -> None:
    """Write a consistent, checksummed backup of a node's database to --out.

    With --url the running node snapshots itself while it keeps serving writes
    (admin token); with --data-dir a stopped node's database is copied.

    Example: edgekv backup --url http://127.0.0.1:8787 --out pop1.ekvbackup
    """
    from edgekv.store.backup import BackupError, Manifest

    if (url is None) == (data_dir is None):
        raise click.UsageError("give --url (a running node) or --data-dir (a stopped one)")
    partial = out.with_name(out.name + ".partial")
    try:
        if url is not None:
            manifest: Manifest = _backup_remote(url, token, partial)
        else:
            assert data_dir is not None
            manifest = _backup_stopped(data_dir, partial)
    except (OperatorError, BackupError, OSError) as exc:
        partial.unlink(missing_ok=True)
        _fail(str(exc))
    except Exception as exc:  # DataDirError: the directory is in use, or empty
        partial.unlink(missing_ok=True)
        _fail(str(exc))
    partial.replace(out)
    click.echo(
        json.dumps(
            {
                "out": str(out),
                "node_id": manifest.node_id,
                "seq": manifest.seq,
                "created_ms": manifest.created_ms,
                "bytes": manifest.db_bytes,
                "sha256": manifest.sha256,
            }
        )
    )


def _backup_remote(url: str, token: str | None, partial: Path) -> Any:
    from edgekv.store.backup import BackupError, copy_verified, parse_manifest

    with _bytes_bar() as bar:
        task = bar.add_task("snapshot", total=None)
        response = open_request(url, token, "GET", "/v1/admin/backup", timeout=3600.0)
        try:
            header = response.getheader("EdgeKV-Backup-Manifest")
            if header is None:
                raise BackupError("the node sent no EdgeKV-Backup-Manifest header")
            manifest = parse_manifest(header)
            bar.update(task, description="backup", total=manifest.db_bytes)
            with partial.open("wb") as handle:
                handle.write(manifest.line())
                copy_verified(
                    manifest,
                    response,
                    handle,
                    lambda done, total: bar.update(task, completed=done),
                )
        finally:
            response.close()
    return manifest


def _backup_stopped(data_dir: Path, partial: Path) -> Any:
    from edgekv.store.backup import snapshot_stopped, write_backup

    with tempfile.TemporaryDirectory(dir=partial.parent) as scratch, _bytes_bar() as bar:
        snapshot_file = Path(scratch) / "snapshot.db"
        task = bar.add_task("snapshot (pages)", total=None)
        manifest = snapshot_stopped(
            data_dir,
            snapshot_file,
            lambda done, total: bar.update(task, completed=done, total=total),
        )
        bar.update(task, description="write", completed=0, total=manifest.db_bytes)
        with partial.open("wb") as handle:
            write_backup(
                manifest,
                snapshot_file,
                handle,
                lambda done, total: bar.update(task, completed=done),
            )
    return manifest


@click.command()
@click.argument("backup_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--data-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="An empty data directory for the restored node.",
)
@click.option(
    "--tombstone-horizon",
    type=float,
    default=_DEFAULT_HORIZON,
    show_default=True,
    help="The cluster's tombstone_horizon in seconds: an older backup is refused.",
)
def restore(backup_file: Path, data_dir: Path, tombstone_horizon: float) -> None:
    """Restore a backup into an empty data directory as a new node that rejoins its peers.

    The restored node gets a new node id: its peers send it what it lacks
    (deletes included) and take its data as a new member's. A backup older than
    the tombstone horizon is refused, since it could bring back keys deleted
    since: start such a node empty instead (a full re-sync).

    Example: edgekv restore pop1.ekvbackup --data-dir /var/lib/edgekv
    """
    from edgekv.store.backup import BackupError, RestoreRefused
    from edgekv.store.backup import restore as restore_backup
    from edgekv.store.datadir import DataDirError

    try:
        with _bytes_bar() as bar:
            task = bar.add_task("restore", total=None)
            manifest, new_id = restore_backup(
                backup_file,
                data_dir,
                tombstone_horizon,
                lambda done, total: bar.update(task, completed=done, total=total),
            )
    except (BackupError, RestoreRefused, DataDirError, OSError) as exc:
        _fail(str(exc))
    click.echo(
        json.dumps(
            {
                "data_dir": str(data_dir),
                "node_id": f"{new_id:016x}",
                "restored_from": manifest.node_id,
                "backup_created_ms": manifest.created_ms,
            }
        )
    )
    click.echo(
        f"Start the node on {data_dir} with its usual --peer and secret; once it runs, "
        f"remove the old member: edgekv cluster remove {manifest.node_id}",
        err=True,
    )


# -- export and import ---------------------------------------------------------------


@click.command()
@_url_option()
@_token_option
@click.option(
    "--namespace",
    default=None,
    help="Only this namespace and the collection of this name (default: every one).",
)
@click.option(
    "--prefix", default=None, help="Only keys and ids starting with this (with --namespace)."
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write here (default: stdout).",
)
def export(
    url: str, token: str | None, namespace: str | None, prefix: str | None, out: Path | None
) -> None:
    """Write every live key as NDJSON (ns, key, value in base64, metadata, expiration),
    then every live document (collection, id, document), every counter not at 0
    (ns, counter, value, expiration) and every set member (ns, set, member), as
    the node asked sees them.

    Streamed: memory stays constant however many keys there are.

    Example: edgekv export --url http://127.0.0.1:8787 --namespace flags --out flags.ndjson
    """
    query: dict[str, str] = {}
    if namespace is not None:
        query["namespace"] = namespace
    if prefix is not None:
        query["prefix"] = prefix
    path = "/v1/admin/export" + (f"?{urlencode(query)}" if query else "")
    try:
        response = open_request(url, token, "GET", path, timeout=600.0)
    except OperatorError as exc:
        _fail(str(exc))
    lines = 0
    target = out.open("wb") if out is not None else sys.stdout.buffer
    try:
        with _count_bar() as bar:
            task = bar.add_task("export", total=None)
            while chunk := response.read(_CHUNK):
                target.write(chunk)
                lines += chunk.count(b"\n")
                bar.update(task, completed=lines)
    finally:
        response.close()
        if out is not None:
            target.close()
        else:
            target.flush()
    click.echo(f"exported {lines} lines", err=True)


@contextmanager
def _stop_between_requests() -> Iterator[list[bool]]:
    """SIGINT and SIGTERM ask the import to stop after the request in flight."""
    asked: list[bool] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        asked.append(True)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield asked
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_url_option()
@_token_option
@click.option(
    "--format",
    "file_format",
    type=click.Choice(["ndjson", "workers-kv"]),
    default="ndjson",
    show_default=True,
    help="ndjson: an edgekv export; workers-kv: the JSON array of wrangler kv bulk put.",
)
@click.option(
    "--namespace", default=None, help="Write into this namespace (required for workers-kv)."
)
@click.option(
    "--batch",
    type=click.IntRange(1, 10_000),
    default=1000,
    show_default=True,
    help="Keys per request.",
)
@click.option(
    "--progress-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where the import remembers how far it got (default: FILE.progress).",
)
def import_(
    file: Path,
    url: str,
    token: str | None,
    file_format: str,
    namespace: str | None,
    batch: int,
    progress_file: Path | None,
) -> None:
    """Write the keys of FILE to a node in bulk requests; resumable.

    Interrupted (Ctrl-C, SIGTERM, a failed request), it stops after the request
    in flight and records how far it got; run the same command again to
    continue from there. Keys whose expiration has passed are skipped. A
    counter is set to its exported value (a reset, then an add), a set gets its
    members added (--batch members per request at most).

    Example: edgekv import --format workers-kv --namespace flags export.json --url http://127.0.0.1:8787
    """
    from edgekv.importing import (
        Batch,
        ImportFileError,
        PipelinedSender,
        ProgressFile,
        batches,
        ndjson_items,
        workers_kv_items,
    )
    from edgekv.operator_http import KeepAlive

    if file_format == "workers-kv" and namespace is None:
        raise click.UsageError("--format workers-kv needs --namespace")
    progress = ProgressFile(progress_file or file.with_name(file.name + ".progress"))
    counts = {"written": 0, "skipped_expired": 0}
    connection = KeepAlive(url, token)
    stopped_at: int | None = None
    try:
        after = progress.done()
        if after:
            click.echo(f"resuming after item {after} ({progress.path})", err=True)
        if file_format == "ndjson":
            items = ndjson_items(file, namespace)
            total: float = file.stat().st_size
        else:
            assert namespace is not None
            items = workers_kv_items(file, namespace)
            total = float(sum(1 for _ in workers_kv_items(file, namespace)))
        with _stop_between_requests() as asked, _count_bar() as bar:
            task = bar.add_task("import", total=total)

            def send(request: Batch) -> None:
                try:
                    for method, path, body in request.requests():
                        connection.send(method, path, body)
                except OperatorError as exc:
                    first = request.last - len(request.operations) + 1
                    raise OperatorError(f"items {first}-{request.last}: {exc}") from None

            def sent(request: Batch) -> None:
                counts["written"] += len(request.operations)
                bar.update(task, completed=request.size)

            sender = PipelinedSender(send, progress, sent)
            try:
                for request, expired in batches(items, after, batch):
                    if asked:
                        stopped_at = request.last - len(request.operations)
                        break
                    counts["skipped_expired"] += expired
                    sender.submit(request)
            finally:
                sender.close()
    except (ImportFileError, OperatorError) as exc:
        _fail(f"{exc} (written so far: {counts['written']}; run again to resume)")
    finally:
        connection.close()
    if stopped_at is not None:
        click.echo(
            f"stopped after item {progress.done()}; run the command again to resume", err=True
        )
        sys.exit(130)
    progress.remove()
    click.echo(json.dumps(counts))


# -- runtime tokens ------------------------------------------------------------------


def create_remote(
    url: str, token: str | None, name: str, scopes: list[str], rate_limit: float | None
) -> None:
    """``edgekv token create --url``: create a runtime token at a running node."""
    try:
        answer = request_json(
            url,
            token,
            "POST",
            "/v1/admin/tokens",
            {"name": name, "scopes": scopes, "rate_limit": rate_limit},
        )
    except OperatorError as exc:
        _fail(str(exc))
    click.echo(f"token: {answer['token']}")
    click.echo(f"id: {answer['id']} (kept in the node's database; it replicates to every PoP)")


@click.command("list")
@_url_option()
@_token_option
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
def token_list(url: str, token: str | None, as_json: bool) -> None:
    """List the node's tokens: the config file's and the runtime ones (never secrets).

    Example: edgekv token list --url http://127.0.0.1:8787
    """
    try:
        answer = request_json(url, token, "GET", "/v1/admin/tokens")
    except OperatorError as exc:
        _fail(str(exc))
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    for entry in answer["tokens"]:
        limit = "" if entry["rate_limit"] is None else f" rate_limit={entry['rate_limit']}/s"
        click.echo(
            f"{entry['id']}  {entry['source']:7}  {entry['name']}  "
            f"{' '.join(entry['scopes'])}{limit}"
        )


@click.command("revoke")
@_url_option()
@_token_option
@click.argument("id_or_name")
def token_revoke(url: str, token: str | None, id_or_name: str) -> None:
    """Revoke a runtime token by id or name; every PoP refuses it once the revoke reaches it.

    Example: edgekv token revoke --url http://127.0.0.1:8787 3f9a0c1d2e4b
    """
    try:
        answer = request_json(
            url, token, "DELETE", f"/v1/admin/tokens/{quote(id_or_name, safe='')}"
        )
    except OperatorError as exc:
        _fail(str(exc))
    click.echo(json.dumps(answer))
