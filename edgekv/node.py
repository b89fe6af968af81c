"""A node: one PoP's configuration, store, authentication and metrics together."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgekv.auth import Authenticator, LoopbackGuard
from edgekv.config import Config
from edgekv.http.metrics import Metrics
from edgekv.store.broken_merge import KEEP_LOCAL
from edgekv.store.merge import LAST_WRITER_WINS
from edgekv.store.store import Store

if TYPE_CHECKING:
    from edgekv.peers.replicator import Replicator
    from edgekv.upstream.connector import Upstream


class Node:
    """Everything one running PoP owns. Open with :meth:`open`, close with :meth:`close`."""

    def __init__(self, config: Config, store: Store) -> None:
        """Assemble a node from an open store; prefer :meth:`open`."""
        self.config = config
        self.store = store
        self.auth = Authenticator(config.tokens)
        self.loopback_guard = LoopbackGuard()
        """Protected mode's Host/Origin check, with the verdicts it remembers."""
        self.metrics = Metrics(store)
        self.replicator: Replicator | None = None
        """Set while the node serves (replication needs the running loop and URL)."""
        self.upstream: Upstream | None = None
        """The PostgreSQL connector, while the node serves with ``upstream`` set."""

    @classmethod
    def open(cls, config: Config) -> Node:
        """Open the node's database (creating it on first start) and start checking it.

        Raises :class:`~edgekv.store.datadir.DataDirError` when another node
        holds the directory, the database is empty (without ``allow_new_node``)
        or too damaged to open.
        """
        store = Store(
            config.data_dir,
            synchronous=config.synchronous,
            clock_offset_ms=config.test_clock_offset_ms,
            max_clock_offset_ms=int(config.max_clock_offset * 1000),
            read_cache_entries=config.read_cache_entries,
            adjustable_clock=config.test_clock_offset_file is not None,
            merge_statement=KEEP_LOCAL if config.test_broken_merge else LAST_WRITER_WINS,
            allow_new_node=config.allow_new_node,
        )
        # The whole file is checked while the node serves: at open it would cost
        # seconds per GB from a cold disk (edgekv.store.faults).
        store.health.start_check()
        return cls(config, store)

    def close(self) -> None:
        """Commit queued writes and close the database."""
        self.store.close()
