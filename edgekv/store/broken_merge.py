"""Test only: a merge that is wrong on purpose, for the fault-injection harness to catch.

With the node setting ``test_broken_merge`` the node hands this statement to
the store instead of :data:`~edgekv.store.merge.LAST_WRITER_WINS`: a remote
change never replaces a local entry, so replicas that both wrote a key never
converge. ``jepsen_like`` (``tests/test_jepsen_run.py``) must report it.
Nothing in production imports this module except that one setting's branch.
"""

from __future__ import annotations

from edgekv.store.merge import LAST_WRITER_WINS

KEEP_LOCAL = LAST_WRITER_WINS.split(" ON CONFLICT")[0] + " ON CONFLICT (ns, key) DO NOTHING"
"""The remote change is inserted when the key is new here, and otherwise dropped."""
