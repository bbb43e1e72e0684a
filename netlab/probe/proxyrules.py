"""kube-proxy's rules for the Services the model has, read from every node's live tables.

Whether a service check applies comes from the model (a Service with endpoints, that is
ready pods it selects); whether the node's rules carry it is what these reads find out. On
each node the first packet of a connection is walked through the live nat table
(netfilter.walk) the way the kernel would:

  iptables mode   every branch must end in a DNAT to one of the Service's endpoints, and
                  every endpoint must be reachable by some branch
  userspace mode  the packet must be sent to the node's proxy: REDIRECT for traffic coming
                  in (pods, outside clients), DNAT to <nodeIP>:<proxy port> for the node's own

A missing entry chain (KUBE-SERVICES, KUBE-PORTALS-CONTAINER, ...), no rule for the
Service's address and port, or a table that cannot be read is recorded as a failed read of
kernel state, saying what is missing: it never turns a check into n/a.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..model.cluster import Node
from ..model.objects import Service, ServicePort
from ..model.services import Endpoint
from ..plan.network import POD_BRIDGE
from . import netfilter, rules
from .lab import LabView
from .result import Evidence

# Which way the first packet enters the node's nat table, per mode: the built-in chain, and
# the chains of kube-proxy's it must pass through (the first one jumped to from the built-in).
ENTRY = {
    "iptables": {"pod": ("PREROUTING", ("KUBE-SERVICES",)), "node": ("OUTPUT", ("KUBE-SERVICES",)),
                 "outside": ("PREROUTING", ("KUBE-SERVICES",)),
                 "nodeport": ("PREROUTING", ("KUBE-SERVICES", "KUBE-NODEPORTS"))},
    "userspace": {"pod": ("PREROUTING", ("KUBE-PORTALS-CONTAINER",)), "node": ("OUTPUT", ("KUBE-PORTALS-HOST",)),
                  "outside": ("PREROUTING", ("KUBE-PORTALS-CONTAINER",)),
                  "nodeport": ("PREROUTING", ("KUBE-NODEPORT-CONTAINER",))},
}
FROM = {"pod": "from a pod", "node": "from the node itself", "outside": "from outside",
        "nodeport": "from outside"}


def node_addresses(node: Node) -> set[str]:
    """The addresses a node masquerades to: its underlay IP, cni0's and flannel.1's."""
    return {node.internal_ip, node.gateway, node.vtep_ip}


class NodeTables:
    """Each node's tables, read once per check; a read that fails is kept as its error."""

    def __init__(self, view: LabView):
        self.view = view
        self._read: dict[tuple[str, str], object] = {}

    def get(self, node: Node, table: str) -> rules.Table:
        key = (node.name, table)
        if key not in self._read:
            try:
                self._read[key] = rules.read(node.netns, (table,))[table]
            except rules.Unreadable as exc:
                self._read[key] = exc
        found = self._read[key]
        if isinstance(found, Exception):
            raise found
        return found


@dataclass
class Entry:
    """One way into a Service: who sends, to which address and port."""

    way: str            # pod | node | outside | nodeport
    dst: str
    dport: int

    def describe(self, protocol: str) -> str:
        return f"{self.dst}:{self.dport}/{protocol.lower()}"


def _packet(view: LabView, node: Node, entry: Entry, protocol: str) -> tuple[netfilter.Packet, netfilter.Where]:
    local = frozenset(node_addresses(node) | {"127.0.0.1"})
    proto = protocol.lower()
    if entry.way == "pod":
        pods = view.pods_on(node)
        src = pods[0].pod_ip if pods else node.gateway
        return netfilter.Packet(src, entry.dst, proto, entry.dport), netfilter.Where(local, iif=POD_BRIDGE)
    if entry.way == "node":
        return netfilter.Packet(node.internal_ip, entry.dst, proto, entry.dport), netfilter.Where(local, oif="eth0")
    return netfilter.Packet(view.client_ip, entry.dst, proto, entry.dport), netfilter.Where(local, iif="eth0")


def _judge(view: LabView, node: Node, outcomes: list[netfilter.Outcome], eps: list[Endpoint],
           way: str) -> tuple[bool, str, str]:
    """(ok, seen, expected) for the walk's outcomes."""
    translated = [o for o in outcomes if o.verdict in ("DNAT", "REDIRECT")]
    other = sorted({o.verdict for o in outcomes if o.verdict not in ("DNAT", "REDIRECT")})
    if view.proxy_mode == "userspace":
        if way == "node":
            want = "DNAT to the node's proxy port"
            ok = all(o.verdict == "DNAT" and o.packet.dst == node.internal_ip for o in outcomes)
        else:
            want = "REDIRECT to the node's proxy port"
            ok = all(o.verdict == "REDIRECT" for o in outcomes)
        ports = sorted({f"{o.verdict} {o.packet.dst}:{o.packet.dport}" if o.verdict == "DNAT"
                        else f"{o.verdict} to port {o.packet.dport}" for o in translated})
        seen = ", ".join(ports) or "not translated"
        if other and translated:
            seen += f"; some branches end in {', '.join(other)}"
        return ok and bool(outcomes), seen, want
    want = {str(ep) for ep in eps}
    got = {f"{o.packet.dst}:{o.packet.dport}" for o in translated if o.verdict == "DNAT"}
    seen = f"DNAT to {', '.join(sorted(got))}" if got else "not translated"
    if got - want:
        seen += f"; not endpoints: {', '.join(sorted(got - want))}"
    if got and want - got:
        seen += f"; never to {', '.join(sorted(want - got))}"
    if other and translated:
        seen += f"; some branches end in {', '.join(other)}"
    ok = got == want and not other and all(o.verdict == "DNAT" for o in outcomes)
    return ok, seen, f"DNAT to each of {', '.join(sorted(want))}"


def _missing(table: rules.Table, builtin: str, chains: tuple[str, ...]) -> Optional[str]:
    """Why the walk cannot work, in the rules' own words, or None when the chains are there."""
    for chain in chains:
        if chain not in table.chains:
            return f"nat chain {chain} is missing"
    if not any(r.target == chains[0] for r in table.chains.get(builtin, [])):
        return f"nat {builtin} has no jump to {chains[0]}"
    return None


def expect_rules(view: LabView, ev: Evidence, tables: NodeTables, node: Node, svc: Service,
                 port: ServicePort, eps: list[Endpoint], entry: Entry) -> bool:
    """Record whether `node`'s nat table carries kube-proxy's rules for this entry into the
    service; True when it does."""
    builtin, chains = ENTRY[view.proxy_mode][entry.way]
    where = f"{entry.describe(port.protocol)} (service {svc.meta.key}, {FROM[entry.way]})"
    what = f"read nat rules, walk {builtin}"
    try:
        nat = tables.get(node, "nat")
    except rules.Unreadable as exc:
        return ev.read(f"node {node.name}", where, what, str(exc), False, "a readable nat table")
    pkt, at = _packet(view, node, entry, port.protocol)
    ok, seen, expected = _judge(view, node, netfilter.walk(nat, builtin, pkt, at), eps, entry.way)
    if not ok:
        why = _missing(nat, builtin, chains)
        if why is None and seen == "not translated":
            why = f"no rule for {entry.describe(port.protocol)} in {chains[-1]}"
        seen = f"{why}: {seen}" if why else seen
    return ev.read(f"node {node.name}", where, what, seen, ok, expected)


def expect_reject(view: LabView, ev: Evidence, tables: NodeTables, node: Node, svc: Service,
                  port: ServicePort) -> bool:
    """iptables mode, a Service without endpoints: a new connection from a pod is REJECTed
    in the filter table (FORWARD -> KUBE-SERVICES)."""
    where = f"{svc.cluster_ip}:{port.port}/{port.protocol.lower()} (service {svc.meta.key}, no endpoints)"
    what = "read filter rules, walk FORWARD"
    try:
        table = tables.get(node, "filter")
    except rules.Unreadable as exc:
        return ev.read(f"node {node.name}", where, what, str(exc), False, "a readable filter table")
    entry = Entry("pod", svc.cluster_ip, port.port)
    pkt, at = _packet(view, node, entry, port.protocol)
    outcomes = netfilter.walk(table, "FORWARD", pkt, at)
    verdicts = sorted({o.verdict for o in outcomes})
    ok = verdicts == ["REJECT"]
    seen = ", ".join(verdicts)
    if not ok:
        if "KUBE-SERVICES" not in table.chains:
            seen = f"filter chain KUBE-SERVICES is missing: {seen}"
        elif "REJECT" not in verdicts:
            seen = f"no REJECT rule for {entry.describe(port.protocol)} in filter KUBE-SERVICES: {seen}"
    return ev.read(f"node {node.name}", where, what, seen, ok, "REJECT")
