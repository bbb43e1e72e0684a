"""The cluster and the world: NodePort and LoadBalancer from an outside client, and pods
reaching the (simulated) internet through SNAT."""
from __future__ import annotations

from ...model.objects import Service, ServicePort
from ...model.services import Endpoint
from .. import sockets
from ..catalog import check
from ..lab import LabView, pod_label
from ..landing import coverage, land
from ..proxyrules import Entry, NodeTables, expect_rules, node_addresses
from ..result import SOCKET, Evidence
from . import DOC002, DOC004
from .services import judge_landing, served


def _node_ports(view: LabView) -> list[tuple[Service, ServicePort, list[Endpoint]]]:
    """NodePorts with externalTrafficPolicy Cluster (Local ones have a check of their own)."""
    return [(s, p, e) for s, p, e in served(view) if p.node_port and not s.external_policy_local]


def _local_node_ports(view: LabView) -> list[tuple[Service, ServicePort, list[Endpoint]]]:
    return [(s, p, e) for s, p, e in served(view) if p.node_port and s.external_policy_local]


@check("nodeport-local",
       claim="With externalTrafficPolicy: Local a NodePort keeps the client's source address: a "
             "node with a pod of the service sends the connection to one of its own pods, which "
             "sees the outside client's address (no SNAT); a node without one drops it.",
       source="Kubernetes documentation, Service: traffic policies (kube-proxy's KUBE-EXT/KUBE-SVL chains)",
       needs="a NodePort (or LoadBalancer) service with externalTrafficPolicy: Local and endpoints",
       applies=lambda view: bool(_local_node_ports(view)), evidence=SOCKET)
def nodeport_local(view: LabView, ev: Evidence) -> str:
    for svc, port, eps in _local_node_ports(view):
        for node in view.cluster.nodes:
            address = f"{node.internal_ip}:{port.node_port}"
            what = f"{address} (node {node.name}, service {svc.meta.key}, policy Local)"
            local = [e for e in eps if view.pod_of(e).spec.node_name == node.name]
            if not local:
                out = sockets.in_netns(view.client_netns, sockets.attempt_tcp, node.internal_ip, port.node_port)
                ev.add(f"client {view.client_ip}", what, "TCP connect", out.seen,
                       not out.ok and "no answer" in out.seen, "dropped: no local endpoints (no answer)")
                continue
            count = coverage(len(local))
            landing = land(view, view.client_netns, node.internal_ip, port.node_port, local, count)
            ok, seen, expected = judge_landing(landing, count, address)
            ips = {p.rsplit(":", 1)[0] for peers in landing.by_pod.values() for p in peers}
            ev.add(f"client {view.client_ip}", what, f"{count} TCP connections, held",
                   f"{seen}; servers saw {', '.join(sorted(ips)) or 'nothing'}",
                   ok and ips == {view.client_ip}, f"{expected}, only {node.name}'s pods, source {view.client_ip} kept")
    return "nodes with a local endpoint served from it with the client's address; the others dropped"


@check("nodeport-outside",
       claim="A NodePort service answers on that port of every node's address, from a client "
             "outside the cluster, whether or not the node runs one of its pods; the pod sees the "
             "node that took the connection (SNAT), so replies go back the same way.",
       source=f"{DOC002} (NodePort: 在Kubernetes集群中的每个Node上打开一个主机上的真实端口号), {DOC004} §4.2",
       needs="a NodePort (or LoadBalancer) service with endpoints",
       applies=lambda view: bool(_node_ports(view)), evidence=SOCKET)
def nodeport_outside(view: LabView, ev: Evidence) -> str:
    tables = NodeTables(view)
    for node in view.cluster.nodes:
        for svc, port, eps in _node_ports(view):
            expect_rules(view, ev, tables, node, svc, port, eps, Entry("nodeport", node.internal_ip, port.node_port))
    for svc, port, eps in _node_ports(view):
        count = coverage(len(eps))
        for node in view.cluster.nodes:
            address = f"{node.internal_ip}:{port.node_port}"
            landing = land(view, view.client_netns, node.internal_ip, port.node_port, eps, count)
            ok, seen, expected = judge_landing(landing, count, address)
            ips = {p.rsplit(":", 1)[0] for peers in landing.by_pod.values() for p in peers}
            snat = ips <= node_addresses(node)
            ev.add(f"client {view.client_ip}", f"{address} (node {node.name}, service {svc.meta.key})",
                   f"{count} TCP connections, held", f"{seen}; servers saw {', '.join(sorted(ips)) or 'nothing'}",
                   ok and snat, f"{expected}, seen from {node.name}'s addresses")
    return "every node answered the NodePort from outside"


def _balancers(view: LabView) -> list[tuple[Service, ServicePort, list[Endpoint]]]:
    # Local policy is left out: the lab's load balancer (a route on the underlay) spreads over
    # every node and does not use the health-check port as a cloud's would, so it may pick a
    # node that drops; nodeport-local proves that policy node by node instead.
    return [(s, p, e) for s, p, e in served(view)
            if s.type == "LoadBalancer" and s.load_balancer_ip and not s.external_policy_local]


@check("loadbalancer-outside",
       claim="A LoadBalancer service answers on its load-balancer address from outside the "
             "cluster: the underlay routes the address to the nodes, whose rules pick a pod.",
       source=f"{DOC002} (LoadBalancer: 需要指定负载均衡器的IP地址), {DOC004} §4.2",
       needs="a LoadBalancer service with endpoints",
       applies=lambda view: bool(_balancers(view)), evidence=SOCKET)
def loadbalancer_outside(view: LabView, ev: Evidence) -> str:
    tables = NodeTables(view)
    for node in view.cluster.nodes:
        for svc, port, eps in _balancers(view):
            expect_rules(view, ev, tables, node, svc, port, eps, Entry("outside", svc.load_balancer_ip, port.port))
    nodes = {ip: n.name for n in view.cluster.nodes for ip in node_addresses(n)}
    for svc, port, eps in _balancers(view):
        count = coverage(len(eps))
        address = f"{svc.load_balancer_ip}:{port.port}"
        landing = land(view, view.client_netns, svc.load_balancer_ip, port.port, eps, count)
        ok, seen, expected = judge_landing(landing, count, address)
        ips = {p.rsplit(":", 1)[0] for peers in landing.by_pod.values() for p in peers}
        via = sorted({nodes.get(ip, f"unknown {ip}") for ip in ips})
        ev.add(f"client {view.client_ip}", f"{address} (service {svc.meta.key})",
               f"{count} TCP connections, held", f"{seen}; entered via {', '.join(via) or 'nothing'}",
               ok and not any(v.startswith("unknown") for v in via), f"{expected}, through a node")
    return "the load-balancer addresses answered from outside"


def _egress_clients(view: LabView, port: int = 0):
    """A pod per node; given the port, the first one NetworkPolicy lets reach it on the internet."""
    out = []
    for node in view.cluster.nodes:
        pods = [p for p in view.pods_on(node) if not port or view.policy_allows(p, None, port, view.internet_ip)]
        out += pods[:1]
    return out


@check("egress-snat",
       claim="A pod reaching the internet leaves with its node's address (SNAT by iptables), "
             "so the replies find their way back to the pod.",
       source=f"{DOC004} §4.1 (Service到Internet: iptables执行源NAT(SNAT))",
       needs="a pod",
       applies=lambda view: bool(_egress_clients(view)), evidence=SOCKET)
def egress_snat(view: LabView, ev: Evidence) -> str:
    clients = _egress_clients(view)
    with sockets.Listener(view.internet_netns, view.internet_ip, limit=len(clients)) as server:
        allowed = _egress_clients(view, server.port)
        if len(allowed) < len(clients):
            ev.note(f"{len(clients) - len(allowed)} node(s) left out: NetworkPolicy lets none of "
                    f"their pods reach {view.internet_ip}:{server.port}")
        for pod in allowed:
            node = view.node_of(pod)
            out = sockets.in_netns(view.netns(pod), sockets.ask_listener, view.internet_ip, server.port)
            ev.add(pod_label(pod), f"{view.internet_ip}:{server.port} (internet host, a listener for this check)",
                   "TCP connect, read the address the server saw", out.seen,
                   out.ok and out.body.rsplit(":", 1)[0] == node.internal_ip,
                   f"server saw {node.internal_ip} (node {node.name})")
    return "pods reached the internet as their nodes' addresses"
