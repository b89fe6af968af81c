"""Sans-IO replication core of EdgeKV.

Pure logic over values and bytes: the hybrid logical clock, write stamps and
(later) CRDT merges, change batches and sync sessions. Nothing here performs
I/O or imports aiohttp or sqlite3, so the same code runs in a node, in an
in-memory simulated network and under hypothesis.
"""

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
