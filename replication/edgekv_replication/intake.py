"""The limits every piece of data entering a node is checked against, on plain values.

One layer for every way in: the HTTP routes (``edgekv.http.validation``
delegates here and turns :class:`Refused` into its ``ApiError``), pull
streams from peers (each decoded batch, before anything of it is applied)
and the PostgreSQL upstream (each pulled row, and each row a strong operation
reads). A replicated change is held to what the HTTP API would have accepted
from a client, so whatever a peer or an upstream row holds, every node can
list it, serve it (metadata goes into a response header) and delete it.

Free of I/O and of the node's configuration: the configurable sizes come in
a :class:`Limits`. The checks of one change cost about a microsecond, next
to the tens of microseconds its upsert costs (see docs/design.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from edgekv_replication import counters, orsets
from edgekv_replication.changes import Change
from edgekv_replication.documents import DOC_NS_PREFIX, MAX_Y_STATE_BYTES
from edgekv_replication.json_objects import DuplicateName, unique_object

REGION = re.compile(r"[A-Za-z0-9_.-]{1,64}")
"""A region name (and the alphabet of namespace names)."""
NAMESPACE = re.compile(r"(?!\.\.?\Z)[A-Za-z0-9_.-]{1,64}")
"""A namespace (and a document collection) name: not ``.`` or ``..``, which URL
handling rewrites (``/v1/kv/%2E%2E/k`` and ``/v1/k`` are one path to a proxy or a
client library that normalizes it), like keys."""
MAX_EXPIRATION = 2 * 10**12
"""Above any expiration the API makes (``now + ttl`` with ``ttl < 10**12`` seconds)."""
MEMBER_STAMP_MARGIN_MS = 10_000
"""How far beyond ``max_clock_offset`` a member entry may be stamped ahead of the
local clock. Member entries are last-writer-wins by their stamp, so one stamped
far ahead would outlive every later removal; honest clocks are within the offset."""
MAX_MEMBER_URL = 2048
MAX_MEMBER_NAME = 256

_I64 = (1 << 63) - 1
_HEX32 = re.compile(r"[0-9a-f]{32}")
_DECODER = json.JSONDecoder(
    parse_constant=lambda name: _no_constant(name), object_pairs_hook=unique_object
)
"""One decoder for every call: json.loads with options builds a new one each time.
No name twice in an object: the API refuses such metadata, so a peer's is refused too."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The node's configurable size limits (``max_*`` settings of the same names)."""

    max_key_bytes: int = 512
    max_value_bytes: int = 25 * 1024 * 1024
    max_metadata_bytes: int = 1024


class _Settings(Protocol):
    @property
    def max_key_bytes(self) -> int: ...
    @property
    def max_value_bytes(self) -> int: ...
    @property
    def max_metadata_bytes(self) -> int: ...


def limits_of(settings: _Settings) -> Limits:
    """The limits of a node's settings (any object with the three ``max_*`` fields)."""
    return Limits(settings.max_key_bytes, settings.max_value_bytes, settings.max_metadata_bytes)


class Refused(ValueError):
    """Data that breaks a limit; ``code`` names the rule.

    For what the API checks too, the code is the API's (``edgekv_replication.codes``);
    ``invalid_change`` names rules only replicated data can break (it appears in
    logs and a link's ``last_error``, never in an answer).
    """

    def __init__(self, code: str, message: str) -> None:
        """Create a refusal: ``code`` names the rule, ``message`` says what broke it."""
        super().__init__(message)
        self.code = code
        self.message = message


# -- single values ---------------------------------------------------------------


def check_namespace(ns: object) -> str:
    """Return ``ns`` if it is a valid namespace name, else raise ``invalid_namespace``."""
    if type(ns) is not str or not NAMESPACE.fullmatch(ns):
        raise Refused(
            "invalid_namespace",
            f"namespace must match [A-Za-z0-9_.-]{{1,64}} and not be '.' or '..': {ns!r}",
        )
    return ns


def check_key_text(text: object, max_bytes: int) -> bytes:
    """Return the UTF-8 bytes of a valid key given as text (``invalid_key``/``key_too_long``)."""
    if not isinstance(text, str) or not text:
        raise Refused("invalid_key", "a key is a non-empty string")
    if text in (".", ".."):
        raise _dot_key()
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raise Refused("invalid_key", "a key must be valid UTF-8") from None
    if len(raw) > max_bytes:
        raise _key_too_long(len(raw), max_bytes)
    return raw


def check_key_bytes(raw: object, max_bytes: int) -> None:
    """Check a key given as bytes, as a replicated change carries it."""
    if type(raw) is not bytes or not raw:
        raise Refused("invalid_key", "a key is non-empty bytes")
    if len(raw) > max_bytes:
        raise _key_too_long(len(raw), max_bytes)
    if raw in (b".", b".."):
        raise _dot_key()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused("invalid_key", "a key must be valid UTF-8") from None


def _dot_key() -> Refused:
    return Refused("invalid_key", "'.' and '..' cannot be keys: URLs would rewrite them")


def _key_too_long(size: int, max_bytes: int) -> Refused:
    return Refused("key_too_long", f"key is {size} bytes; the limit is {max_bytes}")


def check_value_size(size: int, max_bytes: int) -> None:
    """Raise ``value_too_large`` for a value longer than ``max_bytes``."""
    if size > max_bytes:
        raise Refused("value_too_large", f"value is {size} bytes; the limit is {max_bytes}")


def check_metadata_size(text: str, max_bytes: int) -> None:
    """Raise ``metadata_too_large`` for metadata JSON longer than ``max_bytes``."""
    if len(text) > max_bytes:
        raise Refused(
            "metadata_too_large", f"metadata is {len(text)} bytes of JSON; the limit is {max_bytes}"
        )


def check_metadata_text(text: object, max_bytes: int) -> None:
    """Check stored metadata: a JSON object in printable ASCII, within the limit.

    What the API stores is such (``json.dumps`` with compact separators and
    ``ensure_ascii``), and every reader relies on it: metadata goes into the
    ``EdgeKV-Metadata`` response header (no control characters) and into
    listings (parsed as JSON).
    """
    if type(text) is not str:
        raise Refused("invalid_metadata", "metadata must be a JSON object")
    check_metadata_size(text, max_bytes)  # ASCII: characters are bytes
    if not (text.isascii() and text.isprintable()):
        raise Refused("invalid_metadata", "metadata must be printable ASCII JSON")
    try:
        parsed = _DECODER.decode(text)
    except DuplicateName as error:
        raise Refused("invalid_metadata", f"metadata: {error}") from None
    except (ValueError, RecursionError):
        parsed = None
    if type(parsed) is not dict:
        raise Refused("invalid_metadata", "metadata must be a JSON object")
    # Not compared with its compact re-encoding: that doubled the cost of the
    # check (a catch-up checks every change) and guards nothing a reader needs.


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def check_expiration(expiration: object) -> None:
    """Check an absolute expiration (epoch seconds): None, or 1 to :data:`MAX_EXPIRATION`."""
    if expiration is not None and (
        type(expiration) is not int or not 0 < expiration <= MAX_EXPIRATION
    ):
        raise Refused(
            "invalid_expiration",
            f"expiration must be a positive integer of seconds up to {MAX_EXPIRATION}",
        )


def check_stamp(hlc: object, node: object) -> None:
    """Check a write stamp: ``hlc`` and ``node`` are non-negative 63-bit integers."""
    if not (type(hlc) is int and type(node) is int and 0 <= hlc <= _I64 and 0 <= node <= _I64):
        raise Refused("invalid_change", "hlc and node must be non-negative 63-bit integers")


def check_document_id(raw: object, max_bytes: int) -> None:
    """Check a document id given as bytes (the key of a document change)."""
    if type(raw) is not bytes or not raw:
        raise Refused("invalid_document_id", "a document id is non-empty")
    if len(raw) > max_bytes:
        raise Refused("invalid_document_id", f"a document id is at most {max_bytes} bytes")
    if raw in (b".", b"..") or raw.startswith(b"_") or b"/" in raw:
        raise Refused(
            "invalid_document_id",
            "a document id has no '/', does not start with '_' and is not '.' or '..'",
        )
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused("invalid_document_id", "a document id must be valid UTF-8") from None


# -- counters and sets, as clients send them ------------------------------------------


def check_counter_amount(value: object, name: str = "add") -> int:
    """A counter add, from ``-(2**63 - 1)`` to ``2**63 - 1``, or a bound (``min``/``max``):
    a signed 64-bit integer."""
    if type(value) is not int:
        raise Refused("invalid_json", f"{name} must be an integer")
    if name == "add" and not -counters.INT64_MAX <= value <= counters.INT64_MAX:
        raise Refused("counter_overflow", "add must be from -(2**63 - 1) to 2**63 - 1")
    if not counters.INT64_MIN <= value <= counters.INT64_MAX:
        raise Refused("counter_overflow", f"{name} must be a signed 64-bit integer")
    return value


def check_set_members(raw: object, name: str) -> list[str]:
    """A list of set members (``invalid_json``, ``invalid_member``), without duplicates."""
    if raw is None:
        return []
    if type(raw) is not list:
        raise Refused("invalid_json", f"{name} must be an array of strings")
    members: dict[str, None] = {}
    for index, member in enumerate(raw):
        try:
            orsets.check_member(member)
        except orsets.BadMember as exc:
            raise Refused("invalid_member", f"{name}[{index}]: {exc}") from None
        members[member] = None
    return list(members)


def check_set_request(add: list[str], remove: list[str], max_members: int) -> None:
    """At most ``max_members`` members in one request, none both added and removed."""
    if len(add) + len(remove) > max_members:
        raise Refused(
            "too_many_members",
            f"{len(add) + len(remove)} members in one request; the limit is {max_members}",
        )
    both = set(add).intersection(remove)
    if both:
        raise Refused("invalid_request", f"{min(both)!r} is both added and removed")


# -- replicated changes ------------------------------------------------------------


def check_change(change: Change, limits: Limits) -> None:
    """Check one replicated change (key-value entry or document change) against ``limits``."""
    ns, key, value, metadata, expiration, hlc, node = change[:7]
    check_stamp(hlc, node)
    if type(ns) is str and ns.startswith(DOC_NS_PREFIX):
        _check_document_change(ns, key, value, metadata, expiration, limits)
        return
    if type(ns) is str and ns.startswith((counters.CTR_NS_PREFIX, orsets.SET_NS_PREFIX)):
        check_crdt_row(ns, key, value, metadata, expiration, node, limits)
        return
    check_namespace(ns)
    check_key_bytes(key, limits.max_key_bytes)
    if value is not None:
        if type(value) is not bytes:
            raise Refused("invalid_change", "a value is bytes, or nil for a delete")
        check_value_size(len(value), limits.max_value_bytes)
    if metadata is not None:
        check_metadata_text(metadata, limits.max_metadata_bytes)
    check_expiration(expiration)


def _check_document_change(
    ns: str, key: object, value: object, metadata: object, expiration: object, limits: Limits
) -> None:
    # A document change carries a Y update as its value and, for a compacted
    # snapshot, the newest version it includes (32 hex digits) as metadata.
    check_namespace(ns[len(DOC_NS_PREFIX) :])
    check_document_id(key, limits.max_key_bytes)
    if type(value) is not bytes or not value:
        raise Refused("invalid_change", "a document change carries a Y update")
    # Bounded by the documents' own limit, not max_value_bytes: a node that accepted the
    # edits sends no longer update or snapshot (see documents.MAX_Y_STATE_BYTES).
    if len(value) > MAX_Y_STATE_BYTES:
        raise Refused(
            "document_too_large",
            f"a document change of {len(value)} bytes; the limit is {MAX_Y_STATE_BYTES}",
        )
    if metadata is not None and (type(metadata) is not str or not _HEX32.fullmatch(metadata)):
        raise Refused("invalid_change", "a document change's version is 32 hex digits")
    if expiration is not None:
        raise Refused("invalid_change", "a document change has no expiration")


def check_crdt_row(
    ns: str,
    key: object,
    value: object,
    metadata: object,
    expiration: object,
    node: object,
    limits: Limits,
) -> None:
    """Check a counter or set row (:mod:`~edgekv_replication.counters`, ``orsets``).

    The row's node in its key must be the change's writer: a row has one
    writer, which is what makes last-writer-wins on it a join.
    """
    is_counter = ns.startswith(counters.CTR_NS_PREFIX)
    check_namespace(ns[len(counters.CTR_NS_PREFIX if is_counter else orsets.SET_NS_PREFIX) :])
    if type(key) is not bytes:
        raise Refused("invalid_change", "a counter or set row's key is bytes")
    try:
        if is_counter:
            name, writer = counters.split_row_key(key)
        else:
            name, _, writer = orsets.split_row_key(key)
    except ValueError as exc:
        raise Refused("invalid_change", str(exc)) from None
    check_key_bytes(name, limits.max_key_bytes)
    if writer != node:
        raise Refused("invalid_change", "a counter or set row is written by its own node only")
    if metadata is not None:
        raise Refused("invalid_change", "a counter or set row has no metadata")
    if value is None and not is_counter:
        check_expiration(expiration)
        if expiration is not None:
            raise Refused("invalid_change", "a set row has no expiration")
        return  # a retired set row (orsets.retired): its writer's tombstone
    if type(value) is not bytes:
        raise Refused("invalid_change", "a counter row is never deleted")
    try:
        counters.decode_row(value) if is_counter else orsets.decode_row(value)
    except ValueError as exc:
        raise Refused("invalid_change", str(exc)) from None
    if not is_counter and expiration is not None:
        raise Refused("invalid_change", "a set row has no expiration")
    check_expiration(expiration)


def check_changes(changes: Sequence[Change], limits: Limits) -> None:
    """Check a batch of replicated changes: all of them are valid, or none is taken.

    The refusal names the first bad change (its position, namespace and key). How many
    changes a batch holds is bounded before this, as the envelope is decoded
    (:data:`~edgekv_replication.envelope.MAX_BATCH_CHANGES`).
    """
    # The common case in one pass of inline tests (a call per check would cost
    # more than the checks); anything it does not plainly pass -- a document
    # change, or a bad one -- goes through check_change, which says what is wrong.
    max_key, max_value = limits.max_key_bytes, limits.max_value_bytes
    max_metadata = limits.max_metadata_bytes
    namespaces: set[str] = set()
    seen_metadata: set[str] = set()
    for index, change in enumerate(changes):
        ns, key, value, metadata, expiration, hlc, node = change[:7]
        if (
            (ns in namespaces or (type(ns) is str and _plain_namespace(ns, namespaces)))
            and type(key) is bytes
            and 0 < len(key) <= max_key
            and _utf8_key(key)
            and (value is None or (type(value) is bytes and len(value) <= max_value))
            and (
                metadata is None
                or metadata in seen_metadata
                or _good_metadata(metadata, max_metadata, seen_metadata)
            )
            and (
                expiration is None or (type(expiration) is int and 0 < expiration <= MAX_EXPIRATION)
            )
            and type(hlc) is int
            and type(node) is int
            and 0 <= hlc <= _I64
            and 0 <= node <= _I64
        ):
            continue
        try:
            check_change(change, limits)
        except Refused as refusal:
            raise Refused(
                refusal.code,
                f"change {index} ({_short(change[0])}, {_short(change[1])}): {refusal.message}",
            ) from None


def _plain_namespace(ns: str, namespaces: set[str]) -> bool:
    if NAMESPACE.fullmatch(ns) is None:
        return False
    namespaces.add(ns)
    return True


def _utf8_key(key: bytes) -> bool:
    if key == b"." or key == b"..":
        return False
    if key.isascii():
        return True
    try:
        key.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _good_metadata(metadata: object, max_bytes: int, seen: set[str]) -> bool:
    try:
        check_metadata_text(metadata, max_bytes)
    except Refused:
        return False
    assert type(metadata) is str
    seen.add(metadata)
    return True


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# -- membership ------------------------------------------------------------------


def member_problem(member: Sequence[object], now_ms: int, max_ahead_ms: int) -> str | None:
    """Why a member entry ``(node, url, name, removed, updated_ms, region)`` is refused, or None.

    ``max_ahead_ms``: how far ahead of ``now_ms`` its stamp may lie (see
    :data:`MEMBER_STAMP_MARGIN_MS`).
    """
    node, url, name, removed, updated_ms, region = member
    if type(node) is not int or not 0 <= node <= _I64:
        return "node id out of range"
    if type(updated_ms) is not int or updated_ms > now_ms + max_ahead_ms:
        return f"stamped {updated_ms} ms, more than {max_ahead_ms} ms ahead of this node's clock"
    if type(url) is not str or len(url) > MAX_MEMBER_URL or not _printable(url):
        return "URL is not printable ASCII of at most 2048 characters"
    if url and not url.startswith(("http://", "https://")):
        return "URL is not http(s)"
    if type(name) is not str or len(name) > MAX_MEMBER_NAME or not name.isprintable():
        return "name is not printable text of at most 256 characters"
    if type(removed) is not bool:
        return "removed is not a boolean"
    if type(region) is not str or (region and not REGION.fullmatch(region)):
        return "region does not match [A-Za-z0-9_.-]{1,64}"
    return None


def _printable(text: str) -> bool:
    return text.isascii() and text.isprintable() and " " not in text


def screen_members(
    members: Iterable[tuple[int, str, str, bool, int, str]], now_ms: int, max_ahead_ms: int
) -> tuple[list[tuple[int, str, str, bool, int, str]], list[tuple[int, str]]]:
    """Split member entries into those taken and ``(node, why)`` for those refused."""
    taken, refused = [], []
    for member in members:
        problem = member_problem(member, now_ms, max_ahead_ms)
        if problem is None:
            taken.append(member)
        else:
            refused.append((member[0], problem))
    return taken, refused
