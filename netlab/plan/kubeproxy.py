"""kube-proxy's iptables mode for one node, rendered as iptables-restore text.

The text is what kube-proxy (v1.28-v1.29, iptables mode, default flags) writes to `iptables-restore --noflush` on each sync, argument for argument, so a learner can
hold it next to a real node. iptables-save prints the same rules normalised: `-d 10.96.0.3`
becomes `-d 10.96.0.3/32`, `-p tcp` moves before the matches, `--or-mark 0x4000` reads
`--set-xmark 0x4000/0x4000`, and the probability 0.3333333333 reads 0.33333333349 (the
kernel keeps it as a 32-bit fraction).

Two things kube-proxy does outside the restore are rendered apart: the jumps from the
built-in chains (`render_jumps`), and the list of chains a node owns (`node_chains`), which
the next sync passes back as `previous_chains` so vanished chains are flushed and deleted.
Flannel's egress masquerade (FLANNEL-POSTRTG) rides in the same nat table because the lab's
pods reach the simulated internet SNAT'd to their node's address.

Where kube-proxy is not deterministic the renderer picks an order: services by "ns/name" (Go
map order in kube-proxy), endpoints by their "IP:port" text (as kube-proxy's cache sorts
them). Traffic policies follow proxy.CategorizeEndpoints: externalTrafficPolicy Local gets the
KUBE-EXT short-circuit rules and a KUBE-SVL chain of this node's endpoints (DROP "has no local
endpoints" where there are none), internalTrafficPolicy Local sends the ClusterIP to KUBE-SVL,
loadBalancerSourceRanges get a KUBE-FW chain and the KUBE-PROXY-FIREWALL drop, and a
healthCheckNodePort its ACCEPT. Not rendered: topology hints, terminating endpoints, and the
KUBE-PROXY-CANARY chains of its monitor.
"""
from __future__ import annotations

import base64
import hashlib
import ipaddress
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable, Mapping, Optional

from netlab.model.cluster import Cluster, Node
from netlab.model.objects import Service, ServicePort
from netlab.model.services import Endpoint, service_endpoints

MASQ_MARK = "0x4000"
# kube-proxy drops per-endpoint comments above this many endpoints ("large cluster mode").
LARGE_CLUSTER_ENDPOINTS = 1000
# In large cluster mode kube-proxy deletes stale chains at most once per --iptables-sync-period.
SYNC_PERIOD = 30.0
SERVICE_CHAIN_PREFIXES = ("KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SEP-")
FILTER_CHAINS = ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD", "KUBE-NODEPORTS",
                 "KUBE-PROXY-FIREWALL")
NAT_CHAINS = ("KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ")
FLANNEL_CHAIN = "FLANNEL-POSTRTG"
_FLANNEL_COMMENT = ("-m", "comment", "--comment", '"flanneld masq"')

EndpointsByService = Mapping[str, Mapping[str, list[Endpoint]]]

# ---------------------------------------------------------------------- names


def port_proto_hash(service_port_name: str, protocol: str) -> str:
    """kube-proxy's portProtoHash: 16 base32 characters keep chain names under 28 bytes."""
    digest = hashlib.sha256((service_port_name + protocol).encode()).digest()
    # 16 base32 characters are exactly the first 10 bytes; encoding only those is faster.
    return base64.b32encode(digest[:10]).decode()


def service_port_name(svc: Service, port: ServicePort) -> str:
    """ServicePortName.String(): "ns/name:port", or "ns/name" when the port has no name."""
    base = f"{svc.meta.namespace}/{svc.meta.name}"
    return f"{base}:{port.name}" if port.name else base


def svc_chain(service_port_name: str, protocol: str) -> str:
    return "KUBE-SVC-" + port_proto_hash(service_port_name, protocol)


def ext_chain(service_port_name: str, protocol: str) -> str:
    return "KUBE-EXT-" + port_proto_hash(service_port_name, protocol)


def sep_chain(service_port_name: str, protocol: str, endpoint: str) -> str:
    """KUBE-SEP-<hash of name + protocol + "IP:port">: one chain per endpoint of a port."""
    return "KUBE-SEP-" + port_proto_hash(service_port_name, protocol + endpoint)


def is_service_chain(chain: str) -> bool:
    return chain.startswith(SERVICE_CHAIN_PREFIXES)


def probability(n: int) -> str:
    """The chance the i-th of n remaining endpoints is picked, printed as kube-proxy does."""
    return f"{1.0 / n:0.10f}"


# ---------------------------------------------------------------------- jumps


@dataclass(frozen=True)
class Jump:
    """A rule in a built-in chain that hands packets to one of our chains."""

    table: str
    chain: str
    target: str
    args: tuple[str, ...] = ()
    prepend: bool = True        # kube-proxy inserts at the top; flannel appends

    @property
    def spec(self) -> str:
        """The rule after `-A chain`, in the order iptables-save prints it."""
        return " ".join(self.args + ("-j", self.target))


def _kube_jump(table: str, chain: str, target: str, comment: str, new_only: bool = False) -> Jump:
    args = ("-m", "conntrack", "--ctstate", "NEW") if new_only else ()
    return Jump(table, chain, target, args + ("-m", "comment", "--comment", f'"{comment}"'))


def render_jumps() -> list[Jump]:
    """kube-proxy's iptablesJumpChains, kubelet's KUBE-FIREWALL jumps and flannel's masq jump."""
    ext, svc, lbfw = ("kubernetes externally-visible service portals", "kubernetes service portals",
                      "kubernetes load balancer firewall")
    return [
        _kube_jump("filter", "INPUT", "KUBE-EXTERNAL-SERVICES", ext, new_only=True),
        _kube_jump("filter", "FORWARD", "KUBE-EXTERNAL-SERVICES", ext, new_only=True),
        _kube_jump("filter", "INPUT", "KUBE-NODEPORTS", "kubernetes health check service ports"),
        _kube_jump("filter", "FORWARD", "KUBE-SERVICES", svc, new_only=True),
        _kube_jump("filter", "OUTPUT", "KUBE-SERVICES", svc, new_only=True),
        _kube_jump("filter", "FORWARD", "KUBE-FORWARD", "kubernetes forwarding rules"),
        _kube_jump("filter", "INPUT", "KUBE-PROXY-FIREWALL", lbfw, new_only=True),
        _kube_jump("filter", "OUTPUT", "KUBE-PROXY-FIREWALL", lbfw, new_only=True),
        _kube_jump("filter", "FORWARD", "KUBE-PROXY-FIREWALL", lbfw, new_only=True),
        _kube_jump("nat", "OUTPUT", "KUBE-SERVICES", svc),
        _kube_jump("nat", "PREROUTING", "KUBE-SERVICES", svc),
        _kube_jump("nat", "POSTROUTING", "KUBE-POSTROUTING", "kubernetes postrouting rules"),
        Jump("filter", "INPUT", "KUBE-FIREWALL"),
        Jump("filter", "OUTPUT", "KUBE-FIREWALL"),
        Jump("nat", "POSTROUTING", FLANNEL_CHAIN, _FLANNEL_COMMENT, prepend=False),
    ]


# ---------------------------------------------------------------------- service ports


@dataclass(frozen=True)
class _Port:
    """One service port as kube-proxy on one node sees it: its name, chains and endpoints,
    split by traffic policy as proxy.CategorizeEndpoints splits them."""

    svc: Service
    port: ServicePort
    name: str
    proto: str
    endpoints: tuple[Endpoint, ...]          # every ready endpoint, in kube-proxy's order
    node: str = ""                           # the node the rules are for (Local policies)

    # Chain names are hashes; compute each once, a sync with thousands of endpoints asks often.
    @cached_property
    def svc_chain(self) -> str:
        return svc_chain(self.name, self.proto)

    @cached_property
    def svl_chain(self) -> str:
        return "KUBE-SVL-" + port_proto_hash(self.name, self.proto)

    @cached_property
    def ext_chain(self) -> str:
        return ext_chain(self.name, self.proto)

    @cached_property
    def fw_chain(self) -> str:
        return "KUBE-FW-" + port_proto_hash(self.name, self.proto)

    @cached_property
    def sep_chains(self) -> tuple[str, ...]:
        return tuple(sep_chain(self.name, self.proto, str(ep)) for ep in self.endpoints)

    @property
    def lb_ips(self) -> list[str]:
        return self.svc.load_balancer_ips

    @property
    def externally_accessible(self) -> bool:
        return bool(self.port.node_port or self.lb_ips or self.svc.external_ips)

    # --- traffic policies (pkg/proxy/service.go, topology.go)

    @property
    def external_local(self) -> bool:
        return self.externally_accessible and self.svc.external_traffic_policy == "Local"

    @property
    def internal_local(self) -> bool:
        return self.svc.internal_policy_local

    @property
    def uses_cluster_endpoints(self) -> bool:
        # Even with external policy Local, Cluster endpoints serve the short-circuit rules.
        return not self.internal_local or self.externally_accessible

    @property
    def uses_local_endpoints(self) -> bool:
        return self.internal_local or self.external_local

    @cached_property
    def cluster_endpoints(self) -> tuple[Endpoint, ...]:
        return self.endpoints if self.uses_cluster_endpoints else ()

    @cached_property
    def local_endpoints(self) -> tuple[Endpoint, ...]:
        if not self.uses_local_endpoints:
            return ()
        return tuple(ep for ep in self.endpoints if ep.node and ep.node == self.node)

    @cached_property
    def reachable(self) -> tuple[tuple[Endpoint, str], ...]:
        """allLocallyReachableEndpoints with their KUBE-SEP chains."""
        keep = {str(ep) for ep in self.cluster_endpoints} | {str(ep) for ep in self.local_endpoints}
        return tuple((ep, sep) for ep, sep in zip(self.endpoints, self.sep_chains) if str(ep) in keep)

    def seps(self, endpoints: tuple[Endpoint, ...]) -> list[tuple[Endpoint, str]]:
        chosen = {str(ep) for ep in endpoints}
        return [(ep, sep) for ep, sep in zip(self.endpoints, self.sep_chains) if str(ep) in chosen]

    @property
    def has_endpoints(self) -> bool:
        return bool(self.endpoints)

    @property
    def has_internal(self) -> bool:
        return self.has_endpoints and (not self.internal_local or bool(self.local_endpoints))

    @property
    def has_external(self) -> bool:
        return self.has_endpoints and (not self.external_local or bool(self.local_endpoints))

    @property
    def internal_chain(self) -> str:
        return self.svl_chain if self.internal_local else self.svc_chain

    @property
    def external_policy_chain(self) -> str:
        return self.svl_chain if self.external_local else self.svc_chain

    @property
    def uses_ext_chain(self) -> bool:
        return self.has_endpoints and self.externally_accessible

    @property
    def uses_fw_chain(self) -> bool:
        return self.has_endpoints and bool(self.lb_ips) and bool(self.svc.source_ranges)

    @property
    def uses_cluster_chain(self) -> bool:
        return bool(self.cluster_endpoints)

    @property
    def uses_local_chain(self) -> bool:
        return bool(self.local_endpoints)

    def match(self, dst: str, dport: int) -> str:
        return f"-m {self.proto} -p {self.proto} -d {dst} --dport {dport}"


def _service_ports(cluster: Cluster, endpoints_by_service: Optional[EndpointsByService],
                   node: str = "") -> list[_Port]:
    ports = []
    for key in sorted(cluster.services):
        svc = cluster.services[key]
        if svc.headless or not svc.cluster_ip:
            continue    # kube-proxy skips services without a ClusterIP (headless, ExternalName)
        if endpoints_by_service is None:
            eps = service_endpoints(cluster, svc)
        else:
            eps = endpoints_by_service.get(key, {})
        for port in svc.ports:
            # kube-proxy's endpoint cache sorts endpoints by their "IP:port" string.
            chosen = tuple(sorted(eps.get(port.name, []), key=str))
            ports.append(_Port(svc, port, service_port_name(svc, port), port.protocol.lower(), chosen, node))
    return ports


# ---------------------------------------------------------------------- rendering


_CAPTURE_CHAINS = ("-A KUBE-SERVICES ", "-A KUBE-EXTERNAL-SERVICES ")   # filter's REJECT/DROP lines


@dataclass
class _Buffers:
    """kube-proxy's four line buffers; chain lines go before rules in each table."""

    filter_chains: list[str] = field(default_factory=list)
    filter_rules: list[str] = field(default_factory=list)
    nat_chains: list[str] = field(default_factory=list)
    nat_rules: list[str] = field(default_factory=list)
    active: set[str] = field(default_factory=set)

    def nat_chain(self, chain: str) -> None:
        self.active.add(chain)
        self.nat_chains.append(f":{chain} - [0:0]")

    def text(self, live: bool = False) -> str:
        """The restore input: filter, then nat, as kube-proxy writes it; live=True for a
        node whose rules are in use, in an order where no new connection to a Service port
        finds neither its DNAT nor its REJECT.

        iptables-legacy commits each table on its own, at its COMMIT. In kube-proxy's order a
        port whose endpoints appear has lost its REJECT before it has its DNAT (nat first
        opens the same gap when they go). A SYN sent in between left the node untranslated,
        and conntrack kept the flow so: its retransmits never reached a pod (a redis replica
        that started with the lab waited out its 60 s timeout). Live, the REJECT and DROP
        lines that will stand are appended first (no chain is declared, so --noflush keeps
        the old lines too), then nat goes in, then filter whole, which drops the extras."""
        filter_table = ["*filter", *self.filter_chains, *self.filter_rules, "COMMIT"]
        nat_table = ["*nat", *self.nat_chains, *self.nat_rules, "COMMIT"]
        if not live:
            return "\n".join([*filter_table, *nat_table, ""])
        standing = [line for line in self.filter_rules if line.startswith(_CAPTURE_CHAINS)
                    and line.endswith(("-j REJECT", "-j DROP"))]
        first = ["*filter", *standing, "COMMIT"] if standing else []
        return "\n".join([*first, *nat_table, *filter_table, ""])


def _write_top_level(b: _Buffers) -> None:
    b.filter_chains += [f":{c} - [0:0]" for c in FILTER_CHAINS]
    for chain in NAT_CHAINS:
        b.nat_chain(chain)
    mark = f"{MASQ_MARK}/{MASQ_MARK}"
    b.nat_rules += [
        f"-A KUBE-POSTROUTING -m mark ! --mark {mark} -j RETURN",
        # Clear the mark so a packet that traverses the stack again is not masqueraded twice.
        f"-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE --random-fully",
        f"-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}",
    ]
    # localhost NodePorts are on by default, so kube-proxy installs kubelet's martian guard.
    b.filter_chains.append(":KUBE-FIREWALL - [0:0]")
    b.filter_rules.append('-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" '
                          "-d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT "
                          "-j DROP")


def _write_capture_rules(b: _Buffers, p: _Port) -> None:
    """KUBE-SERVICES / KUBE-NODEPORTS entries; in filter, REJECT without endpoints and DROP
    without local ones (Local traffic policies), the load-balancer firewall and health checks."""
    if not p.has_endpoints:
        internal_target = external_target = "REJECT"
        internal_comment = external_comment = f'"{p.name} has no endpoints"'
    else:
        internal_target = external_target = "DROP"
        internal_comment = external_comment = f'"{p.name} has no local endpoints"'
    port = p.port.port
    if p.has_internal:
        b.nat_rules.append(f'-A KUBE-SERVICES -m comment --comment "{p.name} cluster IP" '
                           f"{p.match(p.svc.cluster_ip, port)} -j {p.internal_chain}")
    else:
        b.filter_rules.append(f"-A KUBE-SERVICES -m comment --comment {internal_comment} "
                              f"{p.match(p.svc.cluster_ip, port)} -j {internal_target}")
    for ip in p.svc.external_ips:
        if p.has_endpoints:
            b.nat_rules.append(f'-A KUBE-SERVICES -m comment --comment "{p.name} external IP" '
                               f"{p.match(ip, port)} -j {p.ext_chain}")
        if not p.has_external:
            b.filter_rules.append(f"-A KUBE-EXTERNAL-SERVICES -m comment --comment {external_comment} "
                                  f"{p.match(ip, port)} -j {external_target}")
    lb_chain = p.fw_chain if p.uses_fw_chain else p.ext_chain
    for ip in p.lb_ips:
        if p.has_endpoints:
            b.nat_rules.append(f'-A KUBE-SERVICES -m comment --comment "{p.name} loadbalancer IP" '
                               f"{p.match(ip, port)} -j {lb_chain}")
        if p.uses_fw_chain:
            b.filter_rules.append(f'-A KUBE-PROXY-FIREWALL -m comment --comment "{p.name} traffic not accepted '
                                  f'by {p.fw_chain}" {p.match(ip, port)} -j DROP')
    if not p.has_external:
        for ip in p.lb_ips:
            b.filter_rules.append(f"-A KUBE-EXTERNAL-SERVICES -m comment --comment {external_comment} "
                                  f"{p.match(ip, port)} -j {external_target}")
    if p.port.node_port:
        proto_port = f"-m {p.proto} -p {p.proto} --dport {p.port.node_port}"
        if p.has_endpoints:
            b.nat_rules.append(f"-A KUBE-NODEPORTS -m comment --comment {p.name} {proto_port} -j {p.ext_chain}")
        if not p.has_external:
            b.filter_rules.append(f"-A KUBE-EXTERNAL-SERVICES -m comment --comment {external_comment} "
                                  f"-m addrtype --dst-type LOCAL {proto_port} -j {external_target}")
    if p.svc.health_check_node_port:
        # Whether or not the node has local endpoints, the health check port is let in.
        b.filter_rules.append(f'-A KUBE-NODEPORTS -m comment --comment "{p.name} health check node port" '
                              f"-m tcp -p tcp --dport {p.svc.health_check_node_port} -j ACCEPT")


def _port_chains(p: _Port) -> list[str]:
    """The nat chains a port owns, in the order kube-proxy declares them; none without endpoints."""
    chains = [p.ext_chain] if p.uses_ext_chain else []
    chains += [p.fw_chain] if p.uses_fw_chain else []
    chains += [p.svc_chain] if p.uses_cluster_chain else []
    chains += [p.svl_chain] if p.uses_local_chain else []
    return chains + [sep for _, sep in p.reachable]


def _write_service_chains(b: _Buffers, p: _Port, cluster_cidr: str, node_ip: str, large: bool,
                          write: bool) -> None:
    """The port's own chains: KUBE-EXT, KUBE-FW, KUBE-SVC, KUBE-SVL and one KUBE-SEP per
    endpoint this node can reach.

    With write=False (a partial sync, port unchanged) the chains are only marked active: they
    stay in the kernel untouched because --noflush leaves chains the input does not name alone.
    """
    chains = _port_chains(p)
    b.active.update(chains)
    if not write or not chains:
        return
    b.nat_chains += [f":{chain} - [0:0]" for chain in chains]
    if p.has_internal:
        # Masquerade traffic from outside the cluster CIDR: it may have been routed to this node
        # for the service range and its replies must come back the same way.
        b.nat_rules.append(f'-A {p.internal_chain} -m comment --comment "{p.name} cluster IP" '
                           f"{p.match(p.svc.cluster_ip, p.port.port)} ! -s {cluster_cidr} -j KUBE-MARK-MASQ")
    if p.uses_ext_chain:
        if not p.external_local:
            # Endpoints may be on other nodes: masquerade, so replies come back through us.
            b.nat_rules.append(f'-A {p.ext_chain} -m comment --comment "masquerade traffic for {p.name} '
                               f'external destinations" -j KUBE-MARK-MASQ')
        else:
            # Only this node's endpoints: the client's address is kept. Pods and the node itself
            # are short-circuited to the Cluster chain, as if out to the load balancer and back.
            b.nat_rules += [
                f'-A {p.ext_chain} -m comment --comment "pod traffic for {p.name} external destinations" '
                f"-s {cluster_cidr} -j {p.svc_chain}",
                f'-A {p.ext_chain} -m comment --comment "masquerade LOCAL traffic for {p.name} external '
                f'destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ',
                f'-A {p.ext_chain} -m comment --comment "route LOCAL traffic for {p.name} external '
                f'destinations" -m addrtype --src-type LOCAL -j {p.svc_chain}',
            ]
        if p.has_external:
            b.nat_rules.append(f"-A {p.ext_chain} -j {p.external_policy_chain}")
    if p.uses_fw_chain:
        head = f'-A {p.fw_chain} -m comment --comment "{p.name} loadbalancer IP"'
        from_node = False
        for cidr in p.svc.source_ranges:
            b.nat_rules.append(f"{head} -s {cidr} -j {p.ext_chain}")
            from_node = from_node or (bool(node_ip) and ipaddress.ip_address(node_ip) in ipaddress.ip_network(cidr))
        if from_node:
            # A VIP the node holds loops a node's own request back with the VIP as source.
            b.nat_rules += [f"{head} -s {ip} -j {p.ext_chain}" for ip in p.lb_ips]
        b.nat_rules.append(f'-A {p.fw_chain} -m comment --comment "other traffic to {p.name} will be dropped '
                           f'by KUBE-PROXY-FIREWALL"')
    if p.uses_cluster_chain:
        b.nat_rules += _service_to_endpoint_rules(p, p.svc_chain, p.seps(p.cluster_endpoints), large)
    if p.uses_local_chain:
        b.nat_rules += _service_to_endpoint_rules(p, p.svl_chain, p.seps(p.local_endpoints), large)
    for ep, sep in p.reachable:
        b.nat_rules += _endpoint_rules(p, ep, sep, large)


def _service_to_endpoint_rules(p: _Port, chain: str, pairs: list[tuple[Endpoint, str]], large: bool) -> list[str]:
    """Affinity checks first, then the random cascade 1/n, 1/(n-1), ... and a last sure jump."""
    def head(ep: Endpoint) -> str:
        return f"-A {chain}" + ("" if large else f' -m comment --comment "{p.name} -> {ep}"')

    rules = []
    if p.svc.session_affinity == "ClientIP":
        for ep, sep in pairs:
            rules.append(f"{head(ep)} -m recent --name {sep} --rcheck --seconds {p.svc.affinity_timeout} "
                         f"--reap -j {sep}")
    n = len(pairs)
    for i, (ep, sep) in enumerate(pairs):
        chance = f" -m statistic --mode random --probability {probability(n - i)}" if i < n - 1 else ""
        rules.append(f"{head(ep)}{chance} -j {sep}")
    return rules


def _endpoint_rules(p: _Port, ep: Endpoint, sep: str, large: bool) -> list[str]:
    head = f"-A {sep}" + ("" if large else f" -m comment --comment {p.name}")
    recent = f" -m recent --name {sep} --set" if p.svc.session_affinity == "ClientIP" else ""
    return [
        # Hairpin: a pod reaching itself through the service must see the node as the source.
        f"{head} -s {ep.ip} -j KUBE-MARK-MASQ",
        f"{head}{recent} -m {p.proto} -p {p.proto} -j DNAT --to-destination {ep}",
    ]


def _write_stale_chains(b: _Buffers, previous_chains: Iterable[str]) -> None:
    """Flush (the chain line) and delete service chains that no longer exist."""
    for chain in sorted(set(previous_chains) - b.active):
        if is_service_chain(chain):
            b.nat_chains.append(f":{chain} - [0:0]")
            b.nat_rules.append(f"-X {chain}")


def _write_trailer(b: _Buffers) -> None:
    b.nat_rules.append('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must '
                       'be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS')
    mark = f"{MASQ_MARK}/{MASQ_MARK}"
    b.filter_rules += [
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
        f'-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark {mark} -j ACCEPT',
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" '
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    ]


def _write_flannel_masq(b: _Buffers, cluster_cidr: str, pod_cidr: str) -> None:
    """flanneld --ip-masq: pod traffic leaving the cluster CIDR is SNAT'd, pod-to-pod is not."""
    b.nat_chain(FLANNEL_CHAIN)
    c = " ".join(_FLANNEL_COMMENT)
    b.nat_rules += [
        f"-A {FLANNEL_CHAIN} -m mark --mark {MASQ_MARK}/{MASQ_MARK} {c} -j RETURN",
        f"-A {FLANNEL_CHAIN} -s {pod_cidr} -d {cluster_cidr} {c} -j RETURN",
        f"-A {FLANNEL_CHAIN} -s {cluster_cidr} -d {pod_cidr} {c} -j RETURN",
        f"-A {FLANNEL_CHAIN} ! -s {cluster_cidr} -d {pod_cidr} {c} -j RETURN",
        f"-A {FLANNEL_CHAIN} -s {cluster_cidr} ! -d 224.0.0.0/4 {c} -j MASQUERADE --random-fully",
        f"-A {FLANNEL_CHAIN} ! -s {cluster_cidr} -d {cluster_cidr} {c} -j MASQUERADE --random-fully",
    ]


def render_node_rules(cluster: Cluster, node: Node,
                      endpoints_by_service: Optional[EndpointsByService] = None, *,
                      previous_chains: Iterable[str] = (),
                      changed: Optional[set[str]] = None, cleanup: bool = True,
                      live: bool = False) -> str:
    """One iptables-restore input (filter then nat, each ending in COMMIT) for `--noflush`;
    live=True for a node in use, in the order _Buffers.text explains.

    endpoints_by_service maps "ns/name" to {port name: [Endpoint]}; None computes them with
    endpoints_for over every pod; a service missing from a given map has no endpoints.
    previous_chains: what node_chains() returned at the last sync; service chains that
    vanished since are flushed and deleted (`:CHAIN` + `-X CHAIN`), as kube-proxy does.
    changed: a partial sync, kube-proxy's trick: only the KUBE-SVC/EXT/SEP chains of these
    services ("ns/name") are rewritten; the rest stay in the kernel as they are. The caller
    must name every service whose endpoints or spec changed, or a stale SEP chain that an
    unchanged SVC chain still jumps to cannot be deleted (the restore would fail).
    cleanup=False: in large cluster mode, leave stale chains for a later sync, as kube-proxy
    does between its iptables cleanups (they are unreferenced, so harmless but for memory);
    stale_chains() tells which to keep remembering.
    """
    cidr = cluster.config.cluster_cidr
    ports = _service_ports(cluster, endpoints_by_service, node.name)
    large = sum(len(p.endpoints) for p in ports) > LARGE_CLUSTER_ENDPOINTS
    b = _Buffers()
    _write_top_level(b)
    for p in ports:
        _write_capture_rules(b, p)
        _write_service_chains(b, p, cidr, node.internal_ip, large,
                              write=changed is None or p.svc.meta.key in changed)
    if cleanup or not large:
        _write_stale_chains(b, previous_chains)
    _write_trailer(b)
    # backend calico: the IP pool's natOutgoing (Felix's cali-nat-outgoing), pool to outside
    # only; a node has several blocks, so every pod address counts as this node's. Canal keeps
    # flanneld --ip-masq (canal.yaml runs it so), on the node's own flannel subnet.
    _write_flannel_masq(b, cidr, cidr if cluster.config.backend == "calico" else node.pod_cidr)
    return b.text(live)


def node_chains(cluster: Cluster, node: Node,
                endpoints_by_service: Optional[EndpointsByService] = None) -> list[str]:
    """The nat chains the node's rules own; pass them as previous_chains to the next sync.

    (kube-proxy finds stale chains with iptables-save; the plan knows them without asking.)
    """
    chains = {*NAT_CHAINS, FLANNEL_CHAIN}
    for p in _service_ports(cluster, endpoints_by_service, node.name):
        chains.update(_port_chains(p))
    return sorted(chains)


def large_cluster(cluster: Cluster, endpoints_by_service: Optional[EndpointsByService] = None) -> bool:
    """kube-proxy's largeClusterMode: more than LARGE_CLUSTER_ENDPOINTS endpoints in all."""
    return sum(len(p.endpoints) for p in _service_ports(cluster, endpoints_by_service)) > LARGE_CLUSTER_ENDPOINTS


def stale_chains(previous_chains: Iterable[str], current: Iterable[str]) -> list[str]:
    """Service chains a sync that skipped cleanup leaves in the kernel, to delete later."""
    return sorted({c for c in previous_chains if is_service_chain(c)} - set(current))
