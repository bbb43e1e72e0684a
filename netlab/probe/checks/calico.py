"""The calico backend: pods routed with no overlay (a pod's packet crosses the underlay as it
left the pod), every BGP session Established (asked of BIRD itself), and every other node's
IPAM blocks in each node's table as routes BIRD learned over BGP."""
from __future__ import annotations

import socket
from typing import Any, Optional

from ...kernel import netns
from ...model import names
from .. import sockets
from ..capture import capture
from ..catalog import check
from ..lab import LabView, pod_label
from ..result import PACKET, SOCKET, STATE, Evidence
from . import DOC003, DOC004

MAX_FRAMES = 24
CAPTURE_SECONDS = 3.0
RTPROT_BIRD = 12


def _calico(view: LabView) -> bool:
    return view.cluster.config.backend == "calico"


def _pair(view: LabView):
    """A cross-node pair policy allows (a denied one would prove nothing about the wire)."""
    return view.cross_node_pair()


def routed_frame(pkt: Any) -> Optional[dict]:
    """An IPv4 frame on the underlay: its outermost IP header and what it carries (runs in
    the capture child, after scapy loaded)."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    if not pkt.haslayer(IP):
        return None
    ip = pkt[IP]
    l4 = ip.payload
    encap = ip.proto in (4, 47) or (isinstance(l4, UDP) and l4.dport in (4789, 8472, 8285))
    sport, dport = getattr(l4, "sport", 0), getattr(l4, "dport", 0)
    return {"src": ip.src, "dst": ip.dst, "proto": ip.proto, "encap": encap,
            "mac_src": pkt[Ether].src if pkt.haslayer(Ether) else "",
            "line": f"{ip.src}:{sport} > {ip.dst}:{dport} {l4.name} {str(getattr(l4, 'flags', ''))}".rstrip()}


@check("calico-routed",
       claim="With Calico a pod's packet crosses the underlay as the pod sent it: no tunnel and no "
             "envelope, the two pods' own addresses in the only IP header, both ways; the nodes "
             "route it by what BGP taught them.",
       source=f"{DOC003} §5 (纯三层的方法; 不需要额外的NAT,隧道或者Overlay Network), {DOC004} (CNI插件 Calico)",
       needs="the calico backend and pods on two nodes, one with a TCP port",
       applies=lambda view: _calico(view) and _pair(view) is not None, evidence=PACKET)
def calico_routed(view: LabView, ev: Evidence) -> str:
    src, dst, port = _pair(view)
    a, b = view.node_of(src), view.node_of(dst)
    ports = [names.uplink(a.name), names.uplink(b.name)]
    out, frames = capture(view.underlay_netns, ports, routed_frame,
                          lambda: sockets.in_netns(view.netns(src), sockets.attempt_tcp, dst.pod_ip, port),
                          count=MAX_FRAMES, timeout=CAPTURE_SECONDS)
    ev.add(pod_label(src), f"{dst.pod_ip}:{port} ({dst.meta.key})", "TCP connect",
           out.seen, out.ok or out.seen == "connection refused", "an answer", kind=SOCKET)
    sent = f"capture on underlay ports {', '.join(ports)} (at most {MAX_FRAMES} frames, {CAPTURE_SECONDS:g}s)"
    encapsulated = [f for f in frames if f["encap"]]
    for label, (s, d) in (("there", (src.pod_ip, dst.pod_ip)), ("back", (dst.pod_ip, src.pod_ip))):
        hit = next((f for f in frames if f["src"] == s and f["dst"] == d and not f["encap"]), None)
        seen = hit["line"] if hit else ("; ".join(f["line"] for f in frames[:3]) or "no IPv4 frame")
        ev.add(f"underlay ({label})", f"{b.name if label == 'there' else a.name}", sent, seen,
               hit is not None, f"{s} > {d} as the only IP header", kind=PACKET)
    ev.add("underlay", "both nodes", sent, f"{len(encapsulated)} encapsulated frames"
           + (f": {encapsulated[0]['line']}" if encapsulated else ""), not encapsulated,
           "no IPIP, GRE, VXLAN or flannel UDP frame", kind=PACKET)
    return f"{a.name} -> {b.name}: pod addresses on the wire, no encapsulation"


def _expected_sessions(view: LabView, node) -> list[tuple[str, str]]:
    from ...plan.bird import peers
    return [(name, peer.name) for name, peer, _, _ in peers(view.cluster, node)]


@check("bgp-sessions",
       claim="Every node's BIRD has its BGP sessions Established: with every other node (the "
             "node-to-node mesh) or, with route reflectors, between each node and every reflector.",
       source=f"{DOC003} §5 (小规模部署可以直接互联,大规模下可通过指定的BGP route reflector来完成)",
       needs="the calico backend and two or more nodes",
       applies=lambda view: _calico(view) and len(view.cluster.nodes) > 1, evidence=STATE)
def bgp_sessions(view: LabView, ev: Evidence) -> str:
    from ...runtime import bird
    total = 0
    for node in view.cluster.nodes:
        try:
            table = bird.protocols(view.name, node.name)
            error = ""
        except Exception as exc:        # a stopped BIRD: every session of the node fails
            table, error = {}, str(exc)
        for name, peer in _expected_sessions(view, node):
            row = table.get(name)
            seen = error or (f"{row['state']} {row['info']}".strip() if row else "no such protocol")
            ev.read(f"node {node.name} (birdc show protocols)", f"{name} (node {peer})",
                    "BIRD control socket", seen, bool(row) and row["info"].startswith("Established"),
                    "up Established")
            total += 1
    mode = "route reflectors " + ", ".join(view.cluster.config.calico.route_reflectors) \
        if view.cluster.config.calico.route_reflectors else "full mesh"
    return f"{total} BGP sessions Established ({mode})"


def _kernel_routes(ns: str) -> dict[str, dict]:
    """The node's main table: {dst/len: {proto, type, via, dev}}."""
    out = {}
    with netns.open_netlink(ns) as ipr:
        links = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for r in ipr.get_routes(family=socket.AF_INET, table=254):
            dst = f"{r.get_attr('RTA_DST') or '0.0.0.0'}/{r['dst_len']}"
            out[dst] = {"proto": r["proto"], "type": r["type"], "via": r.get_attr("RTA_GATEWAY") or "",
                        "dev": links.get(r.get_attr("RTA_OIF"), "")}
    return out


@check("bgp-routes",
       claim="Each node knows every other node's IPAM blocks as routes learned from BGP (proto bird, "
             "via that node's address on the underlay), not configured by hand, and holds a "
             "blackhole route for each of its own blocks.",
       source=f"{DOC003} §5 (每一台虚拟路由通过BGP协议传播可达信息(路由)到剩余数据中心)",
       needs="the calico backend and two or more nodes",
       applies=lambda view: _calico(view) and len(view.cluster.nodes) > 1, evidence=STATE)
def bgp_routes(view: LabView, ev: Evidence) -> str:
    ipam = view.cluster.ipam
    count = 0
    for node in view.cluster.nodes:
        routes = _kernel_routes(node.netns)
        for other in view.cluster.nodes:
            for block in ipam.blocks_of(other.name):
                r = routes.get(block)
                if other is node:
                    if block.endswith("/32"):
                        continue        # a /32 block is its pod's own route: no blackhole
                    seen = (f"type {r['type']} proto {r['proto']}" if r else "no route")
                    ev.read(f"node {node.name}", f"{block} (own block)", "netlink: main table", seen,
                            bool(r) and r["type"] == 6 and r["proto"] == RTPROT_BIRD,
                            f"blackhole proto bird ({RTPROT_BIRD})")
                    continue
                seen = (f"via {r['via']} dev {r['dev']} proto {r['proto']}" if r else "no route")
                ev.read(f"node {node.name}", f"{block} (node {other.name}'s block)", "netlink: main table",
                        seen, bool(r) and r["proto"] == RTPROT_BIRD and r["via"] == other.internal_ip,
                        f"via {other.internal_ip} proto bird ({RTPROT_BIRD})")
                count += 1
    return f"{count} remote blocks learned over BGP on {len(view.cluster.nodes)} nodes"


# ---------------------------------------------------------------------- NetworkPolicy

POLICY_TIMEOUT = 1.0
POLICY_PAIRS_MAX = 400
POLICY_PARALLEL = 8


def _policy_applies(view: LabView) -> bool:
    return (view.cluster.config.calico_pods and bool(view.cluster.policies)
            and any(view.tcp_ports(p) for p in view.pods))


def policy_targets(view: LabView) -> list[tuple[Any, Any, str, int, Any]]:
    """(source pod, destination pod or None, destination ip, port, verdict) for every pod to
    every declared TCP port of every other pod, and, when an egress policy exists, every pod to
    the internet host's web server (ipBlock egress rules are about such places)."""
    from ...model.netpol import decide
    from ...plan.network import internet_host_ip
    cluster = view.cluster
    out = []
    for dst in view.pods:
        for port in view.tcp_ports(dst):
            for src in view.pods:
                if src is not dst:
                    out.append((src, dst, dst.pod_ip, port,
                                decide(cluster, src.pod_ip, src, dst.pod_ip, dst, port, "TCP")))
    if any("Egress" in p.types for p in cluster.policies.values()):
        web = internet_host_ip(cluster)
        for src in view.pods:
            out.append((src, None, web, 80, decide(cluster, src.pod_ip, src, web, None, 80, "TCP")))
    return out


@check("policy",
       claim="NetworkPolicy is enforced as Calico's Felix enforces it: a pod that a policy selects "
             "accepts (sends) only what the union of its policies allows, by pod and namespace "
             "selectors, ipBlocks and ports; every other connection gets no answer at all (Felix "
             "drops the SYN: a timeout, neither a reset nor an ICMP error), and pods no policy "
             "selects are open.",
       source=f"{DOC003} §5 (基于iptables还提供了丰富而灵活的网络Policy,保证通过各个节点上的ACLs来提供Workload的多租户隔离)",
       needs="the calico backend or Canal (spec.networkPolicy: calico), a NetworkPolicy and a pod "
             "with a TCP port",
       applies=_policy_applies, evidence=SOCKET)
def policy(view: LabView, ev: Evidence) -> str:
    from concurrent.futures import ThreadPoolExecutor
    targets = policy_targets(view)
    if len(targets) > POLICY_PAIRS_MAX:
        ev.note(f"{len(targets) - POLICY_PAIRS_MAX} of {len(targets)} pairs left out")
        targets = targets[:POLICY_PAIRS_MAX]

    def one(t):
        src, dst, ip, port, verdict = t
        return t, sockets.in_netns(view.netns(src), sockets.attempt_tcp, ip, port, POLICY_TIMEOUT)

    allowed = denied = 0
    with ThreadPoolExecutor(max_workers=POLICY_PARALLEL) as pool:
        for (src, dst, ip, port, verdict), out in pool.map(one, targets):
            where = f"{ip}:{port} ({dst.meta.key if dst is not None else 'internet'})"
            if verdict.allowed:
                allowed += 1
                ev.add(pod_label(src), where, "TCP connect", out.seen,
                       out.ok or out.seen == "connection refused", f"an answer ({verdict.why})")
            else:
                denied += 1
                ev.add(pod_label(src), where, "TCP connect", out.seen,
                       not out.ok and out.seen.startswith("no answer"),
                       f"no answer: dropped ({verdict.why})")
    return f"{allowed} allowed connections answered, {denied} denied ones dropped"
