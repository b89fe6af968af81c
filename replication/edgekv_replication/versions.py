"""Entry versions on the wire: the last-writer-wins stamp ``(hlc, node)`` as 32 hex digits.

A version is an entry's ETag and what conditions (If-Match) compare; the node
encodes it, the client and the workloads decode it. Standard library only, so
the client imports it without the replication machinery.
"""

from __future__ import annotations


def is_hex_field(text: str) -> bool:
    """Whether ``text`` is a 64-bit field as EdgeKV writes it: 1-16 lowercase hex digits."""
    return len(text) <= 16 and all(c in "0123456789abcdef" for c in text)


def encode_version(hlc: int, node: int) -> str:
    """Return an entry version (its ETag) from its stamp."""
    return f"{hlc:016x}{node:016x}"


def decode_version(text: str) -> tuple[int, int]:
    """Return the ``(hlc, node)`` stamp of a version, raising ValueError if malformed."""
    if len(text) != 32 or not is_hex_field(text[:16]) or not is_hex_field(text[16:]):
        raise ValueError("not an EdgeKV version")
    return int(text[:16], 16), int(text[16:], 16)
