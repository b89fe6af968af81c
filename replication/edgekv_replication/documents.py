"""JSON documents as Y documents, free of I/O: conversion, merge patches, merges, limits.

A document is one pycrdt :class:`~pycrdt.Doc` with two root maps:

``content``  the JSON object itself. Nested objects are Y maps and arrays are
             Y arrays (never opaque values), so concurrent edits of different
             fields -- at any depth -- both survive. A Y text found here
             (written by a Yjs client) reads as a JSON string.
``meta``     ``created`` (set by every replace) and ``deleted`` (set by a
             delete, removed by a later replace).

A document exists when ``meta`` has no ``deleted`` key and it was created
(or has content). Because a Y map removes only the entries a replica had
seen, a replace removes only the deletes it has seen: **a delete wins over
every write concurrent with it** (patch, replace, Y update), and a replace
made after the delete was seen brings the document back. A patch of a
document that does not exist is refused by the node (404), so a patch never
revives one.

Replication: a document change travels as an ordinary
:class:`~edgekv_replication.changes.Change` in the same batches as key-value
entries (see :func:`document_change`). Its namespace is ``"@doc:" +
collection`` (``@`` and ``:`` are not allowed in key-value namespaces, so
:func:`is_document` cannot mistake one for the other), its key the document
id, its value a Y update. Applying Y updates is commutative, associative and
idempotent, so :func:`merge_document_changes` is a join like
:func:`~edgekv_replication.changes.merge_entries`.

Numbers: Y stores numbers up to 2**53 as IEEE doubles and larger integers as
64-bit integers. So integers stay exact integers on every replica from
-(2**63) to 2**63 - 2 (Yrs turns 2**63 - 1 into a double); beyond that a
write is refused (``number_out_of_range``), as are non-finite floats. Y
encodes an integer that a double holds exactly as a double, so every
integral number within that range reads back as an integer: ``1.0`` and
``1e18`` read back as ``1`` and ``1000000000000000000``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from pycrdt import Array, Doc, Map, Subscription, TransactionEvent, get_update, merge_updates

from edgekv_replication.changes import Change
from edgekv_replication.versions import encode_version

DOC_NS_PREFIX = "@doc:"
"""Namespace prefix of document changes (never a valid key-value namespace)."""
CONTENT = "content"
META = "meta"
CREATED = "created"
DELETED = "deleted"

MAX_DOCUMENT_BYTES = 1024 * 1024
"""A document's JSON, compact and UTF-8 encoded, is at most this long."""
MAX_Y_STATE_BYTES = 8 * MAX_DOCUMENT_BYTES
"""A document's whole Y state, encoded, is at most this long when a client edits it, and
no document change a node sends (an update, a compacted snapshot) is longer. Room for a
1 MiB document in Y's encoding (up to about 4x its JSON for small nested arrays) and
for its history (deleted items squash into a few bytes each run); a bound independent
of ``max_value_bytes``, so every node takes the same document changes."""
ROOTS = frozenset({"content", "meta"})
"""The only root types of a document: an update that creates any other is refused."""
MAX_DEPTH = 32
"""Nesting levels of a document: the top-level object is level 1."""
MIN_INT = -(1 << 63)
MAX_INT = (1 << 63) - 2
"""Not 2**63 - 1: Yrs encodes that one as the double 2**63 (a saturating cast), losing it."""

EMPTY_UPDATE = b"\x00\x00"
"""The Y update of a transaction that changed nothing."""

_MISSING: Any = object()

YDoc = Doc[Any]
"""A Y document (pycrdt), as this module uses it."""
YMap = Map[Any]


class DocumentError(ValueError):
    """Bad input for a document; ``code`` is the API error code to answer with."""

    def __init__(self, code: str, message: str) -> None:
        """Create an error carrying an error code of ``edgekv_replication.codes``."""
        super().__init__(message)
        self.code = code
        self.message = message


# -- change log -----------------------------------------------------------------


def is_document(change: Change) -> bool:
    """Whether ``change`` is a document change (else a key-value entry)."""
    return change.ns.startswith(DOC_NS_PREFIX)


def document_ns(collection: str) -> str:
    """The change namespace of ``collection``."""
    return DOC_NS_PREFIX + collection


def collection_of(change: Change) -> str:
    """The collection of a document change."""
    return change.ns[len(DOC_NS_PREFIX) :]


def document_change(
    collection: str,
    doc_id: str,
    update: bytes,
    hlc: int,
    node: int,
    seq: int = 0,
    version: tuple[int, int] | None = None,
) -> Change:
    """A document change: ``update`` (Y update bytes) stamped ``(hlc, node)``.

    ``version`` is the newest write the update includes when that is not
    ``(hlc, node)`` itself (a compacted snapshot); it travels in ``metadata``.
    """
    metadata = None if version is None else encode_version(*version)
    return Change(document_ns(collection), doc_id.encode(), update, metadata, None, hlc, node, seq)


def version_of(change: Change) -> tuple[int, int]:
    """The newest write a document change includes: ``(hlc, node)``."""
    return version_of_row(change.metadata, change.hlc, change.node)


def version_of_row(metadata: str | None, hlc: int, node: int) -> tuple[int, int]:
    """:func:`version_of` from a change's ``metadata``, ``hlc`` and ``node``."""
    if metadata and len(metadata) == 32:
        try:
            return int(metadata[:16], 16), int(metadata[16:], 16)
        except ValueError:
            pass
    return hlc, node


def merge_document_changes(a: Change, b: Change) -> Change:
    """Join two changes of the same document: the union of their updates.

    Commutative, associative and idempotent in the state the result holds
    (the bytes of merged Y updates may differ with the order; the document
    they decode to does not).
    """
    if (a.ns, a.key) != (b.ns, b.key) or not (is_document(a) and is_document(b)):
        raise ValueError("merge_document_changes takes two changes of the same document")
    if a.value is None or b.value is None:
        raise ValueError("a document change always carries a Y update")
    newest = max(version_of(a), version_of(b))
    stamp = max((a.hlc, a.node), (b.hlc, b.node))
    merged = merge_updates(a.value, b.value)
    return Change(a.ns, a.key, merged, encode_version(*newest), None, stamp[0], stamp[1], 0)


# -- JSON values ------------------------------------------------------------------


def normalize(value: Any, depth: int = 1) -> Any:
    """Check a parsed JSON value and return it as Y will read it back.

    Raises DocumentError for integers out of 64-bit range, non-finite
    floats and nesting deeper than :data:`MAX_DEPTH`.
    """
    kind = type(value)  # exact types first: this runs on every write
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        if not MIN_INT <= value <= MAX_INT:
            raise DocumentError(
                "number_out_of_range",
                f"integer {value} is outside -2**63..2**63-2; send it as a string",
            )
        return value
    if kind is dict:
        if depth > MAX_DEPTH:
            raise _too_deep()
        return {k: normalize(v, depth + 1) for k, v in value.items()}
    if kind is list:
        if depth > MAX_DEPTH:
            raise _too_deep()
        return [normalize(v, depth + 1) for v in value]
    if kind is float:
        if not math.isfinite(value):
            raise DocumentError("number_out_of_range", "numbers must be finite")
        if value.is_integer() and MIN_INT <= value <= MAX_INT:
            return int(value)
        return value
    raise DocumentError("invalid_json", f"not a JSON value: {kind.__name__}")


def _too_deep() -> DocumentError:
    return DocumentError("document_too_deep", f"a document nests at most {MAX_DEPTH} levels")


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
# One encoder for every call: json.dumps with options builds a new one each time.


def serialize(document: Mapping[str, Any]) -> str:
    """The canonical JSON text of a document (sorted keys, compact): equal on every replica."""
    return _CANONICAL.encode(document)


def check_size(text: str) -> None:
    """Raise ``document_too_large`` unless ``text`` is at most 1 MiB of UTF-8."""
    # A character takes at most 4 bytes: only encode when it could matter.
    if len(text) * 4 > MAX_DOCUMENT_BYTES and len(text.encode()) > MAX_DOCUMENT_BYTES:
        raise DocumentError(
            "document_too_large", f"a document is at most {MAX_DOCUMENT_BYTES} bytes of JSON"
        )


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386 on plain values: a new object, ``target`` is left as it was."""
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            current = result.get(key)
            result[key] = merge_patch(current if isinstance(current, dict) else {}, value)
        else:
            result[key] = value
    return result


def _same(a: Any, b: Any) -> bool:
    """JSON equality that tells 1, 1.5, true and "1" apart."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def to_y(value: Any) -> Any:
    """A normalized JSON value as Y content: objects as maps, arrays as arrays."""
    if isinstance(value, dict):
        return Map({k: to_y(v) for k, v in value.items()})
    if isinstance(value, list):
        return Array([to_y(v) for v in value])
    return value


def _from_y(value: Any, strict: bool) -> Any:
    # Map.to_py() gives Python values with every number a float (below 2**53).
    if isinstance(value, dict):
        return {k: _from_y(v, strict) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_y(v, strict) for v in value]
    if isinstance(value, float):
        if value.is_integer() and MIN_INT <= value <= MAX_INT:
            return int(value)
        if not math.isfinite(value):
            return _not_json(value, strict)
        return value
    if value is None or isinstance(value, str | int):
        return value
    return _not_json(value, strict)


def _not_json(value: Any, strict: bool) -> None:
    if strict:
        raise DocumentError(
            "invalid_yupdate", f"the update stores a {type(value).__name__}, which is not JSON"
        )
    return None  # what another replica wrote reads as null rather than failing the read


# -- Y documents ------------------------------------------------------------------


def new_doc(client_id: int, *updates: bytes) -> YDoc:
    """A Y document with this process's client id, with ``updates`` applied."""
    doc: YDoc = Doc(client_id=client_id)
    for update in updates:
        doc.apply_update(update)
    return doc


def content_of(doc: YDoc) -> YMap:
    """The root map holding the JSON object."""
    content: YMap = doc.get(CONTENT, type=Map)
    return content


def meta_of(doc: YDoc) -> YMap:
    """The root map holding ``created`` and ``deleted``."""
    meta: YMap = doc.get(META, type=Map)
    return meta


def exists(doc: YDoc) -> bool:
    """Whether the document exists (created or given content, and not deleted)."""
    meta = meta_of(doc)
    if DELETED in meta:
        return False
    return CREATED in meta or len(content_of(doc)) > 0


def read_json(doc: YDoc, strict: bool = False) -> dict[str, Any] | None:
    """The document as JSON, or None when it does not exist.

    ``strict``: raise ``invalid_yupdate`` for content that is not JSON (a Y
    XML type, binary); otherwise such values read as null.
    """
    if not exists(doc):
        return None
    content = content_of(doc)
    raw = content.to_py() or {}
    result = _from_y(raw, strict)
    assert isinstance(result, dict)
    return result


def _capture(doc: YDoc, edit: Callable[[], None]) -> bytes:
    """Run ``edit`` in one Y transaction; return the update it made."""
    updates: list[bytes] = []

    def record(event: TransactionEvent) -> None:
        updates.append(event.update)

    subscription = doc.observe(record)
    try:
        with doc.transaction():
            edit()
    finally:
        doc.unobserve(subscription)
    return updates[0] if updates else EMPTY_UPDATE


def replace(doc: YDoc, current: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bytes:
    """Make the document ``new`` (normalized); return the Y update.

    Only what differs is written, recursively into nested objects, so a
    replace does not overwrite concurrent edits of fields it leaves as they
    were. ``current`` is :func:`read_json` of ``doc``.
    """
    return _capture(doc, lambda: _replace(content_of(doc), meta_of(doc), current, new))


def _replace(
    content: YMap, meta: YMap, current: Mapping[str, Any] | None, new: Mapping[str, Any]
) -> None:
    if current is None:
        content.clear()  # what a delete left behind (concurrent patches)
        _replace_map(content, {}, new)
    else:
        _replace_map(content, current, new)
    if CREATED not in meta:
        meta[CREATED] = True
    if DELETED in meta:
        del meta[DELETED]


def _replace_map(ymap: YMap, current: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    for key in [k for k in current if k not in new]:
        del ymap[key]
    for key, value in new.items():
        old = current.get(key, _MISSING)
        if _same(old, value):
            continue
        child = ymap.get(key) if isinstance(old, dict) and isinstance(value, dict) else None
        if isinstance(child, Map):
            _replace_map(child, old, value)
        else:
            ymap[key] = to_y(value)


def patch(doc: YDoc, current: Mapping[str, Any], merge: Mapping[str, Any]) -> bytes:
    """Apply an RFC 7386 merge patch (normalized) as Y operations; return the Y update.

    Nested objects that exist are patched in place (so concurrent patches of
    different nested fields both survive); an object the patch introduces
    becomes a new Y map; arrays are replaced whole, as RFC 7386 says.
    Values equal to the current ones are not written.
    """
    return _capture(doc, lambda: _patch_map(content_of(doc), current, merge))


def _patch_map(ymap: YMap, current: Mapping[str, Any], merge: Mapping[str, Any]) -> None:
    # Inside the caller's transaction (a nested one reuses it).
    if _RAW_MAP is None:
        _patch_map_public(ymap, current, merge)
        return
    with ymap.doc.transaction() as txn:
        _patch_map_raw(ymap.doc, ymap.integrated, txn._txn, current, merge)


def _patch_map_public(ymap: YMap, current: Mapping[str, Any], merge: Mapping[str, Any]) -> None:
    for key, value in merge.items():
        old = current.get(key, _MISSING)
        if value is None:
            if old is not _MISSING:
                del ymap[key]
        elif isinstance(value, dict):
            # ``current`` is read from this document: a dict there is a Y map here.
            child = ymap[key] if isinstance(old, dict) else None
            if isinstance(child, Map):
                _patch_map_public(child, old, value)
            else:
                ymap[key] = to_y(merge_patch({}, value))
        elif not _same(old, value):
            ymap[key] = to_y(value)


def _patch_map_raw(
    doc: YDoc, raw: Any, txn: Any, current: Mapping[str, Any], merge: Mapping[str, Any]
) -> None:
    """:func:`_patch_map_public` on the binding's own map and transaction.

    pycrdt's ``Map`` opens a (nested) transaction, checks the key and wraps
    the result for every access: three times the cost of the Y operations of
    a small patch. Scalars are written and nested maps read here directly, as
    ``Map`` itself does inside; new maps and arrays still go through ``Map``.
    """
    for key, value in merge.items():
        old = current.get(key, _MISSING)
        if value is None:
            if old is not _MISSING:
                raw.remove(txn, key)
        elif isinstance(value, dict):
            child = raw.get(txn, key) if isinstance(old, dict) else None
            if isinstance(child, _RAW_MAP):  # type: ignore[arg-type]
                _patch_map_raw(doc, child, txn, old, value)
            else:
                Map(_doc=doc, _integrated=raw)[key] = to_y(merge_patch({}, value))
        elif not _same(old, value):
            if isinstance(value, list):
                Map(_doc=doc, _integrated=raw)[key] = to_y(value)
            else:
                raw.insert(txn, key, value)


def _raw_map_type() -> type | None:
    """The binding's map type under pycrdt's ``Map``, or None if this pycrdt hides it."""
    try:
        probe: YDoc = Doc()
        raw = probe.get("probe", type=Map).integrated
        with probe.transaction() as txn:
            raw.insert(txn._txn, "k", 2**60)
            raw.remove(txn._txn, "k")
            raw.insert(txn._txn, "k", "v")
        if probe.get("probe", type=Map).to_py() != {"k": "v"}:
            return None
        return type(raw)
    except Exception:  # another pycrdt: the public API is used instead
        return None


_RAW_MAP = _raw_map_type()


def delete(doc: YDoc) -> bytes:
    """Delete the document: clear its content and mark it deleted; return the Y update."""
    return _capture(doc, lambda: _delete(content_of(doc), meta_of(doc)))


def _delete(content: YMap, meta: YMap) -> None:
    content.clear()
    meta[DELETED] = True


def apply(doc: YDoc, update: bytes) -> bytes:
    """Apply a Y update; return what it changed (``EMPTY_UPDATE`` for a duplicate).

    Raises ValueError for bytes that are not a Y update.
    """
    return _capture(doc, lambda: _apply_update(doc, update))


def _apply_update(doc: YDoc, update: bytes) -> None:
    try:
        doc.apply_update(update)
    except ValueError:
        raise
    except BaseException as exc:  # pyo3 panics derive from BaseException
        if isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit):
            raise
        raise ValueError(f"cannot apply the update: {exc}") from None


class Editor:
    """One Y document kept for many edits (a node's loaded documents).

    The functions above look up the root maps and subscribe to the document
    for every edit; on a node's write path those lookups cost more than the
    edit itself. An editor finds the roots once and records the update of
    every transaction through one subscription. Only edit ``doc`` through
    the editor's methods while it records, or read it; :meth:`close` it
    when done (the subscription keeps the document alive until then).
    """

    __slots__ = ("_subscription", "_updates", "content", "doc", "meta")

    def __init__(self, doc: YDoc) -> None:
        """Take ``doc`` for editing (it keeps one subscription for good)."""
        self.doc = doc
        self.content = content_of(doc)
        self.meta = meta_of(doc)
        self._updates: list[bytes] = []
        self._subscription: Subscription | None = doc.observe(self._record)

    def close(self) -> None:
        """End the subscription: the document can then be garbage-collected."""
        if self._subscription is not None:
            self.doc.unobserve(self._subscription)
            self._subscription = None

    def _record(self, event: TransactionEvent) -> None:
        self._updates.append(event.update)

    def _capture(self, edit: Callable[[], None]) -> bytes:
        updates = self._updates
        updates.clear()
        with self.doc.transaction():
            edit()
        if not updates:
            return EMPTY_UPDATE
        update = updates[0]
        updates.clear()
        return update

    def replace(self, current: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bytes:
        """As :func:`replace`."""
        return self._capture(lambda: _replace(self.content, self.meta, current, new))

    def patch(self, current: Mapping[str, Any], merge: Mapping[str, Any]) -> bytes:
        """As :func:`patch`."""
        # Written out rather than through _capture: this is the hot path of PATCH.
        updates = self._updates
        updates.clear()
        with self.doc.transaction() as txn:
            if _RAW_MAP is None:
                _patch_map_public(self.content, current, merge)
            else:
                _patch_map_raw(self.doc, self.content.integrated, txn._txn, current, merge)
        if not updates:
            return EMPTY_UPDATE
        update = updates[0]
        updates.clear()
        return update

    def delete(self) -> bytes:
        """As :func:`delete`."""
        return self._capture(lambda: _delete(self.content, self.meta))

    def apply(self, update: bytes) -> bytes:
        """As :func:`apply`."""
        return self._capture(lambda: _apply_update(self.doc, update))


def decode_state_vector(data: bytes) -> dict[int, int]:
    """Decode a Y state vector (lib0 var-uints: count, then client/clock pairs)."""
    position = 0

    def read() -> int:
        nonlocal position
        result = shift = 0
        while True:
            if position >= len(data):
                raise ValueError("truncated state vector")
            byte = data[position]
            position += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result
            shift += 7
            if shift > 70:
                raise ValueError("var-uint too long")

    count = read()
    if count > len(data):
        raise ValueError("state vector count exceeds its length")
    vector = {}
    for _ in range(count):
        client = read()
        vector[client] = read()
    if position != len(data):
        raise ValueError("trailing bytes after the state vector")
    return vector


def integrates_fully(doc: YDoc, update: bytes) -> bool:
    """Whether everything ``update`` inserts is now part of ``doc``.

    False when the update depends on changes the document lacks: Y keeps
    such parts pending in memory only, so a node refuses them from clients
    and logs them as received from peers. The test: what the update holds
    beyond the document's state vector has no structs (its first var-uint,
    the number of clients with structs, is 0).
    """
    rest = get_update(update, doc.get_state())
    return rest[:1] == b"\x00"


def validate_update(doc: YDoc, update: bytes, client_id: int) -> dict[str, Any] | None:
    """Check a client's Y update against a copy of ``doc``; return the JSON it leads to.

    Raises DocumentError: ``invalid_yupdate`` (not a Y update, missing
    dependencies, a root type other than ``content`` and ``meta``, content that
    is not JSON), ``document_too_deep`` or ``document_too_large`` (the JSON over
    :data:`MAX_DOCUMENT_BYTES`, or the Y state over :data:`MAX_Y_STATE_BYTES`).
    ``doc`` itself is not touched.
    """
    scratch = new_doc(client_id, doc.get_update())
    try:
        _apply_update(scratch, update)
    except ValueError as exc:
        raise DocumentError("invalid_yupdate", f"not a valid Y update: {exc}") from None
    if not integrates_fully(scratch, update):
        raise DocumentError(
            "invalid_yupdate",
            "the update depends on changes this node does not have; sync with ystate first",
        )
    foreign = foreign_roots(scratch)
    if foreign:
        raise DocumentError("invalid_yupdate", foreign)
    # Checked on the Y state, not only the JSON: deleted and overwritten items stay in
    # the state, and every node must be able to take its compacted snapshot.
    size = len(scratch.get_update())
    if size > MAX_Y_STATE_BYTES:
        raise DocumentError(
            "document_too_large",
            f"the update would grow the document's Y state to {size} bytes; "
            f"the limit is {MAX_Y_STATE_BYTES}",
        )
    result = read_json(scratch, strict=True)
    if result is not None:
        normalize(result)
        check_size(serialize(result))
    return result


def foreign_roots(doc: YDoc) -> str | None:
    """Why ``doc`` is not a document's Y state (root types besides ``content`` and
    ``meta``), or None. Such roots hold data no JSON read shows and no limit counts."""
    names = [name for name in doc.keys() if name not in ROOTS]  # noqa: SIM118 (typed)
    if not names:
        return None
    shown = ", ".join(repr(name[:32]) for name in sorted(names)[:3])
    return f"a document's Y updates edit only its 'content' and 'meta' maps, not {shown}"


class DocumentReplica:
    """One replica of one document: applies updates in causal order, whatever order they come in.

    Y keeps the parts of an update whose dependencies are missing pending
    in memory, and Yrs does not always integrate such parts correctly when
    the dependencies arrive later. So an update that does not integrate
    fully is not kept half-applied: the document is rebuilt without it and
    the update waits until a later one makes it integrable. (A node does the
    same with its ``doc_waiting`` rows; this class is the model of it.)
    """

    def __init__(self, client_id: int) -> None:
        """An empty document edited as Y client ``client_id``."""
        self.client_id = client_id
        self.doc = new_doc(client_id)
        self._applied: list[bytes] = []
        self.waiting: list[bytes] = []

    def edited(self, update: bytes) -> None:
        """Record an update made by a local edit of :attr:`doc`."""
        self._applied.append(update)

    def receive(self, update: bytes) -> None:
        """Apply ``update`` now if it integrates, else when it does; then retry the waiting."""
        if not self._try(update):
            self.waiting.append(update)
            return
        progress = True
        while progress and self.waiting:
            progress = False
            for waiting in list(self.waiting):
                if self._try(waiting):
                    self.waiting.remove(waiting)
                    progress = True

    def _try(self, update: bytes) -> bool:
        apply(self.doc, update)
        if integrates_fully(self.doc, update):
            self._applied.append(update)
            return True
        self.doc = new_doc(self.client_id, *self._applied)
        return False
