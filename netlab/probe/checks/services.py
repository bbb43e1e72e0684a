"""Services inside the cluster: ClusterIP from pods and nodes, the spread over endpoints,
ClientIP session affinity, and the REJECT of a service without endpoints."""
from __future__ import annotations

from typing import Optional

from ...model.cluster import Node
from ...model.objects import Pod, Service, ServicePort
from ...model.services import Endpoint
from .. import sockets
from ..catalog import check
from ..lab import LabView, pod_hostname, pod_label
from ..landing import Landing, coverage, covers_all, land
from ..proxyrules import Entry, NodeTables, expect_reject, expect_rules, node_addresses
from ..result import SOCKET, Evidence
from . import DOC000, DOC001, DOC002, DOC003

AFFINITY_CONNECTIONS = 16


def served(view: LabView, protocol: str = "TCP") -> list[tuple[Service, ServicePort, list[Endpoint]]]:
    """Service ports with at least one endpoint."""
    found = []
    for svc, port in view.service_ports(protocol):
        eps = view.endpoints(svc, port)
        if eps:
            found.append((svc, port, eps))
    return found


def target(svc: Service, port: ServicePort) -> str:
    return f"{svc.cluster_ip}:{port.port} (service {svc.meta.key})"


def read_rules(view: LabView, ev: Evidence, targets, way: str = "pod",
               nodes: Optional[list[Node]] = None) -> None:
    """Every node's nat table must carry kube-proxy's rules for each (service, port,
    endpoints) of the model: recorded as reads of kernel state before any traffic is sent."""
    tables = NodeTables(view)
    for node in nodes if nodes is not None else view.cluster.nodes:
        for svc, port, eps in targets:
            expect_rules(view, ev, tables, node, svc, port, eps, Entry(way, svc.cluster_ip, port.port))


def judge_landing(landing: Landing, count: int, client_sees: str) -> tuple[bool, str, str]:
    """(ok, seen, expected) for held connections: all opened, all found on endpoints, and the
    client's sockets connected to the address it dialled (the replies were un-NATed)."""
    seen = f"{landing.opened}/{count} connected" + (f" then {landing.error}" if landing.error else "")
    seen += f"; landed on {landing.spread()}"
    if landing.lost:
        seen += "; one connected yet reached none of the endpoints"
    if landing.client_peers and landing.client_peers != {client_sees}:
        seen += f"; client saw replies from {', '.join(sorted(landing.client_peers))}"
    ok = landing.error is None and landing.landed == landing.opened == count and landing.client_peers == {client_sees}
    return ok, seen, f"{count} connections, each on an endpoint, replies from {client_sees}"


def _peers_ok(landing: Landing, allowed_ips: set[str], client: Pod | None = None) -> tuple[bool, str]:
    """Did every server see one of the allowed source addresses? A pod that reached itself
    through its service (hairpin) is masqueraded, so its own connections may show anything."""
    seen = set()
    ok = True
    for key, peers in landing.by_pod.items():
        ips = {p.rsplit(":", 1)[0] for p in peers}
        seen |= ips
        if not (client is not None and key == client.meta.key) and not ips <= allowed_ips:
            ok = False
    return ok, ", ".join(sorted(seen)) or "nothing"


@check("service-clusterip",
       claim="A pod on any node reaches a service at ClusterIP:port and lands on one of the "
             "service's pods, which sees the client's own pod IP (iptables mode: DNAT only) or its "
             "node's kube-proxy (userspace mode: the proxy connects on the client's behalf).",
       source=f"{DOC000} §4-5, {DOC001} (pod 访问service服务), {DOC002} (Pod到Service之间的通信)",
       needs="a service with endpoints (ready pods it selects)",
       applies=lambda view: bool(served(view) or served(view, "UDP")), evidence=SOCKET)
def service_clusterip(view: LabView, ev: Evidence) -> str:
    read_rules(view, ev, served(view) + served(view, "UDP"))
    for svc, port, eps in served(view):
        count = coverage(len(eps))
        for node in view.cluster.nodes:
            client = view.client_for(svc, node)
            if client is None:
                continue
            landing = land(view, view.netns(client), svc.cluster_ip, port.port, eps, count)
            ok, seen, expected = judge_landing(landing, count, f"{svc.cluster_ip}:{port.port}")
            sources = {client.pod_ip} if view.proxy_mode == "iptables" else node_addresses(node)
            peers_ok, peers = _peers_ok(landing, sources, client)
            ev.add(pod_label(client), target(svc, port), f"{count} TCP connections, held",
                   f"{seen}; servers saw {peers}", ok and peers_ok,
                   f"{expected}, seen from {' or '.join(sorted(sources))}")
    for svc, port, eps in served(view, "UDP"):
        pods = [view.pod_of(ep) for ep in eps]
        if not all(view.serves_netexec(p, ep.port, "UDP") for p, ep in zip(pods, eps)):
            ev.note(f"{svc.meta.key} UDP {port.port} skipped: its pods do not answer 'hostname'")
            continue
        client = view.client_for(svc)
        out = sockets.in_netns(view.netns(client), sockets.attempt_udp, svc.cluster_ip, port.port, b"hostname")
        names = {pod_hostname(p) for p in pods}
        ev.add(pod_label(client), target(svc, port) + " UDP", "datagram 'hostname'", out.seen,
               out.ok and out.body in names, f"a reply from one of {', '.join(sorted(names))}")
    return "every ClusterIP connection reached an endpoint, " + (
        "from the client's own pod IP" if view.proxy_mode == "iptables" else "through the client node's kube-proxy")


@check("service-from-node",
       claim="A node itself reaches a service at ClusterIP:port (the OUTPUT chain has the same "
             "rules); the pod sees the node's address.",
       source=f"{DOC002} (集群内的节点通过虚拟IP和端口能够访问Service后端的Pod), {DOC001} (KUBE-PORTALS-HOST)",
       needs="a service with endpoints (ready pods it selects)",
       applies=lambda view: bool(served(view)), evidence=SOCKET)
def service_from_node(view: LabView, ev: Evidence) -> str:
    read_rules(view, ev, served(view), way="node")
    for svc, port, eps in served(view):
        count = coverage(len(eps))
        for node in view.cluster.nodes:
            landing = land(view, node.netns, svc.cluster_ip, port.port, eps, count)
            ok, seen, expected = judge_landing(landing, count, f"{svc.cluster_ip}:{port.port}")
            peers_ok, peers = _peers_ok(landing, node_addresses(node))
            ev.add(f"node {node.name}", target(svc, port), f"{count} TCP connections, held",
                   f"{seen}; servers saw {peers}", ok and peers_ok,
                   f"{expected}, seen from one of {node.name}'s addresses")
    return "every node reached every service"


def _spread_targets(view: LabView) -> list[tuple[Service, ServicePort, list[Endpoint]]]:
    return [(s, p, e) for s, p, e in served(view) if len(e) > 1 and s.session_affinity == "None"]


@check("service-lb-spread",
       claim="Without session affinity kube-proxy picks an endpoint per connection (at random in "
             "iptables mode, round robin in userspace mode), so connections spread over every pod.",
       source=f"{DOC000} §5 (默认情况下，后端的选择是随机的), {DOC002} (kube-proxy的负载均衡器), {DOC003} §5",
       needs="a service with two or more endpoints and no affinity",
       applies=lambda view: bool(_spread_targets(view)), evidence=SOCKET)
def service_lb_spread(view: LabView, ev: Evidence) -> str:
    read_rules(view, ev, _spread_targets(view))
    for svc, port, eps in _spread_targets(view):
        client = view.client_for(svc)
        count = coverage(len(eps))
        landing = land(view, view.netns(client), svc.cluster_ip, port.port, eps, count)
        seen = f"{landing.opened}/{count} connected" + (f" then {landing.error}" if landing.error else "")
        if covers_all(len(eps)):
            missed = sorted({ep.pod for ep in eps} - set(landing.by_pod))
            seen += f"; landed on {landing.spread()}" + (f"; never on {', '.join(missed)}" if missed else "")
            ok, expected = not missed, f"all {len(eps)} endpoints chosen (a miss has odds below 1 in 10^4)"
        else:
            # Too many endpoints to see each chosen in one probe: the connections must still
            # spread. Uniform picks land on n(1 - (1 - 1/n)^count) distinct pods on average,
            # with little spread around it; four fifths of that is all but certain, and a
            # rule that favours a few endpoints falls short.
            wanted = int(0.8 * len(eps) * (1 - (1 - 1 / len(eps)) ** count))
            seen += f"; landed on {len(landing.by_pod)} distinct endpoints of {len(eps)}"
            ok, expected = len(landing.by_pod) >= wanted, f"at least {wanted} distinct endpoints of {len(eps)}"
        ev.add(pod_label(client), target(svc, port), f"{count} TCP connections, held", seen,
               ok and landing.error is None and landing.landed == count, expected)
    return "connections spread over the endpoints"


def _sticky(view: LabView) -> list[tuple[Service, ServicePort, list[Endpoint]]]:
    return [(s, p, e) for s, p, e in served(view) if len(e) > 1 and s.session_affinity == "ClientIP"]


@check("session-affinity",
       claim="With sessionAffinity: ClientIP every connection from one client goes to the same pod.",
       source=f"{DOC000} §5 (service.spec.sessionAffinity设置为“ClientIP”), {DOC002} (Session保持)",
       needs="a ClientIP-affinity service with two or more endpoints",
       applies=lambda view: bool(_sticky(view)), evidence=SOCKET)
def session_affinity(view: LabView, ev: Evidence) -> str:
    read_rules(view, ev, _sticky(view))
    for svc, port, eps in _sticky(view):
        client = view.client_for(svc)
        landing = land(view, view.netns(client), svc.cluster_ip, port.port, eps, AFFINITY_CONNECTIONS)
        seen = f"{landing.opened}/{AFFINITY_CONNECTIONS} connected" + (f" then {landing.error}" if landing.error else "")
        ev.add(pod_label(client), target(svc, port), f"{AFFINITY_CONNECTIONS} TCP connections, held",
               f"{seen}; landed on {landing.spread()}",
               landing.error is None and len(landing.by_pod) == 1 and landing.landed == AFFINITY_CONNECTIONS,
               f"all {AFFINITY_CONNECTIONS} on one of {len(eps)} endpoints")
    return "each client stuck to one endpoint"


def _empty(view: LabView) -> list[tuple[Service, ServicePort]]:
    """Services whose selector matches no ready pod. A Service without a selector (such as
    default/kubernetes) has hand-written Endpoints instead, and ExternalName has none at all."""
    return [(s, p) for s, p in view.service_ports("TCP")
            if s.selector is not None and s.type != "ExternalName" and not view.endpoints(s, p)]


@check("no-endpoints-reject",
       claim="A service whose selector matches no ready pod has no endpoints, and kube-proxy's "
             "iptables rules reject its connections at once instead of letting clients hang.",
       source=f"{DOC002} (Service与Endpoints: Endpoint对象随Pod的创建、销毁而更新)",
       needs="kube-proxy in iptables mode (its REJECT rule) and a service without endpoints",
       applies=lambda view: view.proxy_mode == "iptables" and bool(_empty(view)) and bool(view.pods),
       evidence=SOCKET)
def no_endpoints_reject(view: LabView, ev: Evidence) -> str:
    tables = NodeTables(view)
    for node in view.cluster.nodes:
        for svc, port in _empty(view):
            expect_reject(view, ev, tables, node, svc, port)
    for svc, port in _empty(view):
        client = view.client_for(svc)
        out = sockets.in_netns(view.netns(client), sockets.attempt_tcp, svc.cluster_ip, port.port)
        ev.add(pod_label(client), target(svc, port), "TCP connect", out.seen,
               out.seen == "connection refused", "connection refused (REJECT)")
    return "connections to services without endpoints were refused at once"
