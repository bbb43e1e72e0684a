"""Nodes joining and leaving a running lab: who the new node is, and whether one may leave.

Pure, like the rest of the model: the agent (runtime/nodechanges.py) builds what these decide.
A new node takes the lowest node number that is free everywhere it counts: no node has it,
its subnet (under calico: its first IPAM block) is not held by anyone, and its underlay
address fits in front of the underlay's broadcast address. Node i has subnet i and address
.offset+i, as the nodes of lab.yaml do, so a node never changes its number once it has one.
"""
from __future__ import annotations

import ipaddress
from typing import Optional

from . import names
from .cluster import Cluster, Node
from .config import NODE_FIELDS, NodeSpec, _labels
from .errors import InvalidError, NotFoundError, StateError
from .ipam import node_subnet


def default_name(cluster: Cluster) -> str:
    """node<k> with the lowest k no node has (node3 for a lab of node1 and node2)."""
    taken = {n.name for n in cluster.nodes}
    return next(f"node{k}" for k in range(1, len(taken) + 2) if f"node{k}" not in taken)


def free_index(cluster: Cluster) -> int:
    """The lowest node number a new node can have; one clear line naming the field if none."""
    cfg = cluster.config
    pool = ipaddress.ip_network(cfg.cluster_cidr)
    subnets = 2 ** (cfg.node_prefix - pool.prefixlen)       # number 0 is never handed out
    underlay = ipaddress.ip_network(cfg.underlay_cidr)
    # Room for .offset+i below the broadcast address (.1 router and .2 client come first).
    addresses = int(underlay.broadcast_address) - int(underlay.network_address) - cfg.node_ip_offset - 1
    used = {n.index for n in cluster.nodes}
    held = set(cluster.ipam.affinity) if cluster.ipam is not None else set()
    for i in range(1, min(subnets - 1, addresses) + 1):
        if i in used:
            continue
        if held and str(_subnet(cfg, i)) in held:
            continue                      # calico: another node claimed this block for its pods
        return i
    where = {"file": cfg.source or "lab.yaml", "obj": "Lab"}
    if len(used) >= addresses:
        raise InvalidError(f"no room for another node: underlay {underlay} holds {addresses} node "
                           f"addresses from offset {cfg.node_ip_offset}, and all are taken",
                           field="spec.network.underlayCIDR", **where)
    if cfg.backend == "calico":
        raise InvalidError(f"no room for another node: every /{cfg.node_prefix} block of the IP pool "
                           f"{pool} is held", field="spec.calico.blockSize", **where)
    raise InvalidError(f"no room for another node: clusterCIDR {pool} has {subnets - 1} usable "
                       f"/{cfg.node_prefix} node subnets, all taken", field="spec.network.nodeSubnetPrefix",
                       **where)


def _subnet(cfg, index: int):
    return node_subnet(cfg.cluster_cidr, cfg.node_prefix, index)


def new_node(cluster: Cluster, name: Optional[str] = None, labels: Optional[dict] = None) -> NodeSpec:
    """The spec of a node to add (validated; the cluster is not changed)."""
    name = default_name(cluster) if name is None else name
    where = {"obj": f"Node/{name}"}
    if not isinstance(name, str):
        raise InvalidError("must be a string", value=name, field="metadata.name", **where)
    problem = names.check_dns_label(name, 30)         # as spec.nodes[].name in lab.yaml
    if problem:
        raise InvalidError(problem, value=name, field="metadata.name", **where)
    if any(n.name == name for n in cluster.nodes):
        raise InvalidError("already exists", value=name, field="metadata.name", **where)
    netns = names.node_netns(cluster.name, name)
    if len(netns) > names.NETNS_MAX:
        raise InvalidError("name too long for a network namespace", value=name, field="metadata.name", **where)
    if any(names.uplink(n.name) == names.uplink(name) for n in cluster.nodes):
        raise InvalidError("its underlay port name collides with another node's; choose another name",
                           value=name, field="metadata.name", **where)
    try:
        spec = NodeSpec(name, _labels(labels, "metadata.labels", None))
    except InvalidError as exc:      # lab.yaml's checker: the error is about this Node, not the Lab
        exc.obj = where["obj"]
        raise
    spec.index = free_index(cluster)
    return spec


def follow_api_endpoints(cluster: Cluster) -> None:
    """default/kubernetes's Endpoints are the nodes' API listeners (model/addons.py): when the
    node set changes they follow, unless the lab wrote its own."""
    from .addons import KUBERNETES_SOURCE, kubernetes_service
    from .objects import parse_object
    current = cluster.endpoints.get("default/kubernetes")
    if current is None or current.meta.source != KUBERNETES_SOURCE:
        return
    doc = next(d for d in kubernetes_service(cluster.config, cluster.nodes) if d["kind"] == "Endpoints")
    fresh = parse_object(doc, KUBERNETES_SOURCE)
    fresh.meta.source = KUBERNETES_SOURCE
    cluster.endpoints["default/kubernetes"] = fresh


def add(cluster: Cluster, name: Optional[str] = None, labels: Optional[dict] = None) -> Node:
    """A node joins the cluster's model (new_node's checks first)."""
    node = cluster.add_node(new_node(cluster, name, labels))
    follow_api_endpoints(cluster)
    return node


def check_removable(cluster: Cluster, name: str) -> Node:
    """The node to remove; refused (one line) if unknown, the last one, or a route reflector."""
    node = next((n for n in cluster.nodes if n.name == name), None)
    if node is None:
        raise NotFoundError(f'nodes "{name}" not found (nodes: {", ".join(n.name for n in cluster.nodes)})')
    if len(cluster.nodes) == 1:
        raise StateError(f"node {name} is the lab's last node: a lab needs one (`netlab down "
                         f"{cluster.name}` removes the whole lab)")
    if name in cluster.config.calico.route_reflectors and cluster.config.backend == "calico":
        raise StateError(f"node {name} is a BGP route reflector (spec.calico.routeReflectors): its "
                         f"clients would lose every route")
    return node


def drain(cluster: Cluster, name: str) -> list[str]:
    """kubectl drain, then the node's deletion: its pods are deleted, the node leaves, and the
    replica controllers make replacements on the nodes that are left. Returns the deleted pods."""
    check_removable(cluster, name)
    gone = [p.meta.key for p in cluster.pods_on(name)]
    for key in gone:
        cluster.remove_pod(key)
    cluster.remove_node(name)
    follow_api_endpoints(cluster)
    for rc in cluster.controllers():
        cluster.reconcile_rc(rc)
    return gone


def node_of_request(doc) -> tuple[Optional[str], dict]:
    """(name, labels) of a v1 Node in a request body; name None: choose one."""
    if doc is None:
        return None, {}
    if not isinstance(doc, dict) or doc.get("kind", "Node") != "Node":
        raise InvalidError("must be a v1 Node", value=doc.get("kind") if isinstance(doc, dict) else doc,
                           field="kind")
    md = doc.get("metadata") or {}
    if not isinstance(md, dict):
        raise InvalidError("must be a mapping", field="metadata")
    known = set(NODE_FIELDS) | {"annotations", "uid", "resourceVersion", "creationTimestamp", "generateName"}
    for key in md:
        if key not in known:
            raise InvalidError(f"unknown field (known: {', '.join(NODE_FIELDS)})", field=f"metadata.{key}")
    return md.get("name"), md.get("labels") or {}
