"""A web session store: create at one PoP, read and update at another.

Sessions expire on their own (TTL). The handler uses an EdgeKV *session*
(bookmarks), so a user who logs in at one PoP and lands on another right
after still sees their session: the read waits for replication or fails,
never answers "logged out".

    python examples/session_store.py --url http://127.0.0.1:8787 [--other http://127.0.0.1:8788]
"""

from __future__ import annotations

import argparse
import json
import secrets

from edgekv_client import Client, Session

NAMESPACE = "sessions"
TTL = 3600


def login(kv: Session, user: str) -> str:
    """Create a session for ``user``; return its id (the cookie)."""
    session_id = secrets.token_urlsafe(16)
    kv.put(NAMESPACE, session_id, json.dumps({"user": user, "cart": []}), ttl=TTL)
    return session_id


def add_to_cart(kv: Session, session_id: str, item: str) -> list[str]:
    """Add ``item`` to the session's cart; return the cart."""
    raw = kv.get(NAMESPACE, session_id)
    if raw is None:
        raise KeyError("session expired")
    state = json.loads(raw)
    state["cart"].append(item)
    kv.put(NAMESPACE, session_id, json.dumps(state), ttl=TTL)
    return list(state["cart"])


def main() -> None:
    """Log in at one PoP, shop at another."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8787")
    parser.add_argument("--other", default=None, help="a second PoP (default: the same)")
    args = parser.parse_args()
    with Client(args.url).session() as here, here.at(args.other or args.url) as there:
        sid = login(here, "alice")
        print("cart:", add_to_cart(there, sid, "book"))
        print("cart:", add_to_cart(here, sid, "pen"))


if __name__ == "__main__":
    main()
