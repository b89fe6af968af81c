"""The workloads: one module each, registered here by name (one line per workload)."""

from __future__ import annotations

from jepsen_like.workloads.base import Workload
from jepsen_like.workloads.cas import CasWorkload
from jepsen_like.workloads.counter import CounterWorkload
from jepsen_like.workloads.delete_readd import DeleteReaddWorkload
from jepsen_like.workloads.documents import DocumentsWorkload
from jepsen_like.workloads.orset import OrsetWorkload
from jepsen_like.workloads.register import RegisterWorkload
from jepsen_like.workloads.session import SessionWorkload
from jepsen_like.workloads.set import SetWorkload
from jepsen_like.workloads.watch import WatchWorkload

WORKLOADS: dict[str, type[Workload]] = {
    "set": SetWorkload,
    "register": RegisterWorkload,
    "session": SessionWorkload,
    "documents": DocumentsWorkload,
    "delete-readd": DeleteReaddWorkload,
    "cas": CasWorkload,
    "counter": CounterWorkload,
    "orset": OrsetWorkload,
    "watch": WatchWorkload,
}


def parse_workloads(text: str) -> list[str]:
    """The workload names of ``--workload`` (comma-separated, or ``all``)."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if "all" in names:
        return list(WORKLOADS)
    unknown = [name for name in names if name not in WORKLOADS]
    if unknown or not names:
        raise ValueError(
            f"unknown workload {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}"
        )
    return names
