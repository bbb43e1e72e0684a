"""`netlab trace SRC DST`: follow one packet through the lab's actual state, then send it.

The walk asks the kernels, namespace by namespace: the source's route (`ip route get`
through netlink), the node's nat PREROUTING, filter FORWARD and nat POSTROUTING rules
(evaluated by netfilter.walk over the live rules), the node's route for the translated
address, and for the overlay the neighbour and FDB entries that give the VXLAN outer
header (or, with the udp backend, flannel0's carrier and flanneld's subnet table). Where kube-proxy chooses at random the walk forks, one branch per endpoint. Each
delivered packet's answer is walked back too (routes and overlay only: conntrack, not the
rules, handles replies), since a request that arrives but cannot be answered is a failed
connection. Then one real connection goes out, and the rules whose packet counters moved
show which branch the kernel took; the trace is confirmed when the real packet fared as
that branch says.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from typing import Optional

from ..model import names
from ..model.cluster import Node
from ..model.errors import InvalidError, NotFoundError
from ..model.objects import Pod
from ..plan import network as netplan
from . import rules, sockets
from .lab import LabView
from .netfilter import Packet, Where, walk
from .nsview import Namespace, Route

MAX_NODE_HOPS = 6
BUILTIN_CHAINS = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")


@dataclass(frozen=True)
class Hop:
    where: str
    what: str
    detail: tuple[str, ...] = ()


@dataclass
class Branch:
    chance: float
    hops: list[Hop]
    end: str
    outcome: str                  # delivered | rejected | dropped
    hits: list[tuple[str, rules.Rule]] = field(default_factory=list)   # (node, rule) on the way
    pod: Optional[str] = None     # the pod it reaches, and on which port
    port: int = 0
    packet: Optional[Packet] = None   # as it arrives, when it arrives
    at: str = ""                  # the namespace it arrives in
    reply: list[Hop] = field(default_factory=list)
    reply_end: str = ""


@dataclass
class Confirmation:
    sent: str
    seen: str
    outcome: str                  # delivered | rejected | dropped, as the probe saw it
    moved: list[str]
    taken: Optional[int]          # index of the branch the counters point at


@dataclass
class TraceResult:
    source: str
    target: str
    packet: Packet
    branches: list[Branch]
    probe: Optional[Confirmation] = None

    @property
    def confirmed(self) -> bool:
        """The real packet did what the walk said (the branch it took, or one of them)."""
        if self.probe is None:
            return False
        taken = [self.branches[self.probe.taken]] if self.probe.taken is not None else self.branches
        return any(b.outcome == self.probe.outcome for b in taken)

    def to_json(self) -> dict:
        return {"source": self.source, "target": self.target, "packet": vars(self.packet),
                "branches": [{"chance": round(b.chance, 4), "end": b.end, "outcome": b.outcome,
                              "hops": [vars(h) for h in b.hops], "reply": [vars(h) for h in b.reply],
                              "reply_end": b.reply_end} for b in self.branches],
                "probe": vars(self.probe) if self.probe else None, "confirmed": self.confirmed}


# ---------------------------------------------------------------------- what SRC and DST mean


@dataclass
class Source:
    label: str
    netns: str
    ip: str
    pod: Optional[Pod] = None


@dataclass
class Target:
    label: str
    ip: str
    port: int
    proto: str = "tcp"
    internet: bool = False


def _find_pod(view: LabView, text: str, namespace: str) -> Optional[Pod]:
    key = text if "/" in text else f"{namespace}/{text}"
    return view.cluster.pods.get(key)


def resolve_source(view: LabView, text: str, namespace: str) -> Source:
    if text == "client":
        return Source(f"client {view.client_ip} (outside the cluster)", view.client_netns, view.client_ip)
    pod = _find_pod(view, text.removeprefix("pod/"), namespace)
    if pod is None:
        raise NotFoundError(f'no pod "{text}" (a source is a pod name, NAMESPACE/NAME or "client")')
    return Source(f"pod {pod.meta.key} ({pod.pod_ip})", view.netns(pod), pod.pod_ip, pod)


def _split_port(text: str) -> tuple[str, Optional[int]]:
    host, sep, port = text.rpartition(":")
    return (host, int(port)) if sep and port.isdigit() else (text, None)


def resolve_target(view: LabView, text: str, namespace: str) -> Target:
    host, port = _split_port(text)
    services = {s.meta.key: s for s in view.services}
    try:
        ipaddress.IPv4Address(host)
        is_ip = True
    except ValueError:
        is_ip = False
    if not is_ip:
        kind, _, name = host.rpartition("/") if host.startswith(("svc/", "pod/")) else ("", "", host)
        key = name if "/" in name else f"{namespace}/{name}"
        svc = services.get(key) if kind != "pod" else None
        if svc is None:
            pod = _find_pod(view, name, namespace) if kind != "svc" else None
            if pod is None:
                raise NotFoundError(f'no service or pod "{host}" in namespace "{namespace}"')
            host = pod.pod_ip
        else:
            host = svc.cluster_ip
    for pod in view.pods:
        if pod.pod_ip == host:
            ports = view.tcp_ports(pod)
            if port is None and not ports:
                raise InvalidError("the pod declares no TCP port: give one as POD:PORT", value=text)
            return Target(f"pod {pod.meta.key}", host, port or ports[0])
    for svc in services.values():
        for p in svc.ports:
            chosen = port is None or p.port == port
            if svc.cluster_ip == host and chosen:
                return Target(f"service {svc.meta.key} (ClusterIP)", host, p.port, p.protocol.lower())
            if svc.load_balancer_ip == host and chosen:
                return Target(f"service {svc.meta.key} (load balancer)", host, p.port, p.protocol.lower())
    for node in view.cluster.nodes:
        if node.internal_ip == host:
            if port is None:
                raise InvalidError("a node address needs a port (NODE_IP:NODE_PORT)", value=text)
            svc = next((f"service {s.meta.key}" for s in services.values() for p in s.ports
                        if p.node_port == port), "no NodePort service")
            return Target(f"node {node.name} port {port} ({svc})", host, port)
    internet = ipaddress.ip_address(host) in ipaddress.ip_network(view.cluster.config.internet_cidr)
    return Target("the internet host" if internet else "an address outside the lab", host, port or 80,
                  internet=internet)


# ---------------------------------------------------------------------- the kernels' answers


# ---------------------------------------------------------------------- the walk


class Walker:
    """Walks one packet forward. With reply=True it walks an answer back instead: replies
    belong to a connection conntrack already knows, so no nat or filter rule is evaluated
    for them (conntrack itself reverses the translations where they were made)."""

    def __init__(self, view: LabView, spaces: dict[str, Namespace], reply: bool = False):
        self.view = view
        self.nodes = {n.internal_ip: n for n in view.cluster.nodes}
        self.routers = {netplan.router_ip(view.cluster): netplan.UNDERLAY_BRIDGE,
                        netplan.internet_router_ip(view.cluster): netplan.INTERNET_UPLINK}
        self.spaces = spaces
        self.reply = reply

    @property
    def calico(self) -> bool:
        """Pods wired by Calico's CNI plugin and policed by Felix (backend calico or Canal)."""
        return self.view.cluster.config.calico_pods

    def ns(self, name: str) -> Namespace:
        if name not in self.spaces:
            self.spaces[name] = Namespace(name)
        return self.spaces[name]

    def delivered(self, chance: float, hops: list[Hop], end: str, hits: list, netns: str, pkt: Packet,
                  pod: Optional[Pod] = None) -> list[Branch]:
        return [Branch(chance, hops, end, "delivered", hits, pod.meta.key if pod else None, pkt.dport,
                       packet=pkt, at=netns)]

    def start(self, netns_name: str, where: str, pod: Optional[Pod], pkt: Packet) -> list[Branch]:
        route = self.ns(netns_name).route(pkt.dst)
        hops = [Hop(where, f"route get {pkt.dst}: {route}")]
        if route.kind != "unicast":
            return [Branch(1.0, hops, f"not sent: {route}", "dropped")]
        if pod is not None and self.calico:
            node = self.view.node_of(pod)
            veth = names.host_veth(pod.meta.namespace, pod.meta.name, calico=True)
            hops.append(Hop(where, f"eth0 is a veth: its peer {veth} on {node.name} answers ARP for "
                                   f"{netplan.CALICO_GATEWAY} (proxy_arp), so the packet enters {node.name}"))
            return self.at_node(node, pkt, veth, hops, 1.0, [], 0)
        if pod is not None:
            node = self.view.node_of(pod)
            veth = names.host_veth(pod.meta.namespace, pod.meta.name)
            hops.append(Hop(where, f"eth0 is a veth: its peer {veth} is a port of {node.name}'s {netplan.POD_BRIDGE}"))
            return self.at_node(node, pkt, netplan.POD_BRIDGE, hops, 1.0, [], 0)
        return self.on_underlay(route.via or pkt.dst, pkt, hops, 1.0, [], 0)

    def on_underlay(self, next_hop: str, pkt: Packet, hops: list[Hop], chance: float,
                    hits: list, depth: int) -> list[Branch]:
        """A packet handed to next_hop on the underlay: a node, the outside client, or the router."""
        if next_hop in self.nodes:
            node = self.nodes[next_hop]
            return self.at_node(node, pkt, "eth0", hops + [Hop("underlay", f"br0 carries it to node {node.name} ({next_hop})")],
                                chance, hits, depth + 1)
        if next_hop == self.view.client_ip:
            return self.delivered(chance, hops, f"{'back at' if self.reply else 'delivered to'} the outside client "
                                  f"{next_hop}", hits, self.view.client_netns, pkt)
        if next_hop not in self.routers:
            return [Branch(chance, hops, f"dropped: nothing answers for {next_hop} on the underlay", "dropped", hits)]
        route = self.ns(self.view.underlay_netns).route(pkt.dst, pkt.src, self.routers[next_hop])
        hops = hops + [Hop("underlay router", f"route get {pkt.dst} from {pkt.src} iif {self.routers[next_hop]}: {route}")]
        if route.kind != "unicast":
            return [Branch(chance, hops, f"dropped by the underlay router: {route}", "dropped", hits)]
        if route.dev == netplan.INTERNET_UPLINK:
            if pkt.dst == self.view.internet_ip:
                return self.delivered(chance, hops, f"delivered to the internet host {pkt.dst}:{pkt.dport}, "
                                      f"from {pkt.src}", hits, self.view.internet_netns, pkt)
            return [Branch(chance, hops, f"dropped: no host at {pkt.dst} in the simulated internet", "dropped", hits)]
        if depth > MAX_NODE_HOPS:
            return [Branch(chance, hops, "dropped: a routing loop", "dropped", hits)]
        return self.on_underlay(route.via or pkt.dst, pkt, hops, chance, hits, depth + 1)

    def at_node(self, node: Node, pkt: Packet, iif: str, hops: list[Hop], chance: float,
                hits: list, depth: int) -> list[Branch]:
        space = self.ns(node.netns)
        here = f"node {node.name}"
        if self.reply:
            return self.route_node(node, pkt, iif, hops + [Hop(here, f"in on {iif}")], chance, hits, depth)
        branches = []
        for pre in walk(space.tables["nat"], "PREROUTING", pkt, Where(space.local, iif=iif)):
            p = pre.packet
            seen = hits + [(node.name, r) for r in pre.hit]
            if pre.verdict == "REDIRECT":
                h = hops + [Hop(here, f"in on {iif}; nat PREROUTING: REDIRECT to port {p.dport} of {node.name}",
                                tuple(pre.lines))]
                branches.append(Branch(chance * pre.chance, h, f"handed to kube-proxy on {node.name} (userspace "
                                       f"mode), listening on port {p.dport}; it opens its own connection to an "
                                       f"endpoint", "delivered", seen))
                continue
            what = (f"nat PREROUTING: DNAT {pkt.dst}:{pkt.dport} -> {p.dst}:{p.dport}" if pre.verdict == "DNAT"
                    else "nat PREROUTING: no translation")
            h = hops + [Hop(here, f"in on {iif}; {what}", tuple(pre.lines))]
            branches += self.route_node(node, p, iif, h, chance * pre.chance, seen, depth)
        return branches

    def route_node(self, node: Node, pkt: Packet, iif: str, hops: list[Hop], chance: float,
                   hits: list, depth: int) -> list[Branch]:
        space = self.ns(node.netns)
        here = f"node {node.name}"
        route = space.route(pkt.dst, pkt.src, iif)
        hops = hops + [Hop(here, f"route get {pkt.dst} from {pkt.src} iif {iif}: {route}")]
        if route.kind == "local":
            end = (f"back at node {node.name}, whose conntrack reverses its translation" if self.reply
                   else f"delivered to node {node.name} itself (nothing translated it)")
            return self.delivered(chance, hops, end, hits, node.netns, pkt)
        if route.kind != "unicast":
            return [Branch(chance, hops, f"dropped on {node.name}: {route}", "dropped", hits)]
        if self.reply:
            return self.leave_node(node, pkt, route, hops, chance, hits, depth)
        where = Where(space.local, iif=iif, oif=route.dev, sets=space.ipsets if self.calico else None)
        branches = []
        for fwd in walk(space.tables["filter"], "FORWARD", pkt, where):
            h = hops + [Hop(here, f"filter FORWARD: {fwd.verdict.lower()}", tuple(fwd.lines))]
            seen = hits + [(node.name, r) for r in fwd.hit]
            if fwd.verdict in ("DROP", "REJECT"):
                branches.append(Branch(chance * fwd.chance, h, _drop_end(node, fwd),
                                       "rejected" if fwd.verdict == "REJECT" else "dropped", seen))
                continue
            for post in walk(space.tables["nat"], "POSTROUTING", fwd.packet, where):
                p = post.packet
                if p.masquerade:
                    p = replace(p, src=_masquerade_source(space, route.dev, p.src), masquerade=False)
                    owner = route.dev if route.dev in space.addresses else "eth0"
                    what = f"nat POSTROUTING: MASQUERADE {pkt.src} -> {p.src} ({owner}'s address)"
                else:
                    what = "nat POSTROUTING: no translation"
                h2 = h + [Hop(here, what, tuple(post.lines))]
                branches += self.leave_node(node, p, route, h2, chance * fwd.chance * post.chance,
                                            seen + [(node.name, r) for r in post.hit], depth)
        return branches

    def leave_node(self, node: Node, pkt: Packet, route: Route, hops: list[Hop], chance: float,
                   hits: list, depth: int) -> list[Branch]:
        here = f"node {node.name}"
        # Marks and conntrack state stay on this node; the next one starts afresh.
        pkt = replace(pkt, mark=0, dnat=False)
        if self.calico and route.dev.startswith("cali"):
            pod = self.view.pod_by_ip(pkt.dst)
            if pod is None:
                return [Branch(chance, hops, f"dropped: no pod has {pkt.dst} on {node.name}", "dropped", hits)]
            hops = hops + [Hop(here, f"the pod's /32 route sends it out of {route.dev} to pod {pod.meta.key}")]
            end = (f"back at pod {pod.meta.key}" if self.reply
                   else f"delivered to pod {pod.meta.key} at {pkt.dst}:{pkt.dport}, from {pkt.src}")
            return self.delivered(chance, hops, end, hits, self.view.netns(pod), pkt, pod)
        if route.dev == netplan.POD_BRIDGE:
            pod = self.view.pod_by_ip(pkt.dst)
            if pod is None:
                return [Branch(chance, hops, f"dropped: no pod has {pkt.dst} on {node.name}", "dropped", hits)]
            veth = names.host_veth(pod.meta.namespace, pod.meta.name)
            hops = hops + [Hop(here, f"cni0 forwards it out of {veth} to pod {pod.meta.key}")]
            end = (f"back at pod {pod.meta.key}" if self.reply
                   else f"delivered to pod {pod.meta.key} at {pkt.dst}:{pkt.dport}, from {pkt.src}")
            return self.delivered(chance, hops, end, hits, self.view.netns(pod), pkt, pod)
        if depth > MAX_NODE_HOPS:
            return [Branch(chance, hops, "dropped: a routing loop", "dropped", hits)]
        if route.dev == netplan.VXLAN_DEV:
            return self.encapsulate(node, pkt, route, hops, chance, hits, depth)
        if route.dev == netplan.TUN_DEV:
            return self.through_flanneld(node, pkt, hops, chance, hits, depth)
        return self.on_underlay(route.via or pkt.dst, pkt, hops, chance, hits, depth)

    def encapsulate(self, node: Node, pkt: Packet, route: Route, hops: list[Hop], chance: float,
                    hits: list, depth: int) -> list[Branch]:
        space = self.ns(node.netns)
        here = f"node {node.name}"
        dev = netplan.VXLAN_DEV
        mac = space.neighbour(dev, route.via)
        if mac is None:
            return [Branch(chance, hops, f"dropped: no neighbour entry for {route.via} on {dev}", "dropped", hits)]
        remote = space.fdb(dev, mac)
        if remote is None:
            return [Branch(chance, hops + [Hop(here, f"neigh {route.via} lladdr {mac} on {dev}")],
                           f"dropped: no FDB entry for {mac} on {dev} (no VXLAN destination)", "dropped", hits)]
        info = space.vxlan(dev)
        outer = (f"VXLAN: outer {info.get('IFLA_VXLAN_LOCAL')} > {remote} UDP {info.get('IFLA_VXLAN_PORT')} "
                 f"VNI {info.get('IFLA_VXLAN_ID')}, inner {pkt.src} > {pkt.dst}" + (f":{pkt.dport}" if pkt.dport else ""))
        why = (f"neigh {route.via} lladdr {mac} on {dev}", f"fdb {mac} dst {remote} on {dev}")
        hops = hops + [Hop(here, outer, why)]
        if remote not in self.nodes:
            return [Branch(chance, hops, f"dropped: no node at {remote}", "dropped", hits)]
        nxt = self.nodes[remote]
        hops = hops + [Hop("underlay", f"br0 carries the UDP datagram to node {nxt.name} ({remote}), "
                                       f"its {dev} decapsulates it")]
        return self.at_node(nxt, pkt, dev, hops, chance, hits, depth + 1)


    def flanneld(self, node: Node) -> tuple[bool, str]:
        """(does a flanneld hold node's flannel0, how it is known): the TUN's carrier is on
        exactly while a process has it open; the agent's status names the process."""
        space = self.ns(node.netns)
        dev = netplan.TUN_DEV
        if dev not in space.index:
            return False, f"{node.name} has no {dev}"
        carrier = space.ipr.get_links(space.index[dev])[0].get_attr("IFLA_CARRIER")
        from .. import state
        run = ((state.read_json(state.status_file(self.view.name)) or {}).get("daemons") or {}).get(
            f"flanneld/{node.name}") or {}
        who = f"flanneld pid {run['pid']}" if run.get("pid") else f"flanneld {run.get('state', 'unknown').lower()}"
        return bool(carrier), f"{dev} carrier {'on' if carrier else 'off'} ({who})"

    def through_flanneld(self, node: Node, pkt: Packet, hops: list[Hop], chance: float,
                         hits: list, depth: int) -> list[Branch]:
        """flannel's udp backend: the TUN hands the packet to flanneld, which sends it whole as
        one UDP datagram to the node its subnet table names; that node's flanneld writes it
        into its own flannel0."""
        from ..runtime.flanneld import parse_table, subnets_file
        here = f"node {node.name}"
        dev = netplan.TUN_DEV
        up, why = self.flanneld(node)
        hops = hops + [Hop(here, f"into the TUN {dev}: {why}")]
        if not up:
            return [Branch(chance, hops, f"dropped: no flanneld reads {dev} on {node.name}, the kernel "
                                         f"discards what the route sends there", "dropped", hits)]
        try:
            shift, table = parse_table(subnets_file(self.view.name).read_text())
        except OSError as exc:
            return [Branch(chance, hops, f"dropped: flanneld's subnet table is unreadable ({exc})", "dropped", hits)]
        peer = table.get(int(ipaddress.IPv4Address(pkt.dst)) >> shift) if shift else None
        subnet = f"{ipaddress.IPv4Address((int(ipaddress.IPv4Address(pkt.dst)) >> shift) << shift)}/{32 - shift}"
        if peer is None:
            return [Branch(chance, hops + [Hop(here, f"flanneld: no subnet in its table holds {pkt.dst}")],
                           f"dropped by flanneld on {node.name}: unknown subnet", "dropped", hits)]
        remote, port = peer
        what = (f"flanneld reads it and sends it whole as UDP {node.internal_ip}:{port} > {remote}:{port}, "
                f"payload {pkt.src} > {pkt.dst}" + (f":{pkt.dport}" if pkt.dport else ""))
        hops = hops + [Hop(here, what, (f"table {subnets_file(self.view.name)}: {subnet} -> {remote}",))]
        if remote not in self.nodes:
            return [Branch(chance, hops, f"dropped: no node at {remote}", "dropped", hits)]
        nxt = self.nodes[remote]
        up, why = self.flanneld(nxt)
        hops = hops + [Hop("underlay", f"br0 carries the datagram to node {nxt.name} ({remote}) port {port}")]
        if not up:
            return [Branch(chance, hops + [Hop(f"node {nxt.name}", f"{why}")],
                           f"dropped: nobody on {nxt.name} reads UDP {port} (its flanneld is not running)",
                           "dropped", hits)]
        hops = hops + [Hop(f"node {nxt.name}", f"flanneld receives it and writes the inner packet into {dev}; "
                                               f"{why}")]
        return self.at_node(nxt, pkt, dev, hops, chance, hits, depth + 1)


def _masquerade_source(space: Namespace, dev: str, src: str) -> str:
    """The address MASQUERADE picks: the outgoing device's own; a device with none (a cali veth:
    a pod reaching itself through its service with calico or Canal) has the kernel take the
    first universe-scope address of the namespace, the node's eth0 one."""
    return space.addresses.get(dev) or space.addresses.get("eth0", src)


def _drop_end(node: Node, fwd) -> str:
    """Why the filter table stopped the packet; with calico or Canal, the policy rule that dropped it."""
    verdict = f"{fwd.verdict.lower()}ed by {node.name}'s filter table"
    rule = fwd.hit[-1] if fwd.hit else None
    if rule is None or not rule.chain.startswith(("cali-tw-", "cali-fw-", "cali-from-", "cali-to-")):
        return verdict
    args = list(rule.args)
    comment = args[args.index("--comment") + 1] if "--comment" in args else ""
    what = "ingress" if rule.chain.startswith("cali-tw-") else "egress"
    return (f"dropped by NetworkPolicy on {node.name}: {rule.chain} rule {rule.index} "
            f"\"{comment}\" (the pod's {what})" if comment else f"{verdict} ({rule.chain} rule {rule.index})")


def add_replies(view: LabView, spaces: dict[str, Namespace], branches: list[Branch]) -> None:
    """Walk each delivered packet's answer back to its (translated) source; a branch whose
    answer cannot get back is a connection that never completes."""
    back = Walker(view, spaces, reply=True)
    pods = {view.netns(p): p for p in view.pods}
    for b in branches:
        if b.packet is None:
            continue
        answer = Packet(b.packet.dst, b.packet.src, b.packet.proto)
        where = f"pod {pods[b.at].meta.key}" if b.at in pods else b.at.split(".", 1)[-1]
        found = back.start(b.at, where, pods.get(b.at), answer)
        b.reply, b.reply_end = found[0].hops, found[0].end
        if found[0].outcome != "delivered":
            b.outcome = "dropped"


# ---------------------------------------------------------------------- the real packet


def _read_all(view: LabView) -> dict[str, dict[str, rules.Table]]:
    return {n.name: rules.read(n.netns) for n in view.cluster.nodes}


def _send(view: LabView, source: Source, target: Target, branches: list[Branch]) -> tuple[str, sockets.Outcome]:
    """One real exchange: GET /hostname when every pod it may reach runs netexec there (the
    answer names the pod), a listener's report for the internet host, a TCP connect otherwise."""
    from ..model import internet
    if target.internet and (target.ip, target.port) == (internet.host_ip(view.cluster), internet.WEB_PORT):
        # The internet host's own web server holds this port; its /clientip reports the source.
        return ("GET /clientip; the internet host's web server reports the source it saw",
                sockets.in_netns(source.netns, sockets.attempt_http, target.ip, target.port, "/clientip"))
    if target.internet:
        with sockets.Listener(view.internet_netns, target.ip, target.port, limit=1) as server:
            return ("TCP connect; a listener on the internet host reports the source it saw",
                    sockets.in_netns(source.netns, sockets.ask_listener, target.ip, server.port))
    if target.proto == "udp":
        return "UDP datagram 'hostname'", sockets.in_netns(source.netns, sockets.attempt_udp, target.ip,
                                                           target.port, b"hostname")
    reached = [b for b in branches if b.pod]
    if reached and all(view.serves_netexec(view.cluster.pods[b.pod], b.port) for b in reached):
        return "GET /hostname", sockets.in_netns(source.netns, sockets.attempt_http, target.ip, target.port, "/hostname")
    return "TCP connect", sockets.in_netns(source.netns, sockets.attempt_tcp, target.ip, target.port)


def send_and_compare(view: LabView, source: Source, target: Target, branches: list[Branch]) -> Confirmation:
    before = _read_all(view)
    sent, out = _send(view, source, target, branches)
    after = _read_all(view)
    moved, keys = [], set()
    for node in view.cluster.nodes:
        for rule, n in rules.moved(before[node.name], after[node.name]):
            keys.add((node.name, rule.key))
            # Jumps out of the built-in chains tell nothing the rules of our chains don't.
            if rule.chain not in BUILTIN_CHAINS:
                moved.append(f"{node.name} {rule.table} {rule.chain} #{rule.index} +{n}: {rule.text}")
    outcome = "delivered" if out.ok else "rejected" if out.seen == "connection refused" else "dropped"
    # The branch whose address translations (DNAT, MASQUERADE) all moved is the one taken.
    taken = None
    for i, b in enumerate(branches):
        nat = {(n, r.key) for n, r in b.hits if r.table == "nat" and r.target in ("DNAT", "MASQUERADE", "REDIRECT")}
        if nat and nat <= keys:
            taken = i
    return Confirmation(sent, out.seen, outcome, moved, taken)


def trace(view: LabView, src: str, dst: str, namespace: str = "default", confirm: bool = True) -> TraceResult:
    source = resolve_source(view, src, namespace)
    target = resolve_target(view, dst, namespace)
    pkt = Packet(source.ip, target.ip, target.proto, target.port)
    spaces: dict[str, Namespace] = {}
    try:
        branches = Walker(view, spaces).start(source.netns, source.label.split(" (")[0], source.pod, pkt)
        add_replies(view, spaces, branches)
    finally:
        for space in spaces.values():
            space.close()
    result = TraceResult(source.label, f"{target.ip}:{target.port}/{target.proto} ({target.label})", pkt, branches)
    if confirm:
        result.probe = send_and_compare(view, source, target, branches)
    return result


def _common_prefix(branches: list[Branch]) -> int:
    n = min(len(b.hops) for b in branches)
    for i in range(n):
        if any(b.hops[i] != branches[0].hops[i] for b in branches):
            return i
    return n


def render(console, r: TraceResult) -> None:
    from rich.text import Text

    def out(text: str, style: str = "") -> None:
        console.print(Text(text, style=style), soft_wrap=True)
    out(f"trace {r.source} -> {r.target}", "bold")
    shared = _common_prefix(r.branches)
    step = [0]

    def hops(items: list[Hop], indent: str) -> None:
        for hop in items:
            step[0] += 1
            out(f"{indent}{step[0]:>2}  {hop.where:<28} {hop.what}")
            for line in hop.detail:
                out(f"{indent}    {'':<28} {line.strip()}", "dim")

    hops(r.branches[0].hops[:shared], "")
    for i, b in enumerate(r.branches):
        indent = ""
        if len(r.branches) > 1:
            taken = r.probe is not None and r.probe.taken == i
            out(f"branch {i + 1}/{len(r.branches)}, chance {b.chance:.2f}" + ("  <- the real packet went here" if taken else ""),
                "bold cyan" if taken else "bold")
            indent = "   "
            step[0] = shared
        hops(b.hops[shared:], indent)
        out(f"{indent}  => {b.end}", "green" if b.packet is not None else "red")
        if b.reply:
            out(f"{indent}  the answer, {b.packet.dst} -> {b.packet.src}:", "bold")
            hops(b.reply, indent + "  ")
            out(f"{indent}  <= {b.reply_end}", "green" if b.outcome == "delivered" else "red")
    if r.probe is None:
        return
    p = r.probe
    out(f"probe from {r.source}: {p.sent}: {p.seen}", "bold")
    out("counters that moved:" if p.moved else "no rule counter moved", "")
    for line in p.moved:
        out(f"  {line}", "")
    if r.confirmed:
        out("confirmed: the real packet did what the walk says", "bold green")
    else:
        out(f"NOT confirmed: the probe saw {p.outcome}, the walk said "
            f"{' or '.join(sorted({b.outcome for b in r.branches}))}", "bold red")
