"""Cluster routes: the peer stream, status, and removal of a member."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from edgekv.http import bodies
from edgekv.http import validation as check
from edgekv.http.errors import ApiError
from edgekv.http.peer_stream import peer_stream
from edgekv.http.state import NODE, PRINCIPAL
from edgekv.node import Node
from edgekv.peers.replicator import Replicator
from edgekv.peers.wire import STREAM_PATH
from edgekv.watch import metrics as watch_metrics

routes = web.RouteTableDef()
"""Client routes: a bearer token with the admin scope."""
peer_routes = web.RouteTableDef()
"""Peer routes: the cluster secret, never a client token (see ``edgekv.http.app.Access``)."""
peer_routes.get(STREAM_PATH)(peer_stream)


def _admin(request: web.Request) -> tuple[Node, Replicator]:
    if not request[PRINCIPAL].allows("admin"):
        raise ApiError("forbidden", "this route needs the admin scope")
    node = request.app[NODE]
    return node, node.replicator


def cluster_status(node: Node, replicator: Replicator) -> dict[str, Any]:
    """The status document: this node, and a row per member."""
    store = node.store
    keys = store.live_count()
    me = replicator.identity
    members = []
    membership = replicator.membership
    timeout_ms = int(replicator.config.member_down_timeout * 1000)
    for member, url, name, removed, _, region in membership.members():
        if member == me.node:
            continue
        link = membership.links.get(member)
        members.append(
            {
                "node_id": f"{member:016x}",
                "name": name,
                "url": url,
                "region": region or None,
                "direct": link is not None,
                "state": "removed" if removed else membership.state(member, timeout_ms),
                "lag_changes": link.lag_changes if link else None,
                "lag_ms": link.lag_ms if link else None,
                "last_contact_ms": membership.last_contact_ms(member),
                "clock_offset_ms": link.clock_offset_ms if link else None,
                "last_error": link.last_error if link else None,
            }
        )
    for url, link in replicator.membership.seed_links.items():
        members.append(
            {
                "node_id": None,
                "name": "",
                "url": url,
                "region": None,
                "direct": True,
                "state": link.state,
                "lag_changes": None,
                "lag_ms": None,
                "last_contact_ms": None,
                "clock_offset_ms": None,
                "last_error": link.last_error,
            }
        )
    document: dict[str, Any] = {
        "node": {
            "node_id": f"{me.node:016x}",
            "incarnation": f"{me.incarnation:016x}",
            "name": me.name,
            "url": me.url,
            "region": me.region,
            "seq": store.seq,
            "keys": keys,
            "db_bytes": store.size_bytes(),
            "held_changes": store.held_count(),
            "watch": watch_metrics.status(node.watch),
            # None until a peer is heard: alone, a node cannot tell its clock is wrong.
            "clock_ahead_ms": store.peer_clocks.clock_ahead_ms(),
            "stamps_ahead_ms": store.peer_clocks.stamps_ahead_ms(),
        },
        "members": members,
    }
    if node.upstream is not None:
        document["upstream"] = node.upstream.status()
    if replicator.backbone is not None:
        document["backbone"] = replicator.backbone.status()
    return document


@routes.get("/v1/cluster/status")
async def status(request: web.Request) -> web.Response:
    """This node and every member: state, lag, last contact, clock offset, last error."""
    node, replicator = _admin(request)
    return web.json_response(cluster_status(node, replicator))


async def _refuse_body(request: web.Request) -> None:
    """This route takes no body: any field in one is unknown (an empty object is fine)."""
    body = await bodies.read_within(request, bodies.SMALL_BODY_BYTES)
    if body.strip():
        bodies.refuse_unknown_fields(check.json_object(body), ())


@routes.delete("/v1/cluster/members/{node_id}")
async def remove_member(request: web.Request) -> web.Response:
    """Remove a (dead) member: nobody pulls from it any more, and the removal spreads."""
    _, replicator = _admin(request)
    await _refuse_body(request)
    try:
        member = int(request.match_info["node_id"], 16)
    except ValueError:
        raise ApiError("invalid_parameter", "node_id is the member's hex id") from None
    if not await replicator.membership.remove(member):
        raise ApiError("not_found", "no such member")
    replicator.ensure_pullers()
    return web.json_response({"removed": f"{member:016x}"})
