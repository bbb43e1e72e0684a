"""The desired network of a lab, namespace by namespace: devices, addresses, routes, neighbours.

Pure: computed from the model, applied by netlab.kernel.build. The layout follows what a
real cluster has on each machine:

    underlay ns   br0 (the L2 segment between nodes, 192.168.56.1 = router), ul-* ports,
                  inet0 towards the simulated internet, routes for the load-balancer pool
    node ns       eth0 on the underlay, cni0 bridge (pod gateway), flannel.1 (vxlan backend)
                  or flannel0 (udp backend, a TUN read by the node's flanneld),
                  one veth* per pod on cni0 (backend calico and Canal: no cni0, one cali*
                  per pod with the pod's /32 routed to it)
    pod ns        eth0 (the other end of the pod's veth), default route via cni0's address
                  (calico/Canal: via 169.254.1.1, answered by the cali end's proxy ARP)
    client ns     an outside client on the underlay (NodePort/LoadBalancer from outside)
    internet ns   a host on a documentation range, reached through the underlay router
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Optional

from ..model import names
from ..model.cluster import Cluster, Node
from ..model.objects import Pod

UNDERLAY_BRIDGE = "br0"
POD_BRIDGE = "cni0"
VXLAN_DEV = "flannel.1"
VXLAN_OVERHEAD = 50
TUN_DEV = "flannel0"                           # flannel's udp backend: a TUN without PI header
UDP_PORT = 8285
UDP_OVERHEAD = 28                              # outer IPv4 (20) + UDP (8): the inner packet rides bare
INTERNET_UPLINK = "inet0"
# backend calico, as its CNI plugin wires a pod: the pod's gateway is this link-local address,
# which no device has; the host end of the veth answers ARP for it (proxy_arp) with its MAC.
CALICO_GATEWAY = "169.254.1.1"
CALICO_HOST_MAC = "ee:ee:ee:ee:ee:ee"
CLIENT_PORT = "ul-client"


@dataclass
class Link:
    """A device to create in a namespace; a veth's peer end is created in `peer_netns`."""
    name: str
    kind: str                                  # bridge | veth | vxlan | tun
    peer: str = ""
    peer_netns: str = ""
    vxlan_id: int = 0
    vxlan_local: str = ""
    vxlan_port: int = 0
    vxlan_dev: str = ""


@dataclass
class Device:
    """How a device (created here, or arriving as a veth peer) is configured."""
    name: str
    mtu: Optional[int] = None
    mac: str = ""
    master: str = ""
    hairpin: bool = False


@dataclass
class Route:
    dst: str                                   # "default" or a CIDR
    via: str = ""
    dev: str = ""
    onlink: bool = False
    multipath: list[str] = field(default_factory=list)   # ECMP next hops
    scope: str = ""                            # "" (universe) or "link"


@dataclass
class Neighbour:
    dev: str
    ip: str
    mac: str


@dataclass
class FdbEntry:
    dev: str
    mac: str
    dst: str


@dataclass
class NsPlan:
    netns: str
    links: list[Link] = field(default_factory=list)
    devices: list[Device] = field(default_factory=list)
    addresses: list[tuple[str, str]] = field(default_factory=list)   # (dev, cidr)
    routes: list[Route] = field(default_factory=list)
    neighbours: list[Neighbour] = field(default_factory=list)
    fdb: list[FdbEntry] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)


def _prefixlen(cidr: str) -> int:
    return ipaddress.ip_network(cidr).prefixlen


def router_ip(cluster: Cluster) -> str:
    return str(ipaddress.ip_network(cluster.config.underlay_cidr).network_address + 1)


def client_ip(cluster: Cluster) -> str:
    return str(ipaddress.ip_network(cluster.config.underlay_cidr).network_address + 2)


def internet_router_ip(cluster: Cluster) -> str:
    return str(ipaddress.ip_network(cluster.config.internet_cidr).network_address + 1)


def internet_host_ip(cluster: Cluster) -> str:
    """The simulated internet host (203.0.113.10 by default)."""
    return str(ipaddress.ip_network(cluster.config.internet_cidr).network_address + 10)


def pod_mtu(cluster: Cluster) -> int:
    cfg = cluster.config
    overhead = {"vxlan": VXLAN_OVERHEAD, "udp": UDP_OVERHEAD}.get(cfg.backend, 0)   # calico: routed, none
    return cfg.mtu - overhead


def udp_subnets(cluster: Cluster) -> list[tuple[str, str]]:
    """flanneld's (udp backend) forwarding table: each node's pod subnet -> its underlay address."""
    return [(n.pod_cidr, n.internal_ip) for n in cluster.nodes]


def plan_underlay(cluster: Cluster) -> NsPlan:
    cfg = cluster.config
    ns = names.underlay_netns(cluster.name)
    plan = NsPlan(ns, sysctls={"net.ipv4.ip_forward": "1"})
    plan.links.append(Link(UNDERLAY_BRIDGE, "bridge"))
    # A bridge left to itself takes the lowest MAC of its ports: a node joining or leaving
    # would change the router's MAC under every other node's ARP entry for it. Set, it stays.
    plan.devices.append(Device(UNDERLAY_BRIDGE, mtu=cfg.mtu, mac=bridge_mac(cluster.name, UNDERLAY_BRIDGE)))
    ports = [(names.uplink(n.name), n.netns) for n in cluster.nodes]
    ports.append((CLIENT_PORT, names.client_netns(cluster.name)))
    for port, peer_ns in ports:
        _port(plan, port, peer_ns, cfg.mtu)
    plan.links.append(Link(INTERNET_UPLINK, "veth", peer="eth0", peer_netns=names.internet_netns(cluster.name)))
    plan.devices.append(Device(INTERNET_UPLINK, mtu=cfg.mtu))
    plan.addresses.append((UNDERLAY_BRIDGE, f"{router_ip(cluster)}/{_prefixlen(cfg.underlay_cidr)}"))
    plan.addresses.append((INTERNET_UPLINK, f"{internet_router_ip(cluster)}/{_prefixlen(cfg.internet_cidr)}"))
    plan.routes.append(lb_route(cluster))
    return plan


def _port(plan: NsPlan, port: str, peer_ns: str, mtu: int) -> None:
    """A port on the underlay bridge whose other end is eth0 in peer_ns."""
    plan.links.append(Link(port, "veth", peer="eth0", peer_netns=peer_ns))
    plan.devices.append(Device(port, mtu=mtu, master=UNDERLAY_BRIDGE))


def plan_uplink(cluster: Cluster, node: Node) -> NsPlan:
    """Only a node's port on the underlay (for a node that joins a running lab)."""
    plan = NsPlan(names.underlay_netns(cluster.name))
    _port(plan, names.uplink(node.name), node.netns, cluster.config.mtu)
    return plan


def lb_route(cluster: Cluster) -> Route:
    """A cloud load balancer in miniature: the pool is routed to every node (ECMP), and each
    node's kube-proxy rules pick the service's endpoints."""
    return Route(cluster.config.lb_pool, multipath=[n.internal_ip for n in cluster.nodes])


def bridge_mac(lab: str, bridge: str) -> str:
    """A fixed, locally administered unicast MAC for one of the lab's bridges."""
    h = names.short_hash(f"{lab}/{bridge}/mac", 10)
    return "0e:" + ":".join(h[i:i + 2] for i in range(0, 10, 2))


def gateway_mac(ip: str) -> str:
    """cni0's MAC, fixed as the CNI bridge plugin fixes it: 0a:58 and the gateway's address.
    A bridge left alone takes the lowest MAC of its ports, so a new pod's veth could change
    it, and the running pods' ARP entries for their gateway then led to another pod (seen:
    a pod that started early in `up` lost its gateway while later pods were wired)."""
    return "0a:58:" + ":".join(f"{int(octet):02x}" for octet in ip.split("."))


def plan_client(cluster: Cluster) -> NsPlan:
    cfg = cluster.config
    plan = NsPlan(names.client_netns(cluster.name))
    plan.devices.append(Device("eth0", mtu=cfg.mtu))
    plan.addresses.append(("eth0", f"{client_ip(cluster)}/{_prefixlen(cfg.underlay_cidr)}"))
    plan.routes.append(Route("default", via=router_ip(cluster)))
    return plan


def plan_internet(cluster: Cluster) -> NsPlan:
    cfg = cluster.config
    plan = NsPlan(names.internet_netns(cluster.name))
    plan.devices.append(Device("eth0", mtu=cfg.mtu))
    plan.addresses.append(("eth0", f"{internet_host_ip(cluster)}/{_prefixlen(cfg.internet_cidr)}"))
    plan.routes.append(Route("default", via=internet_router_ip(cluster)))
    return plan


def plan_node(cluster: Cluster, node: Node) -> NsPlan:
    cfg = cluster.config
    plan = NsPlan(node.netns, sysctls={"net.ipv4.ip_forward": "1",
                                       # Bridged pod-to-pod traffic must traverse iptables,
                                       # or a pod's reply to a ClusterIP client skips the
                                       # reverse NAT (kube-proxy requires br_netfilter).
                                       "net.bridge.bridge-nf-call-iptables": "1",
                                       # kube-proxy sets this so NodePorts answer on 127.0.0.1.
                                       "net.ipv4.conf.all.route_localnet": "1",
                                       "net.ipv4.conf.all.rp_filter": "0"})
    if cfg.proxy_mode == "userspace":
        # The userspace proxy's listening ports lie in the ephemeral range: keep them out of it.
        from .userspace import RESERVED_PORTS_SYSCTL
        plan.sysctls.update(RESERVED_PORTS_SYSCTL)
    plan.devices.append(Device("eth0", mtu=cfg.mtu))
    plan.addresses.append(("eth0", f"{node.internal_ip}/{_prefixlen(cfg.underlay_cidr)}"))
    plan.routes.append(Route("default", via=router_ip(cluster)))
    if cfg.backend == "calico":
        # No bridge and no overlay: each pod is a /32 route to its cali veth, and BIRD (a
        # node daemon) installs the blackhole routes of the node's blocks and learns the
        # other nodes' blocks over BGP.
        return plan
    if not cfg.canal:
        plan.links.append(Link(POD_BRIDGE, "bridge"))
        plan.devices.append(Device(POD_BRIDGE, mtu=pod_mtu(cluster), mac=gateway_mac(node.gateway)))
        plan.addresses.append((POD_BRIDGE, f"{node.gateway}/{_prefixlen(node.pod_cidr)}"))
    # Canal: no bridge either. Calico's CNI plugin routes each local pod as a /32 to its cali
    # veth (longer than any route below), and flannel routes the other nodes' subnets as usual.
    remotes = [n for n in cluster.nodes if n.name != node.name]
    if cfg.backend == "vxlan":
        # flannel's vxlan backend: no learning, everything programmed from the subnet lease.
        plan.links.append(Link(VXLAN_DEV, "vxlan", vxlan_id=cfg.vxlan_vni, vxlan_local=node.internal_ip,
                               vxlan_port=cfg.vxlan_port, vxlan_dev="eth0"))
        plan.devices.append(Device(VXLAN_DEV, mtu=cfg.mtu - VXLAN_OVERHEAD, mac=node.vtep_mac))
        plan.addresses.append((VXLAN_DEV, f"{node.vtep_ip}/32"))
        for r in remotes:
            plan.routes.append(Route(r.pod_cidr, via=r.vtep_ip, dev=VXLAN_DEV, onlink=True))
            plan.neighbours.append(Neighbour(VXLAN_DEV, r.vtep_ip, r.vtep_mac))
            plan.fdb.append(FdbEntry(VXLAN_DEV, r.vtep_mac, r.internal_ip))
    elif cfg.backend == "udp":
        # flannel's udp backend: flanneld reads what the route `<cluster CIDR> dev flannel0`
        # sends into the TUN and sends it on as UDP to the node that holds the subnet. The
        # device carries the subnet's .0 address with the cluster CIDR's prefix, so the kernel's
        # prefix route for that address is the cluster route (as in document 001's table).
        plan.links.append(Link(TUN_DEV, "tun"))
        plan.devices.append(Device(TUN_DEV, mtu=cfg.mtu - UDP_OVERHEAD))
        plan.addresses.append((TUN_DEV, f"{node.vtep_ip}/{_prefixlen(cfg.cluster_cidr)}"))
    elif cfg.backend == "host-gw":
        for r in remotes:
            plan.routes.append(Route(r.pod_cidr, via=r.internal_ip, dev="eth0"))
    return plan


def plan_pod(cluster: Cluster, pod: Pod) -> tuple[NsPlan, NsPlan]:
    """(the node-side part: the veth on cni0, or Calico's routed veth; the pod's own namespace)."""
    node = cluster.node(pod.spec.node_name)
    pod_ns = cluster.pod_netns(pod)
    host_end = names.host_veth(pod.meta.namespace, pod.meta.name, calico=cluster.config.calico_pods)
    mtu = pod_mtu(cluster)
    if cluster.config.calico_pods:
        return plan_calico_pod(cluster, pod, node, pod_ns, host_end, mtu)
    node_part = NsPlan(node.netns,
                       links=[Link(host_end, "veth", peer="eth0", peer_netns=pod_ns)],
                       devices=[Device(host_end, mtu=mtu, master=POD_BRIDGE, hairpin=True)])
    pod_part = NsPlan(pod_ns, devices=[Device("eth0", mtu=mtu)],
                      addresses=[("eth0", f"{pod.pod_ip}/{_prefixlen(node.pod_cidr)}")],
                      routes=[Route("default", via=node.gateway)])
    return node_part, pod_part


def plan_calico_pod(cluster: Cluster, pod: Pod, node: Node, pod_ns: str, host_end: str,
                    mtu: int) -> tuple[NsPlan, NsPlan]:
    """As Calico's CNI plugin: the host end `caliXXXXXXXXXXX` has no address, MAC
    ee:ee:ee:ee:ee:ee and proxy_arp on (answering at once: proxy_delay 0); the node routes the
    pod's /32 to it (scope link); the pod has its /32 and a default route via 169.254.1.1,
    onlink since no subnet of the pod holds that address."""
    node_part = NsPlan(node.netns,
                       links=[Link(host_end, "veth", peer="eth0", peer_netns=pod_ns)],
                       devices=[Device(host_end, mtu=mtu, mac=CALICO_HOST_MAC)],
                       routes=[Route(f"{pod.pod_ip}/32", dev=host_end, scope="link")],
                       sysctls={f"net.ipv4.conf.{host_end}.proxy_arp": "1",
                                f"net.ipv4.neigh.{host_end}.proxy_delay": "0",
                                f"net.ipv4.conf.{host_end}.forwarding": "1"})
    pod_part = NsPlan(pod_ns, devices=[Device("eth0", mtu=mtu)],
                      addresses=[("eth0", f"{pod.pod_ip}/32")],
                      routes=[Route("default", via=CALICO_GATEWAY, dev="eth0", onlink=True)])
    return node_part, pod_part


def plan_infrastructure(cluster: Cluster) -> list[NsPlan]:
    """Everything but the pods: underlay, outside client, internet and the nodes."""
    return ([plan_underlay(cluster), plan_client(cluster), plan_internet(cluster)]
            + [plan_node(cluster, n) for n in cluster.nodes])


def lab_netns(cluster: Cluster) -> list[str]:
    return ([names.underlay_netns(cluster.name), names.client_netns(cluster.name),
             names.internet_netns(cluster.name)] + [n.netns for n in cluster.nodes]
            + [cluster.pod_netns(p) for p in cluster.pods.values()])
