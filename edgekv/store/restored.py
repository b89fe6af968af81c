"""The mark a restored data directory carries until the node has rejoined.

A restored node holds keys as of its backup. Until it has exchanged logs
with every member, a peer that collected a tombstone newer than the backup
(possible once the backup is older than the tombstone horizon) would take
the backup's value of that key as new. ``edgekv.restored`` in the data
directory remembers when the backup was taken; while it is there the node
refuses to start once the backup is older than ``tombstone_horizon``, and
the replicator removes it once every member has pulled this node's log and
this node has pulled every member's (from then on peers' tombstone
collection waits for this node's acknowledgements like any member's).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

MARK_FILENAME = "edgekv.restored"


@dataclass(frozen=True, slots=True)
class RestoreMark:
    """When the restored backup was taken, and of which node."""

    backup_created_ms: int
    old_node_id: str
    backup_seq: int


def write_mark(data_dir: Path, mark: RestoreMark) -> None:
    """Write the mark durably (before the restored database is put in place)."""
    path = data_dir / MARK_FILENAME
    partial = path.with_name(path.name + ".tmp")
    with partial.open("w", encoding="ascii") as handle:
        json.dump(asdict(mark), handle)
        handle.flush()
        os.fsync(handle.fileno())
    partial.rename(path)


def read_mark(data_dir: Path) -> RestoreMark | None:
    """The mark of a restored directory not yet rejoined, or None."""
    path = data_dir / MARK_FILENAME
    try:
        return RestoreMark(**json.loads(path.read_text(encoding="ascii")))
    except FileNotFoundError:
        return None


def clear_mark(data_dir: Path) -> None:
    """The node has rejoined: it is a member like any other from now on."""
    (data_dir / MARK_FILENAME).unlink(missing_ok=True)
