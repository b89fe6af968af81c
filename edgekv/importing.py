"""Import files into a node in bulk requests, resumable after an interruption.

Two formats: EdgeKV's own export (NDJSON, one entry per line: ``ns``,
``key``, ``value`` in base64, ``metadata``, ``expiration``; or a document:
``collection``, ``id``, ``document``; or a counter: ``ns``, ``counter``,
``value``, ``expiration``; or a set member: ``ns``, ``set``, ``member``) and
the JSON array ``wrangler kv bulk put`` takes (``key``, ``value``,
``base64``, ``expiration``, ``expiration_ttl``, ``metadata``), for moving
from Workers KV.

Items are sent as bulk requests (``POST /v1/kv/{ns}/_bulk``) of consecutive
items of one namespace; a document as a PUT of its own; a counter as a reset
then an add of its value (so it ends at the value, however often it is sent:
an import sent again never counts twice at the PoP it writes to); a set's
consecutive members as adds (``POST /v1/sets/{ns}/{key}``). After each
acknowledged request the progress file records the number of the last item
it held (written to a new file and renamed over the old, so it is never
half-written); a later run with the same progress file starts after it.
Ctrl-C (SIGINT) or SIGTERM stops the import between requests, so an
interrupted and resumed import sends each item once; only a hard kill during
a request can send that request again (its writes are the same values
again). The progress file is removed when the import completes.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

MAX_BATCH_BYTES = 8 * 1024 * 1024
"""Most bytes of JSON one bulk request carries (well below max_request_bytes)."""


class ImportFileError(ValueError):
    """An item of the file cannot be imported; the message names it."""


@dataclass(slots=True)
class Item:
    """One entry to write: its place in the file, namespace and bulk operation."""

    number: int
    ns: str
    operation: dict[str, Any]
    size: int
    """Bytes of the file read up to and including this item (for progress)."""
    encoded_bytes: int
    """About the bytes of JSON the operation takes in a request (for batching)."""
    kind: str = "kv"
    """``kv`` (an operation of a bulk request), ``document`` (a PUT of its own),
    ``counter`` (a reset and an add of its own) or ``set`` (a member)."""
    group: str = ""
    """What batches of its kind share besides the namespace (a set's key)."""


DOCUMENT = "document"
COUNTER = "counter"
SET = "set"


def ndjson_items(path: Path, namespace: str | None) -> Iterator[Item]:
    """The items of an EdgeKV export, one per line; ``namespace`` overrides each line's."""
    with path.open("rb") as handle:
        number = 0
        done = 0
        for raw in handle:
            done += len(raw)
            if not raw.strip():
                continue
            number += 1
            try:
                entry = json.loads(raw)
                if "collection" in entry:  # a document: PUT whole, one request each
                    collection = namespace or entry["collection"]
                    document = {"id": entry["id"], "document": entry["document"]}
                    yield Item(number, collection, document, done, len(raw), DOCUMENT)
                    continue
                if "counter" in entry:
                    yield _counter_item(number, namespace or entry["ns"], entry, done, len(raw))
                    continue
                if "set" in entry:
                    yield _member_item(number, namespace or entry["ns"], entry, done, len(raw))
                    continue
                ns = namespace or entry["ns"]
                operation: dict[str, Any] = {
                    "op": "put",
                    "key": entry["key"],
                    "value": entry["value"],
                }
            except (ValueError, KeyError, TypeError) as exc:
                raise ImportFileError(f"line {number}: not an export line ({exc})") from None
            if entry.get("metadata") is not None:
                operation["metadata"] = entry["metadata"]
            if entry.get("expiration") is not None:
                operation["expiration"] = entry["expiration"]
            yield Item(number, ns, operation, done, len(raw))


def _counter_item(number: int, ns: str, entry: dict[str, Any], done: int, size: int) -> Item:
    key, value, expiration = entry["counter"], entry["value"], entry.get("expiration")
    if not isinstance(key, str) or type(value) is not int:
        raise TypeError("counter is a string and value an integer")
    operation: dict[str, Any] = {"key": key, "add": value}
    if expiration is not None:
        operation["expiration"] = expiration
    return Item(number, ns, operation, done, size, COUNTER)


def _member_item(number: int, ns: str, entry: dict[str, Any], done: int, size: int) -> Item:
    key, member = entry["set"], entry["member"]
    if not isinstance(key, str) or not isinstance(member, str):
        raise TypeError("set and member are strings")
    return Item(number, ns, {"member": member}, done, size, SET, key)


def workers_kv_items(path: Path, namespace: str) -> Iterator[Item]:
    """The items of a ``wrangler kv bulk put`` file (a JSON array), all into ``namespace``."""
    try:
        document = json.loads(path.read_bytes())
    except ValueError as exc:
        raise ImportFileError(f"{path}: not JSON ({exc})") from None
    if not isinstance(document, list):
        raise ImportFileError(f"{path}: a Workers KV bulk file is a JSON array")
    for number, entry in enumerate(document, start=1):
        operation = _workers_kv_operation(number, entry)
        yield Item(number, namespace, operation, number, len(json.dumps(operation)))


def _workers_kv_operation(number: int, entry: object) -> dict[str, Any]:
    where = f"item {number}"
    if not isinstance(entry, dict):
        raise ImportFileError(f"{where}: not an object")
    unknown = set(entry) - {"key", "value", "base64", "expiration", "expiration_ttl", "metadata"}
    if unknown:
        raise ImportFileError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    key, value = entry.get("key"), entry.get("value")
    if not isinstance(key, str) or not isinstance(value, str):
        raise ImportFileError(f"{where}: key and value must be strings")
    if entry.get("base64"):
        try:
            base64.b64decode(value, validate=True)
        except binascii.Error:
            raise ImportFileError(f"{where}: base64 is true but value is not base64") from None
        encoded = value
    else:
        encoded = base64.b64encode(value.encode("utf-8")).decode("ascii")
    operation: dict[str, Any] = {"op": "put", "key": key, "value": encoded}
    if entry.get("metadata") is not None:
        operation["metadata"] = entry["metadata"]
    if entry.get("expiration") is not None:
        operation["expiration"] = entry["expiration"]
    elif entry.get("expiration_ttl") is not None:
        operation["ttl"] = entry["expiration_ttl"]
    return operation


@dataclass(slots=True)
class Batch:
    """Consecutive items of one namespace: one bulk request (or one document's PUT)."""

    ns: str
    kind: str = "kv"
    group: str = ""
    operations: list[dict[str, Any]] = field(default_factory=list)
    last: int = 0
    size: int = 0
    body_bytes: int = 0

    def requests(self) -> list[tuple[str, str, bytes]]:
        """The requests that write this batch, in order: method, path and body."""
        ns = quote(self.ns, safe="")
        if self.kind == DOCUMENT:
            (document,) = self.operations
            path = f"/v1/docs/{ns}/{quote(document['id'], safe='')}"
            return [("PUT", path, _compact(document["document"]))]
        if self.kind == COUNTER:
            (counter,) = self.operations
            path = f"/v1/counters/{ns}/{quote(counter['key'], safe='/')}"
            add = {name: counter[name] for name in ("add", "expiration") if name in counter}
            # A reset first: the counter ends at the value even when sent again.
            return [("DELETE", path, b""), ("POST", path, _compact(add))]
        if self.kind == SET:
            path = f"/v1/sets/{ns}/{quote(self.group, safe='/')}"
            members = [operation["member"] for operation in self.operations]
            return [("POST", path, _compact({"add": members}))]
        return [("POST", f"/v1/kv/{ns}/_bulk", _compact({"operations": self.operations}))]


def _compact(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def batches(
    items: Iterator[Item], after: int, max_operations: int, now: float | None = None
) -> Iterator[tuple[Batch, int]]:
    """Bulk requests of the items after number ``after``, with how many expired items
    (already gone, so not sent) preceded each."""
    batch: Batch | None = None
    expired = 0
    for item in items:
        if item.number <= after:
            continue
        at = item.operation.get("expiration")
        if isinstance(at, int) and at <= (time.time() if now is None else now) + 1:
            expired += 1
            continue
        encoded = item.encoded_bytes
        if batch is not None and (
            batch.ns != item.ns
            or batch.kind != item.kind
            or batch.group != item.group
            or item.kind in (DOCUMENT, COUNTER)
            or len(batch.operations) >= max_operations
            or batch.body_bytes + encoded > MAX_BATCH_BYTES
        ):
            yield batch, expired
            expired = 0
            batch = None
        if batch is None:
            batch = Batch(item.ns, item.kind, item.group)
        batch.operations.append(item.operation)
        batch.last, batch.size = item.number, item.size
        batch.body_bytes += encoded + 1
    if batch is not None:
        yield batch, expired


class ProgressFile:
    """The number of the last item an import has written, kept across runs."""

    def __init__(self, path: Path) -> None:
        """Keep the progress in ``path``."""
        self.path = path

    def done(self) -> int:
        """Items already written by an earlier run (0: start from the beginning)."""
        try:
            return int(json.loads(self.path.read_text())["done"])
        except FileNotFoundError:
            return 0
        except (ValueError, KeyError, TypeError):
            raise ImportFileError(f"{self.path} is not a progress file") from None

    def save(self, done: int) -> None:
        """Record that every item up to ``done`` is written (atomically)."""
        partial = self.path.with_name(self.path.name + ".tmp")
        partial.write_text(json.dumps({"done": done}))
        os.replace(partial, self.path)

    def remove(self) -> None:
        """The import completed: a next run starts from the beginning."""
        self.path.unlink(missing_ok=True)


class PipelinedSender:
    """Sends batches from a thread of its own while the caller reads the next ones.

    One request is in flight at a time and requests go in order, so the
    progress file (saved after each acknowledged request) always names a prefix
    of the file; reading and encoding the next batch overlaps the node's work
    on the current one. After a failed request nothing more is sent, and
    :meth:`submit` or :meth:`close` raises its error.
    """

    def __init__(
        self,
        send: Callable[[Batch], None],
        progress: ProgressFile,
        on_sent: Callable[[Batch], None],
        depth: int = 2,
    ) -> None:
        """Send each batch with ``send``; record it in ``progress``; then ``on_sent``."""
        self._send = send
        self._progress = progress
        self._on_sent = on_sent
        self._queue: queue.Queue[Batch | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="import-sender", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain without sending: an earlier request failed
            try:
                self._send(batch)
            except BaseException as exc:  # handed to the caller's thread
                self._error = exc
                continue
            self._progress.save(batch.last)
            self._on_sent(batch)

    def submit(self, batch: Batch) -> None:
        """Queue ``batch`` (waiting while ``depth`` are queued)."""
        if self._error is not None:
            raise self._error
        self._queue.put(batch)

    def close(self) -> None:
        """Wait until every queued batch is sent; raise the error of a failed one."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
