"""Who is in the cluster, and how each link is doing.

Members are learned from seeds and from every peer (each stream carries the
sender's member list), so joining through one seed reaches everyone. Each
member's entry is last-writer-wins by ``updated_ms``; a removal is such an
entry with ``removed`` set, so it spreads like any other.

Because the newest stamp wins, an entry stamped far in the future would win
over every removal until then (one stamped in 2100 would undo ``edgekv
cluster remove`` for good). So an entry heard from a peer is refused when it
is stamped more than ``max_ahead_ms`` (``max_clock_offset`` plus
:data:`~edgekv_replication.intake.MEMBER_STAMP_MARGIN_MS`) ahead of this
node's clock; an honest one is advertised again with every stream, and is
taken once the clock has caught up.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from edgekv.store.peer_state import MemberRow
from edgekv.store.store import Store
from edgekv_replication.intake import member_problem, screen_members

log = logging.getLogger(__name__)


@dataclass
class LinkStatus:
    """Live state of the stream this node pulls from one member."""

    state: str = "joining"  # up | down | joining
    last_contact_ms: int | None = None
    last_error: str | None = None
    lag_changes: int = 0
    lag_ms: int = 0
    clock_offset_ms: int | None = None
    cursor: int = 0
    head: int = 0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Membership:
    """The member table of one node, and the status of its links."""

    def __init__(self, store: Store, me: int, max_ahead_ms: int) -> None:
        """Load the members persisted in ``store``; take none stamped ``max_ahead_ms`` ahead."""
        self._store = store
        self._me = me
        self.max_ahead_ms = max_ahead_ms
        self.links: dict[int, LinkStatus] = {}
        self._members: list[MemberRow] | None = None
        """The member table as last read; every change to it goes through this class."""
        self.seed_links: dict[str, LinkStatus] = {}
        """Seeds not reached yet (no node id known), by URL."""
        self.heard_ms: dict[int, int] = {}
        """When each member was last heard of other than over a stream (the backbone)."""
        self._reachable: dict[int, bool] = {}
        """Each member's reachability as last logged (see :meth:`watch`)."""

    def members(self) -> list[MemberRow]:
        """Every known member (removed ones included, so removals spread).

        Read from the database once, then kept: every stream page asks.
        """
        if self._members is None:
            self._members = self._store.members()
        return self._members

    async def _save(self, members: list[MemberRow]) -> None:
        await self._store.upsert_members(members)
        self._members = None

    def active_urls(self) -> dict[int, str]:
        """URLs of the members to pull from (not removed, not this node)."""
        return {n: u for n, u, _, removed, _, _ in self.members() if not removed and n != self._me}

    def regions(self) -> dict[int, str]:
        """Every member not removed, this node included if known, by id: its region."""
        return {n: region for n, _, _, removed, _, region in self.members() if not removed}

    def is_removed(self, node: int) -> bool:
        """Whether ``node`` was removed from the cluster."""
        return any(n == node and removed for n, _, _, removed, _, _ in self.members())

    async def learn(self, members: list[MemberRow]) -> tuple[bool, list[tuple[int, str]]]:
        """Merge members heard from a peer: whether anything changed, and those refused.

        Refused (with why): entries stamped more than ``max_ahead_ms`` ahead of
        the local clock, or holding a URL or name no node would advertise.
        """
        taken, refused = screen_members(members, _now_ms(), self.max_ahead_ms)
        known = {m[0]: m for m in self.members()}
        fresh = []
        for member in taken:
            current = known.get(member[0])
            if not member[1]:
                continue
            if current is None:
                fresh.append(member)
            elif member[4] > current[4] or (member[4] == current[4] and not current[5]):
                # An entry from a node that knows no region keeps the one known here.
                region = member[5] or current[5]
                if (*member[:5], region) != current:
                    fresh.append((*member[:5], region))
        if fresh:
            await self._save(fresh)
        return bool(fresh), refused

    async def introduce(self, node: int, url: str, name: str, region: str = "") -> None:
        """Record a member that connected to us (or we to it) with its current URL.

        A puller without a URL is an observer (a tool tailing the log), not a member.
        ``region`` "": told by a node of a version without regions (the known one stays).
        """
        if not url:
            return
        known = {m[0]: m for m in self.members()}
        current = known.get(node)
        region = region or (current[5] if current else "")
        if current and (current[3] or (current[1], current[2], current[5]) == (url, name, region)):
            return  # removed members stay removed; unchanged ones stay as they are
        entry = (node, url, name, False, _now_ms(), region)
        problem = member_problem(entry, _now_ms(), self.max_ahead_ms)
        if problem is not None:
            # Every other node would refuse the entry when advertised: keep it out here too.
            log.warning("not recording member %016x as it introduced itself: %s", node, problem)
            return
        await self._save([entry])

    async def remove(self, node: int) -> bool:
        """Mark ``node`` removed; False if it is unknown."""
        known = {m[0]: m for m in self.members()}
        if node not in known:
            return False
        _, url, name, _, _, region = known[node]
        await self._save([(node, url, name, True, _now_ms(), region)])
        self.links.pop(node, None)
        return True

    def heard(self, node: int) -> None:
        """``node`` was heard of over the backbone just now."""
        self.heard_ms[node] = _now_ms()

    def last_contact_ms(self, node: int) -> int | None:
        """When ``node`` was last heard, over a stream or the backbone (None: never)."""
        link = self.links.get(node)
        stream = link.last_contact_ms if link is not None else None
        heard = self.heard_ms.get(node)
        return max(stream or 0, heard or 0) or None

    def state(self, node: int, timeout_ms: int, now_ms: int | None = None) -> str:
        """``up``, ``down`` or ``joining`` (never heard): a stream's state, else by contact.

        A member pulled directly is as its stream is. One that is not (another
        region, or past ``max_region_peers``) is up while heard of -- over the
        backbone -- within ``timeout_ms``.
        """
        link = self.links.get(node)
        if link is not None and link.state != "joining":
            return link.state
        last = self.last_contact_ms(node)
        if last is None:
            return "joining"
        now = _now_ms() if now_ms is None else now_ms
        return "up" if now - last <= timeout_ms else "down"

    def watch(self, timeout_ms: int) -> list[tuple[int, bool]]:
        """Members whose reachability changed since last called: ``(node, reachable)``.

        Reachable: heard within ``timeout_ms`` (by stream or backbone). A
        member is reported once per change, so an unreachable member that
        keeps failing to connect does not flood the log.
        """
        now = _now_ms()
        changed = []
        for node, _, _, removed, _, _ in self.members():
            if removed or node == self._me:
                self._reachable.pop(node, None)
                continue
            last = self.last_contact_ms(node)
            if last is None:
                continue  # joining: not reached yet, nothing to report
            reachable = now - last <= timeout_ms
            if self._reachable.get(node, True) != reachable:
                changed.append((node, reachable))
            self._reachable[node] = reachable
        return changed

    def seed(self, url: str) -> LinkStatus:
        """The status record of a seed not identified yet."""
        return self.seed_links.setdefault(url, LinkStatus())

    def link(self, node: int) -> LinkStatus:
        """The status record of the link to ``node``."""
        link = self.links.get(node)
        return link if link is not None else self.links.setdefault(node, LinkStatus())
