"""Bearer tokens with scopes, stored as hashes in the node's configuration.

A token is ``ekv_`` followed by 43 random URL-safe characters. The node keeps
only ``sha256:<hex>`` of each token: tokens are long random secrets, so a fast
hash suffices (as for API keys), and a leaked config file reveals no token.

Scopes:

``read:PATTERN``   read keys in namespaces matching the glob PATTERN
``write:PATTERN``  write (put, delete, bulk) in namespaces matching PATTERN
``admin``          everything, including cluster operations

With no token configured the node runs in protected mode: it serves only on
a loopback address, and every local caller is trusted.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Literal
from urllib.parse import urlsplit

Action = Literal["read", "write", "admin"]

TOKEN_PREFIX = "ekv_"
_SCOPE_RE = re.compile(r"^(admin|(read|write):[A-Za-z0-9_.\-*?\[\]!]{1,64})$")
_HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class TokenSpec:
    """A configured token: its name, hash and scopes."""

    name: str
    hash: str
    scopes: tuple[str, ...]
    rate_limit: float | None = None
    """Requests per second this token may make (None: the node's ``rate_limit``; 0: no limit)."""

    def allows(self, action: Action, namespace: str | None = None) -> bool:
        """Whether this token may perform ``action`` on ``namespace``."""
        for scope in self.scopes:
            if scope == "admin":
                return True
            kind, _, pattern = scope.partition(":")
            if kind == action and namespace is not None and fnmatchcase(namespace, pattern):
                return True
        return False


OPEN_ACCESS = TokenSpec(name="protected-mode", hash="", scopes=("admin",))
"""The principal of every request when no token is configured (loopback only)."""


def hash_token(token: str) -> str:
    """Return the stored form of ``token``."""
    # surrogateescape: aiohttp hands non-UTF-8 header bytes over as lone surrogates.
    return "sha256:" + hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def new_token() -> str:
    """Return a new random bearer token."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def validate_scope(scope: str) -> str:
    """Return ``scope`` if well-formed, else raise ValueError."""
    if not _SCOPE_RE.match(scope):
        raise ValueError(
            f"invalid scope {scope!r}: use admin, read:PATTERN or write:PATTERN "
            "(PATTERN a namespace glob such as flags or tenant-*)"
        )
    return scope


def parse_tokens(raw: object) -> tuple[TokenSpec, ...]:
    """Return the token specs of a TOML ``[[tokens]]`` array, or raise ValueError."""
    if not isinstance(raw, list):
        raise ValueError("tokens must be an array of tables ([[tokens]])")
    specs = []
    for index, entry in enumerate(raw):
        specs.append(_parse_token(index, entry))
    return tuple(specs)


def _parse_token(index: int, entry: Any) -> TokenSpec:
    where = f"tokens[{index}]"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be a table")
    unknown = set(entry) - {"name", "hash", "scopes", "rate_limit"}
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    name, token_hash, scopes = entry.get("name"), entry.get("hash"), entry.get("scopes")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: name must be a non-empty string")
    if not isinstance(token_hash, str) or not _HASH_RE.match(token_hash):
        raise ValueError(f"{where}: hash must look like sha256:<64 hex digits>")
    if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) for s in scopes):
        raise ValueError(f"{where}: scopes must be a non-empty array of strings")
    rate_limit = entry.get("rate_limit")
    if rate_limit is not None and (
        isinstance(rate_limit, bool)
        or not isinstance(rate_limit, int | float)
        or not math.isfinite(rate_limit)  # TOML has nan and inf: neither is a rate
        or rate_limit < 0
    ):
        raise ValueError(f"{where}: rate_limit must be a number of requests per second, >= 0")
    scope_specs = tuple(validate_scope(s) for s in scopes)
    return TokenSpec(
        name, token_hash, scope_specs, None if rate_limit is None else float(rate_limit)
    )


def token_toml(name: str, token: str, scopes: Sequence[str]) -> str:
    """Return the TOML lines that configure ``token`` (its hash, never the token)."""
    scope_list = ", ".join(f'"{s}"' for s in scopes)
    return f'[[tokens]]\nname = "{name}"\nhash = "{hash_token(token)}"\nscopes = [{scope_list}]\n'


RuntimeLookup = Callable[[str], "TokenSpec | None"]
"""Finds a token kept in the node's database by its stored hash (``sha256:<hex>``)."""


class Authenticator:
    """Finds the token that a request's ``Authorization`` header carries.

    Tokens come from the config file (replaced on ``SIGHUP`` with
    :meth:`replace_tokens`) and, when ``runtime`` is given, from the node's
    database (:mod:`edgekv.runtime_tokens`). Protected mode is fixed at start:
    it depends on the config file's tokens only, and a reload may not switch it.
    """

    __slots__ = ("_protected", "_runtime", "_tokens")

    def __init__(self, tokens: Iterable[TokenSpec], runtime: RuntimeLookup | None = None) -> None:
        """Check presented tokens against ``tokens``, then ``runtime``."""
        self._tokens = tuple(tokens)
        self._protected = not self._tokens
        self._runtime = runtime

    @property
    def protected_mode(self) -> bool:
        """True when no token is configured (loopback-only, everyone trusted)."""
        return self._protected

    @property
    def config_tokens(self) -> tuple[TokenSpec, ...]:
        """The config file's tokens, as last loaded."""
        return self._tokens

    def replace_tokens(self, tokens: Iterable[TokenSpec]) -> None:
        """Take the config file's tokens anew (``SIGHUP``); raise ValueError if that
        would switch protected mode on or off, which needs a restart."""
        new = tuple(tokens)
        if (not new) != self._protected:
            raise ValueError(
                "the reloaded config file would switch protected mode (tokens or none): "
                "restart the node for that"
            )
        self._tokens = new

    def authenticate(self, authorization: str | None) -> TokenSpec | None:
        """Return the principal for an ``Authorization`` header, or None if unknown."""
        if self._protected:
            return OPEN_ACCESS
        if not authorization or not authorization.startswith("Bearer "):
            return None
        presented_text = hash_token(authorization[7:].strip())
        presented = presented_text.encode("ascii")
        found = None
        # Compare against every token so the time taken does not tell which matched.
        for spec in self._tokens:
            if hmac.compare_digest(presented, spec.hash.encode("ascii")):
                found = spec
        if found is None and self._runtime is not None:
            found = self._runtime(presented_text)
        return found


class LoopbackGuard:
    """Protected mode's check that a request comes from this machine, not a web page.

    Loopback listening alone does not stop a browser: a page on another site can
    send simple cross-site requests (its ``Origin`` names that site), and DNS
    rebinding points a foreign name at 127.0.0.1 (its ``Host`` names it). Both
    headers must therefore name a loopback host (127.0.0.0/8, ::1, localhost,
    any port). Verdicts for loopback spellings are remembered in a bounded set,
    so the per-request cost is one set lookup.
    """

    __slots__ = ("_local_origins", "local_hosts")

    _REMEMBERED = 1024

    def __init__(self) -> None:
        """Start with no verdicts remembered."""
        self.local_hosts: set[str | None] = {None}
        """``Host`` values known to be loopback (None: no Host header, HTTP/1.0 tools)."""
        self._local_origins: set[str] = set()

    def local_host(self, host: str | None) -> bool:
        """Whether a ``Host`` header value names a loopback host."""
        if host in self.local_hosts:
            return True
        assert host is not None
        return self._remember(self.local_hosts, host, _authority_is_loopback("//" + host))

    def local_origin(self, origin: str) -> bool:
        """Whether an ``Origin`` header value is an http(s) origin on a loopback host."""
        if origin in self._local_origins:
            return True
        scheme = origin.partition(":")[0].lower()
        local = scheme in ("http", "https") and _authority_is_loopback(origin)
        return self._remember(self._local_origins, origin, local)

    @staticmethod
    def foreign_subresource(
        method: str, fetch_site: str | None, fetch_mode: str | None, fetch_dest: str | None
    ) -> bool:
        """Whether a request without ``Origin`` is a page of another site loading from us.

        A browser sends no ``Origin`` with a cross-site ``<script>``, ``<img>``,
        ``<iframe>`` or ``no-cors`` GET, but its answer still shows (load or
        error events, a value run as a script), so such a load would tell
        another site whether a key exists. Current browsers (Chrome 80,
        Firefox 90, Safari 16.4 and later) label it ``Sec-Fetch-Site:
        cross-site``. A top-level navigation by GET (``Sec-Fetch-Mode:
        navigate``, ``Sec-Fetch-Dest: document``) shows its page to the user,
        not to the site that linked to it, so a link to the console still works.
        """
        if fetch_site != "cross-site":
            return False
        top_level = fetch_mode == "navigate" and fetch_dest in ("document", None)
        return not (top_level and method in ("GET", "HEAD"))

    def _remember(self, known: set[Any], value: str, local: bool) -> bool:
        if local and len(known) < self._REMEMBERED:
            known.add(value)
        return local


def _authority_is_loopback(url: str) -> bool:
    """Whether ``scheme://host[:port]`` or ``//host[:port]`` names a loopback host, exactly."""
    authority = url.partition("//")[2]
    if not authority or any(c in authority for c in "@/?#\\"):
        return False  # browsers send a bare host[:port]; anything else is not ours
    try:
        host = urlsplit(url).hostname
    except ValueError:  # such as an unclosed "[" of an IPv6 address
        return False
    return host is not None and is_loopback_host(host)


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` names only loopback addresses (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
