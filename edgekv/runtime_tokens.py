"""Bearer tokens kept in the node's database, created and revoked while it runs.

Each token is one key of the reserved namespace ``_edgekv.tokens``: the key is
the token's stored hash (``sha256:<hex>``, never the token), the value a small
JSON object with its name, scopes, rate limit and creation time. A revoke is a
delete. The namespace replicates like any other, so a token created or revoked
at one PoP is known at every PoP once the change has reached it; no client
route reads or writes a namespace starting with ``_edgekv.``
(:func:`edgekv.http.validation.namespace`), and none is exported.

A node restored from a backup holds the tokens of the backup's moment, those
revoked since included, until its peers have sent it the revokes: until it
has rejoined every member (:mod:`edgekv.store.restored`), it takes no runtime
token at all (config tokens still work).

Authentication looks the presented token's hash up by key: one indexed read
of SQLite, past the read cache (a caller choosing random tokens must not
evict the entries clients read), so a revoke takes effect at a PoP with the
commit that brings it there.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from edgekv.auth import TokenSpec, hash_token, new_token, validate_scope
from edgekv.json_text import strict_json
from edgekv.store.export import RESERVED_PREFIX
from edgekv.store.kv import Entry, Write
from edgekv.store.restored import MARK_FILENAME
from edgekv.store.store import Store

TOKENS_NAMESPACE = RESERVED_PREFIX + "tokens"
ID_DIGITS = 12
"""Hex digits of the hash that name a token in listings (its id)."""
_MAX_NAME = 128
_MAX_RECORD_BYTES = 64 * 1024
"""Largest record that can be a token (create writes well under 8 KiB: 64 scopes at
most): a larger one is not parsed on every request that presents its token."""
_KEY_RE = re.compile(rb"sha256:[0-9a-f]{64}")
"""The key of a token record: what :func:`~edgekv.auth.hash_token` makes."""


@dataclass(frozen=True, slots=True)
class RuntimeToken:
    """A token as listed: its id, spec and creation time."""

    id: str
    spec: TokenSpec
    created_ms: int

    def as_json(self) -> dict[str, object]:
        """The listing's JSON object (never the hash, never the token)."""
        return {
            "id": self.id,
            "name": self.spec.name,
            "scopes": list(self.spec.scopes),
            "rate_limit": self.spec.rate_limit,
            "created_ms": self.created_ms,
            "source": "runtime",
        }


def token_id(token_hash: str) -> str:
    """The short id of a token: the first hex digits of its hash."""
    return token_hash.removeprefix("sha256:")[:ID_DIGITS]


def check_request(
    name: object, scopes: object, rate_limit: object
) -> tuple[str, tuple[str, ...], float | None]:
    """The fields of a create request, checked; raise ValueError naming the bad one."""
    if not isinstance(name, str) or not name or len(name) > _MAX_NAME or not name.isprintable():
        raise ValueError(f"name must be 1 to {_MAX_NAME} printable characters")
    if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) for s in scopes):
        raise ValueError("scopes must be a non-empty array of strings")
    if len(scopes) > 64:
        raise ValueError("at most 64 scopes")
    checked = tuple(validate_scope(scope) for scope in scopes)
    if rate_limit is not None and (
        isinstance(rate_limit, bool)
        or not isinstance(rate_limit, int | float)
        or not math.isfinite(rate_limit)  # a peer's record may hold NaN or Infinity
        or rate_limit < 0
    ):
        raise ValueError("rate_limit must be a number of requests per second, >= 0, or null")
    return name, checked, None if rate_limit is None else float(rate_limit)


class RuntimeTokens:
    """The tokens of the reserved namespace: looked up, listed, created, revoked."""

    def __init__(self, store: Store) -> None:
        """Keep the tokens in ``store``."""
        self._store = store
        self._parsed: dict[str, tuple[int, TokenSpec]] = {}
        """Parsed records by hash, with the stamp they were parsed at."""
        self._restore_mark = store.path.parent / MARK_FILENAME
        self._rejoining = self._restore_mark.exists()
        """Restored from a backup and not rejoined yet: revokes may still be on their way.
        Checked again (one stat) per lookup until the replicator clears the mark."""

    def lookup(self, token_hash: str) -> TokenSpec | None:
        """The live token with this stored hash, or None (unknown or revoked, or this
        node restored from a backup and not rejoined yet)."""
        if self._rejoining:
            if self._restore_mark.exists():
                return None
            self._rejoining = False
        entry = self._store.kv.peek(TOKENS_NAMESPACE, token_hash.encode("ascii"))
        if entry is None:
            self._parsed.pop(token_hash, None)
            return None
        known = self._parsed.get(token_hash)
        if known is not None and known[0] == entry.hlc:
            return known[1]
        record = _record(token_hash, entry)
        if record is None:
            self._parsed.pop(token_hash, None)
            return None
        self._parsed[token_hash] = (entry.hlc, record[0])
        return record[0]

    def listed(self) -> list[RuntimeToken]:
        """Every live token, by id."""
        found: list[RuntimeToken] = []
        after: bytes | None = None
        while True:
            keys = self._store.list_keys(TOKENS_NAMESPACE, b"", after, 1000)
            for listed in keys:
                entry = self._store.kv.peek(TOKENS_NAMESPACE, listed.key)
                if entry is None or not _KEY_RE.fullmatch(listed.key):
                    continue  # no token hashes to this key: nothing could present it
                token_hash = listed.key.decode("ascii")
                record = _record(token_hash, entry)
                if record is not None:
                    found.append(RuntimeToken(token_id(token_hash), *record))
            if len(keys) < 1000:
                return sorted(found, key=lambda token: token.id)
            after = keys[-1].key

    async def create(
        self, name: str, scopes: Sequence[str], rate_limit: float | None, now_ms: int
    ) -> tuple[str, RuntimeToken]:
        """Make a new token; return it (shown once) and its listing."""
        secret = new_token()
        token_hash = hash_token(secret)
        record = {
            "name": name,
            "scopes": list(scopes),
            "rate_limit": rate_limit,
            "created_ms": now_ms,
        }
        value = json.dumps(record, separators=(",", ":")).encode("utf-8")
        await self._store.write(TOKENS_NAMESPACE, [Write(token_hash.encode("ascii"), value)])
        spec = TokenSpec(name, token_hash, tuple(scopes), rate_limit)
        return secret, RuntimeToken(token_id(token_hash), spec, now_ms)

    async def revoke(self, id_or_name: str) -> list[RuntimeToken]:
        """Delete the tokens whose id or name is ``id_or_name``; return them."""
        matching = [t for t in self.listed() if id_or_name in (t.id, t.spec.name)]
        if matching:
            await self._store.write(
                TOKENS_NAMESPACE, [Write(t.spec.hash.encode("ascii"), None) for t in matching]
            )
        return matching


def _record(token_hash: str, entry: Entry) -> tuple[TokenSpec, int] | None:
    """The spec and creation time a stored record describes, or None if it is not one.

    Never trusted blindly: the record may have come from any peer, so one that is
    not exactly what :meth:`RuntimeTokens.create` writes is no token, for
    authentication and listing alike (a record the listing could not show must not
    authenticate: it could not be revoked). That includes a record with an
    expiration, which create never sets: the listing would hide it once expired
    while the lookup, which reads past expiration, still took it.
    """
    if entry.expiration is not None or len(entry.value) > _MAX_RECORD_BYTES:
        return None
    try:
        record = strict_json(entry.value)  # bounded nesting, no NaN: RecursionError-free
        if not isinstance(record, dict):
            return None
        name, scopes, rate_limit = check_request(
            record.get("name"), record.get("scopes"), record.get("rate_limit")
        )
    except ValueError:  # UnicodeDecodeError and NestedTooDeeply included
        return None
    created = record.get("created_ms", 0)
    if isinstance(created, bool) or not isinstance(created, int) or not 0 <= created < 2**63:
        return None
    return TokenSpec(name, token_hash, scopes, rate_limit), created
