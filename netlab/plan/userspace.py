"""kube-proxy's userspace mode for one node: proxy ports, iptables-restore text, proxy config.

In this mode (kube-proxy's first, the default until v1.2) iptables only steers: every
service port gets a local port on each node where the proxy process listens, and nat rules
send the service's addresses there. Traffic arriving from outside the node (pods behind
cni0, clients on the underlay) is REDIRECTed to the proxy port on the address it came in
on; traffic the node sends itself is DNATed to <nodeIP>:<proxy port>, since REDIRECT of
locally generated packets goes to 127.0.0.1. The proxy then opens its own connection to an
endpoint, from the node's address, so no MARK/MASQUERADE is needed for service traffic.

The rules are what kube-proxy's userspace proxier (pkg/proxy/userspace, removed in v1.26)
keeps in the kernel: its iptablesInit, openPortal and openNodePort, with the proxy bound
to 0.0.0.0, in the form iptables-save prints them, as the document shows:

    -A KUBE-PORTALS-CONTAINER -d 10.254.120.169/32 -p tcp -m comment --comment "smart/ccdb:port1521"
       -m tcp --dport 1521 -j REDIRECT --to-ports 52244

Node ports also get an ACCEPT in filter KUBE-NODEPORT-NON-LOCAL (jumped from INPUT), for
nodes whose INPUT policy is deny. A service without endpoints keeps its rules and its
listener: the historical proxy accepted the connection and closed it at once; the filter
REJECT belongs to iptables mode. Not rendered: externalIPs (their container rule needs
br_netfilter's physdev match, `-m physdev ! --physdev-is-in`) and SCTP ports (never proxied
in userspace). All five chains are declared in every restore, which under --noflush
flushes and rewrites each whole: a vanished service leaves nothing stale behind.
"""
from __future__ import annotations

import hashlib
from typing import Iterator, Mapping, Optional

from netlab.model.cluster import Cluster, Node
from netlab.model.errors import LabError
from netlab.model.objects import Service, ServicePort
from netlab.model.services import service_endpoints
from netlab.plan.kubeproxy import (FLANNEL_CHAIN, EndpointsByService, Jump, _Buffers, _write_flannel_masq,
                                   render_jumps as kubeproxy_jumps, service_port_name)

PORTALS_CONTAINER = "KUBE-PORTALS-CONTAINER"
PORTALS_HOST = "KUBE-PORTALS-HOST"
NODEPORT_CONTAINER = "KUBE-NODEPORT-CONTAINER"
NODEPORT_HOST = "KUBE-NODEPORT-HOST"
NODEPORT_NON_LOCAL = "KUBE-NODEPORT-NON-LOCAL"
NAT_CHAINS = (PORTALS_CONTAINER, PORTALS_HOST, NODEPORT_CONTAINER, NODEPORT_HOST)
PROTOCOLS = ("TCP", "UDP")

PORT_MIN, PORT_MAX = 40000, 59999
PORT_COUNT = PORT_MAX - PORT_MIN + 1
# Proxy ports sit inside the kernel's ephemeral range (32768-60999), as the historical
# bind(0) ports did; reserving them keeps the node's outgoing connections (the proxy's own
# among them) from taking a port before its listener is bound. Write it in each node netns.
RESERVED_PORTS_SYSCTL = {"net.ipv4.ip_local_reserved_ports": f"{PORT_MIN}-{PORT_MAX}"}

_CLUSTER_IPS = '"handle ClusterIPs; NOTE: this must be before the NodePort rules"'
_NODE_PORTS = '"handle service NodePorts; NOTE: this must be the last rule in the chain"'
_NON_LOCAL = '"Ensure that non-local NodePort traffic can flow"'


def _service_ports(cluster: Cluster) -> Iterator[tuple[Service, ServicePort, str]]:
    """(service, port, "ns/name:port") of every proxied port, in "ns/name" order."""
    for key in sorted(cluster.services):
        svc = cluster.services[key]
        if svc.headless or not svc.cluster_ip:
            continue    # no portal without a ClusterIP
        for port in svc.ports:
            if port.protocol in PROTOCOLS:
                yield svc, port, service_port_name(svc, port)


def _hashed_port(node: str, name: str) -> int:
    digest = hashlib.sha256(f"{node}/{name}".encode()).digest()
    return PORT_MIN + int.from_bytes(digest[:4], "big") % PORT_COUNT


def proxy_ports(cluster: Cluster, node: Node, previous: Optional[Mapping[str, int]] = None) -> dict[str, int]:
    """The proxy's listen port for each service port on `node`: {"ns/name:port": port}.

    A pseudo-random port from a hash of node and name, the next free one on a collision.
    `previous` (the last sync's result) keeps ports already handed out where they are, so a
    new service that collides never moves a live listener.
    """
    names = [name for _, _, name in _service_ports(cluster)]
    if len(names) > PORT_COUNT:
        raise LabError(f"{len(names)} service ports, but userspace mode has only {PORT_COUNT} proxy ports "
                       f"({PORT_MIN}-{PORT_MAX})", obj=f"node/{node.name}")
    ports: dict[str, int] = {}
    taken: set[int] = set()
    for name in names:
        port = (previous or {}).get(name)
        if port is not None and PORT_MIN <= port <= PORT_MAX and port not in taken:
            ports[name] = port
            taken.add(port)
    for name in names:
        if name in ports:
            continue
        port = _hashed_port(node.name, name)
        while port in taken:
            port = PORT_MIN + (port - PORT_MIN + 1) % PORT_COUNT
        ports[name] = port
        taken.add(port)
    return {name: ports[name] for name in names}


def render_jumps() -> list[Jump]:
    """The userspace proxier's jumps from built-in chains, and flannel's masquerade jump.

    Portals go first in PREROUTING/OUTPUT; node ports last, for local addresses only.
    """
    flannel = [j for j in kubeproxy_jumps() if j.target == FLANNEL_CHAIN]
    return [
        Jump("nat", "PREROUTING", PORTALS_CONTAINER, ("-m", "comment", "--comment", _CLUSTER_IPS)),
        Jump("nat", "OUTPUT", PORTALS_HOST, ("-m", "comment", "--comment", _CLUSTER_IPS)),
        Jump("nat", "PREROUTING", NODEPORT_CONTAINER,
             ("-m", "addrtype", "--dst-type", "LOCAL", "-m", "comment", "--comment", _NODE_PORTS), prepend=False),
        Jump("nat", "OUTPUT", NODEPORT_HOST,
             ("-m", "addrtype", "--dst-type", "LOCAL", "-m", "comment", "--comment", _NODE_PORTS), prepend=False),
        Jump("filter", "INPUT", NODEPORT_NON_LOCAL, ("-m", "comment", "--comment", _NON_LOCAL)),
        *flannel,
    ]


def _comment(name: str) -> str:
    """That era's ServicePortName.String() is always "ns/name:port", so an unnamed port's
    comment ends in a colon ("default/web:"); later kube-proxies dropped it."""
    return name if ":" in name else name + ":"


def _match(proto: str, name: str, dport: int, dst: str = "", physdev: bool = False, local: bool = False) -> str:
    """iptablesCommonPortalArgs, in iptables-save order: an external IP's container portal adds
    `-m physdev ! --physdev-is-in` (not bridged in from a pod), its second one and its host
    portal `-m addrtype --dst-type LOCAL` (the node holds the address)."""
    d = f"-d {dst}/32 " if dst else ""
    extra = (" -m physdev ! --physdev-is-in" if physdev else "") + (" -m addrtype --dst-type LOCAL" if local else "")
    return f'{d}-p {proto} -m comment --comment "{_comment(name)}" -m {proto} --dport {dport}{extra}'


def render_userspace_rules(cluster: Cluster, node: Node, ports: Mapping[str, int]) -> str:
    """One iptables-restore input (filter then nat) for `--noflush`; `ports` from proxy_ports()."""
    b = _Buffers()
    b.filter_chains.append(f":{NODEPORT_NON_LOCAL} - [0:0]")
    for chain in NAT_CHAINS:
        b.nat_chain(chain)
    containers, hosts, np_containers, np_hosts = [], [], [], []
    for svc, port, name in _service_ports(cluster):
        proto, proxy = port.protocol.lower(), ports[name]
        redirect, dnat = f"-j REDIRECT --to-ports {proxy}", f"-j DNAT --to-destination {node.internal_ip}:{proxy}"
        # openPortal (v1.2/v1.3 pkg/proxy/userspace/proxier.go): the cluster IP, then each
        # external IP (isExternal), then each load-balancer ingress IP; rules in that order.
        portals = [(svc.cluster_ip, False), *[(ip, True) for ip in svc.external_ips],
                   *[(ip, False) for ip in svc.load_balancer_ips]]
        for ip, external in portals:
            if external:
                containers.append(f"-A {PORTALS_CONTAINER} {_match(proto, name, port.port, ip, physdev=True)} "
                                  f"{redirect}")
                containers.append(f"-A {PORTALS_CONTAINER} {_match(proto, name, port.port, ip, local=True)} "
                                  f"{redirect}")
                hosts.append(f"-A {PORTALS_HOST} {_match(proto, name, port.port, ip, local=True)} {dnat}")
                continue
            containers.append(f"-A {PORTALS_CONTAINER} {_match(proto, name, port.port, ip)} {redirect}")
            hosts.append(f"-A {PORTALS_HOST} {_match(proto, name, port.port, ip)} {dnat}")
        if port.node_port:
            np_containers.append(f"-A {NODEPORT_CONTAINER} {_match(proto, name, port.node_port)} {redirect}")
            np_hosts.append(f"-A {NODEPORT_HOST} {_match(proto, name, port.node_port)} {dnat}")
            # After REDIRECT, INPUT sees the proxy port: that is what must be let in. (The
            # comment twice is kube-proxy's: iptablesNonLocalNodePortArgs adds it again.)
            b.filter_rules.append(f'-A {NODEPORT_NON_LOCAL} {_match(proto, name, proxy)} -m comment --comment '
                                  f'"{_comment(name)}" -m state --state NEW -j ACCEPT')
    b.nat_rules += containers + hosts + np_containers + np_hosts
    _write_flannel_masq(b, cluster.config.cluster_cidr, node.pod_cidr)
    return b.text()


def proxy_config(cluster: Cluster, node: Node, ports: Mapping[str, int],
                 endpoints_by_service: Optional[EndpointsByService] = None) -> dict:
    """The proxy's config file (JSON) for `node`, matching render_userspace_rules(ports).

    endpoints_by_service as for kubeproxy.render_node_rules: "ns/name" -> {port name:
    [Endpoint]}; None computes them from every pod; a service missing has no endpoints.
    """
    services = {}
    for svc, port, name in _service_ports(cluster):
        if endpoints_by_service is None:
            eps = service_endpoints(cluster, svc).get(port.name, [])
        else:
            eps = endpoints_by_service.get(svc.meta.key, {}).get(port.name, [])
        services[name] = {
            "listen": ports[name],
            "protocol": port.protocol,
            "endpoints": sorted(str(ep) for ep in eps),
            "sessionAffinity": svc.session_affinity,
            "affinityTimeoutSeconds": svc.affinity_timeout,
        }
    return {"node": node.name, "services": services}
