"""Nodes joining and leaving a running lab, run only inside its agent (the lab's one writer).

Both go through the write path of runtime/changes.py (validate -> kernel -> commit), with
the node's own network as the transaction's NetworkChange:

- add: the new node's namespace and its port on the underlay are built from its plan
  (plan_node, as `up` builds a node), and every other namespace's routing follows
  (plan/nodedelta.py: the load balancer's ECMP route, vxlan's route/neighbour/FDB entry,
  host-gw's route). If anything fails, all of it is taken back. Its kube-proxy rules come
  with the transaction's sync; its daemons (BIRD, flanneld, ...) start on the agent's next
  round, when the others' BIRDs are reconfigured and flanneld's table is rewritten.
- remove: as `kubectl drain` and deleting the node would end. Its pods are deleted and the
  replica controllers make replacements on the other nodes (one transaction), the others'
  routing drops the node, and after the commit its processes stop and its namespace goes.
"""
from __future__ import annotations

import sys
from typing import Optional

from .. import state
from ..kernel import netns
from ..kernel.build import Builder
from ..model import names, nodes
from ..model.cluster import Cluster, Node
from ..model.errors import StateError
from ..plan import network as netplan
from ..plan import nodedelta
from . import changes


def add_node(cluster: Cluster, kubelet, name: Optional[str] = None, labels: Optional[dict] = None) -> Node:
    """Add a node to the running lab; returns it. Nothing stays of an add that fails."""
    snapshot = cluster.snapshot()
    try:
        node = nodes.add(cluster, name, labels)
    except BaseException:
        cluster.restore(snapshot)
        raise
    changes.converge(cluster, snapshot, kubelet, NodeAdded(Cluster.from_state(snapshot), cluster, node))
    return cluster.node(node.name)


def remove_node(cluster: Cluster, kubelet, name: str) -> list[str]:
    """Drain a node and remove it; returns the pods that were deleted with it."""
    snapshot = cluster.snapshot()
    try:
        gone = nodes.drain(cluster, name)
    except BaseException:
        cluster.restore(snapshot)
        raise
    old = Cluster.from_state(snapshot)
    changes.converge(cluster, snapshot, kubelet, NodeRemoved(old, cluster, old.node(name)))
    return gone


def _change_routing(deltas: list[nodedelta.Delta], undoing: bool = False) -> None:
    """Apply each namespace's delta. Undoing, a namespace that fails is reported and the
    others are still put back (the error that caused the undo is the one the user sees)."""
    with Builder() as builder:
        for d in deltas:
            try:
                builder.change_routing(d.netns, d.add, d.remove)
            except Exception as exc:
                if not undoing:
                    raise
                print(f"agent: undoing a node change in {d.netns}: {exc}", file=sys.stderr, flush=True)


def _remove_node_network(cluster: Cluster, node: Node) -> None:
    """Stop what runs in the node's namespace, then remove its underlay port and namespace.
    The port goes explicitly: a namespace's devices leave when the kernel gets round to it,
    and a node added again at once needs the same port name."""
    ino = netns.inode(node.netns)
    if ino:
        netns.kill_processes([ino])
    with Builder() as builder:
        builder.remove_links(names.underlay_netns(cluster.name), [names.uplink(node.name)])
    netns.delete(node.netns)


class NodeAdded:
    def __init__(self, old: Cluster, new: Cluster, node: Node):
        self.old, self.new, self.node = old, new, node
        self.created = False

    def apply(self) -> None:
        underlay, port = names.underlay_netns(self.new.name), names.uplink(self.node.name)
        if netns.ifindexes(underlay, [port]):
            # A port of that name is not ours to take (a removed node's, not yet gone?): refuse
            # before anything is built, so that undo removes only what this add made.
            raise StateError(f"the underlay already has a port {port} for node {self.node.name}; "
                             f"try again in a moment")
        netns.create(self.node.netns)            # refuses a name that exists: never someone else's
        self.created = True
        with Builder() as builder:
            # The underlay's port first: its other end is the eth0 the node's devices need.
            builder.apply([netplan.plan_uplink(self.new, self.node), netplan.plan_node(self.new, self.node)])
        _change_routing(nodedelta.between(self.old, self.new))

    def undo(self) -> None:
        _change_routing(nodedelta.between(self.new, self.old), undoing=True)
        if self.created:
            _remove_node_network(self.new, self.node)

    def finish(self) -> None:
        pass


class NodeRemoved:
    def __init__(self, old: Cluster, new: Cluster, node: Node):
        self.old, self.new, self.node = old, new, node

    def apply(self) -> None:
        _change_routing(nodedelta.between(self.old, self.new))

    def undo(self) -> None:
        _change_routing(nodedelta.between(self.new, self.old), undoing=True)

    def finish(self) -> None:
        """After the commit the node is gone from the lab whatever happens here: what fails
        is reported in the agent's log, and `netlab down` removes what is left."""
        try:
            _remove_node_network(self.old, self.node)
            _forget_address(self.new, self.node.internal_ip)
        except Exception as exc:  # noqa: BLE001 - reported, the commit stands
            print(f"agent: removing node {self.node.name}'s network: {exc}", file=sys.stderr, flush=True)
        for path in node_files(self.new.name, self.node.name):
            try:
                path.unlink()
            except FileNotFoundError:
                pass


def _forget_address(cluster: Cluster, ip: str) -> None:
    """What ARP learned about the node's address, everywhere on the underlay."""
    with Builder() as builder:
        builder.forget_neighbour(names.underlay_netns(cluster.name), netplan.UNDERLAY_BRIDGE, ip)
        builder.forget_neighbour(names.client_netns(cluster.name), "eth0", ip)
        for node in cluster.nodes:
            builder.forget_neighbour(node.netns, "eth0", ip)


def node_files(lab: str, node: str) -> list:
    """The files the agent keeps for one node's daemons (not their logs)."""
    from ..dataplane import proxy_config_file
    from .bird import config_path, socket_path
    from .healthcheck import config_file
    return [proxy_config_file(lab, node), config_path(lab, node), socket_path(lab, node),
            config_file(lab, node), state.lab_dir(lab) / "bird" / f"{node}.tmp"]
