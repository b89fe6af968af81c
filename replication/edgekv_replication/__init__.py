"""Sans-IO replication core of EdgeKV.

Pure logic over values and bytes: the hybrid logical clock, write stamps and
(later) CRDT merges, change batches and sync sessions. Nothing here performs
I/O or imports aiohttp or sqlite3, so the same code runs in a node, in an
in-memory simulated network and under hypothesis.

The wire types (``bookmarks``, ``versions``, ``codes``) are standard-library
modules that the client imports too. Importing any of them runs this file
first, so it imports nothing eagerly: the clock's names below load on first
use, and ``import edgekv_client`` stays light (docs/performance.md, "client").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgekv_replication.hlc import (
        COUNTER_BITS,
        HybridLogicalClock,
        Stamp,
        new_node_id,
        pack_hlc,
        unpack_hlc,
    )

__all__ = [
    "COUNTER_BITS",
    "HybridLogicalClock",
    "Stamp",
    "new_node_id",
    "pack_hlc",
    "unpack_hlc",
]


def __getattr__(name: str) -> object:
    # Runs only on the first lookup of a name: it is then kept as a module global.
    if name in __all__:
        from edgekv_replication import hlc

        value = getattr(hlc, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
