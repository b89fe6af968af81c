"""A/B test assignment that sticks: the first PoP to see a user decides its bucket.

The assignment is stored per experiment and user; later requests at any PoP
read it back. Concurrent first visits at two PoPs may both assign, and the
last writer wins everywhere -- the bucket is derived from a stable hash, so
both assign the same one and nobody flips.

    python examples/ab_bucket.py --url http://127.0.0.1:8787
"""

from __future__ import annotations

import argparse
import hashlib

from edgekv_client import Client

NAMESPACE = "experiments"
BUCKETS = ("control", "variant")


def bucket_for(kv: Client, experiment: str, user_id: str) -> str:
    """The user's bucket in ``experiment``, assigned (and stored) on first sight."""
    key = f"{experiment}/{user_id}"
    stored = kv.get(NAMESPACE, key)
    if stored is not None:
        return stored.decode()
    digest = hashlib.sha256(f"{experiment}:{user_id}".encode()).digest()
    bucket = BUCKETS[digest[0] % len(BUCKETS)]
    # Assignments expire with the experiment: 30 days.
    kv.put(NAMESPACE, key, bucket, ttl=30 * 86400, metadata={"experiment": experiment})
    return bucket


def main() -> None:
    """Assign a few users twice: the second answer must equal the first."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8787")
    args = parser.parse_args()
    with Client(args.url) as kv:
        for user in ("u1", "u2", "u3", "u4"):
            first = bucket_for(kv, "pricing-page", user)
            again = bucket_for(kv, "pricing-page", user)
            assert first == again
            print(user, first)


if __name__ == "__main__":
    main()
