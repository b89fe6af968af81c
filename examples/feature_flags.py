"""Feature flags at the edge: read per request, change centrally, no redeploy.

The handler reads all its flags with one get-many request; on the PoP's own
host, ``LocalReader(data_dir).get`` reads them in-process instead, in
microseconds. Flags are JSON values in the ``flags`` namespace; a flag may
target a percentage of users.

Run against ``edgekv demo`` (or any node)::

    python examples/feature_flags.py --url http://127.0.0.1:8787
"""

from __future__ import annotations

import argparse
import hashlib
import json
from typing import Any

from edgekv_client import Client

NAMESPACE = "flags"


def enabled(flag: dict[str, Any] | None, user_id: str) -> bool:
    """Whether a flag is on for ``user_id`` (rollout by a stable hash of the user)."""
    if not flag or not flag.get("on"):
        return False
    percent = int(flag.get("percent", 100))
    bucket = int(hashlib.sha256(user_id.encode()).hexdigest(), 16) % 100
    return bucket < percent


def handle_request(kv: Client, user_id: str) -> dict[str, bool]:
    """An edge function: which features does this user get?"""
    raw = kv.get_many(NAMESPACE, ["new-checkout", "dark-mode"])
    flags = {name: json.loads(entry.value) if entry else None for name, entry in raw.items()}
    return {name: enabled(flag, user_id) for name, flag in flags.items()}


def main() -> None:
    """Seed two flags, then evaluate them for a few users."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8787")
    args = parser.parse_args()
    with Client(args.url) as kv:
        kv.put(NAMESPACE, "new-checkout", json.dumps({"on": True, "percent": 30}))
        kv.put(NAMESPACE, "dark-mode", json.dumps({"on": True}))
        for user in ("alice", "bob", "carol", "dave"):
            print(user, handle_request(kv, user))


if __name__ == "__main__":
    main()
