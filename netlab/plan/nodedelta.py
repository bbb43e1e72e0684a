"""What the rest of a lab must change when a node joins or leaves: pure, from two clusters.

The node set shows up outside the node's own namespace in routing only: the underlay's
load-balancer route (ECMP over every node) and, on every other node, what the backend
programs towards each peer (vxlan: route, neighbour and FDB entry for its VTEP; host-gw: a
route via its address; udp and calico: nothing here, their daemons follow the node set).
Comparing the routing part of each namespace's plan before and after gives exactly that,
so a node added and then removed leaves every other namespace as it was.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..model import names
from ..model.cluster import Cluster
from .network import NsPlan, lb_route, plan_node


@dataclass
class Delta:
    """One namespace's change: `remove` first (deleted), then `add` (added, or replacing an
    entry with the same destination)."""
    netns: str
    add: NsPlan
    remove: NsPlan


def routing(cluster: Cluster) -> dict[str, NsPlan]:
    """The routing part of the underlay's and each node's plan, by namespace."""
    underlay = names.underlay_netns(cluster.name)
    out = {underlay: NsPlan(underlay, routes=[lb_route(cluster)])}
    for node in cluster.nodes:
        plan = plan_node(cluster, node)
        out[node.netns] = NsPlan(node.netns, routes=plan.routes, neighbours=plan.neighbours, fdb=plan.fdb)
    return out


def between(old: Cluster, new: Cluster) -> list[Delta]:
    """For each namespace both clusters have: what turns old's routing into new's."""
    before, after = routing(old), routing(new)
    deltas = []
    for ns, want in after.items():
        have = before.get(ns)
        if have is None:
            continue                      # a node that joins: built whole from its own plan
        dsts = {r.dst for r in want.routes}
        neigh_keys = {(n.dev, n.ip) for n in want.neighbours}
        add = NsPlan(ns, routes=[r for r in want.routes if r not in have.routes],
                     neighbours=[n for n in want.neighbours if n not in have.neighbours],
                     fdb=[f for f in want.fdb if f not in have.fdb])
        remove = NsPlan(ns, routes=[r for r in have.routes if r.dst not in dsts],
                        neighbours=[n for n in have.neighbours if (n.dev, n.ip) not in neigh_keys],
                        fdb=[f for f in have.fdb if f not in want.fdb])
        if any((add.routes, add.neighbours, add.fdb, remove.routes, remove.neighbours, remove.fdb)):
            deltas.append(Delta(ns, add, remove))
    return deltas
