"""lab.yaml: the lab's name, its nodes, the cross-node backend and the address plan."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from .errors import InvalidError
from .names import (check_dns_label, check_dns_subdomain, check_label_key, check_label_value,
                    validate_lab_name)

BACKENDS = ("vxlan", "host-gw", "udp", "calico")
PROXY_MODES = ("iptables", "userspace")
# Pod A records <a-b-c-d>.<ns>.pod.<zone>, CoreDNS's `pods` option: insecure answers any address
# (as kube-dns does, and kubeadm's CoreDNS under a namespace that exists), verified only the
# address of a pod that exists in that namespace, disabled none.
DNS_POD_MODES = ("insecure", "verified", "disabled")
LAB_API_VERSIONS = ("netlab/v1",)
SPEC_FIELDS = ("nodes", "backend", "proxyMode", "dns", "dnsPods", "network", "calico", "ingress",
               "networkPolicy")
FLANNEL_BACKENDS = ("vxlan", "host-gw", "udp")
# spec.networkPolicy on a flannel backend: who enforces NetworkPolicy. "calico" is Canal:
# flannel carries pods between nodes, Calico's CNI plugin wires each pod and Felix polices it.
NETWORK_POLICY_PROVIDERS = ("calico",)
# spec.calico: what calico-node's BGPConfiguration, IPPool and Node resources say on a real cluster.
CALICO_FIELDS = ("asNumber", "blockSize", "routeReflectors", "ipipMode", "bgpHoldTime")
IPIP_MODES = ("Never", "Always", "CrossSubnet")
TOP_FIELDS = ("apiVersion", "kind", "metadata", "spec")
METADATA_FIELDS = ("name", "labels", "annotations")
NODE_FIELDS = ("name", "labels")


@dataclass
class NodeSpec:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    # Which node subnet and underlay address it has (node i: subnet i, .offset+i); 0 means
    # its position in spec.nodes. A node added to a running lab keeps its own for good, so
    # removing another node never renumbers it (kept in state.json, not in lab.yaml).
    index: int = 0


@dataclass
class CalicoConfig:
    """backend calico: the IP pool is the cluster CIDR, cut into blocks of /block_size."""
    as_number: int = 64512                    # BGPConfiguration asNumber (Calico's default)
    block_size: int = 26                      # IPPool blockSize
    route_reflectors: list[str] = field(default_factory=list)   # [] = node-to-node mesh
    ipip_mode: str = "Never"                  # IPPool ipipMode
    hold_time: int = 240                      # BGP hold time (BIRD's default); keepalive a third

    def to_dict(self) -> dict:
        return {"asNumber": self.as_number, "blockSize": self.block_size,
                "routeReflectors": list(self.route_reflectors), "ipipMode": self.ipip_mode,
                "bgpHoldTime": self.hold_time}


@dataclass
class LabConfig:
    name: str
    nodes: list[NodeSpec]
    backend: str = "vxlan"
    proxy_mode: str = "iptables"
    dns: bool = True                  # the kube-dns add-on (kubedns + dnsmasq in kube-system)
    dns_pods: str = "insecure"        # pod A records: insecure | verified | disabled
    ingress: "bool | None" = None     # the ingress-nginx add-on; None: with the lab's first Ingress
    cluster_cidr: str = "10.244.0.0/16"
    node_prefix: int = 24
    service_cidr: str = "10.96.0.0/12"
    dns_ip: str = "10.96.0.10"
    dns_domain: str = "cluster.local"
    underlay_cidr: str = "192.168.56.0/24"
    node_ip_offset: int = 10          # node i gets underlay .10+i (node1 = .11)
    nodeport_range: tuple[int, int] = (30000, 32767)
    lb_pool: str = "198.51.100.0/28"      # routed by the underlay router to the nodes
    internet_cidr: str = "203.0.113.0/24"
    mtu: int = 1500
    vxlan_vni: int = 1
    vxlan_port: int = 8472
    calico: CalicoConfig = field(default_factory=CalicoConfig)
    network_policy: str = ""          # "calico" on a flannel backend: Canal; "" none
    source: str = ""

    @property
    def calico_pods(self) -> bool:
        """Pods wired by Calico's CNI plugin (cali veths, /32 routes, 169.254.1.1) and policed
        by Felix's chains: backend calico, or a flannel backend with Canal's networkPolicy."""
        return self.backend == "calico" or self.network_policy == "calico"

    @property
    def canal(self) -> bool:
        return self.backend in FLANNEL_BACKENDS and self.network_policy == "calico"

    @property
    def backend_label(self) -> str:
        """The backend as `up` and `describe node` show it: "Canal: vxlan + Calico"."""
        return f"Canal: {self.backend} + Calico" if self.canal else self.backend

    def to_dict(self) -> dict:
        return {
            "apiVersion": "netlab/v1", "kind": "Lab", "metadata": {"name": self.name},
            "spec": {
                "nodes": [{"name": n.name, "labels": n.labels} for n in self.nodes],
                "backend": self.backend, "proxyMode": self.proxy_mode, "dns": self.dns,
                "dnsPods": self.dns_pods, **({"ingress": self.ingress} if self.ingress is not None else {}),
                "network": {
                    "clusterCIDR": self.cluster_cidr, "nodeSubnetPrefix": self.node_prefix,
                    "serviceCIDR": self.service_cidr, "dnsServiceIP": self.dns_ip,
                    "dnsDomain": self.dns_domain, "underlayCIDR": self.underlay_cidr,
                    "nodeIPOffset": self.node_ip_offset,
                    "nodePortRange": f"{self.nodeport_range[0]}-{self.nodeport_range[1]}",
                    "loadBalancerPool": self.lb_pool, "internetCIDR": self.internet_cidr,
                    "mtu": self.mtu, "vxlanVNI": self.vxlan_vni, "vxlanPort": self.vxlan_port,
                },
                **({"calico": self.calico.to_dict()} if self.backend == "calico" else {}),
                **({"networkPolicy": self.network_policy} if self.network_policy else {}),
            },
        }


def _err(file, field_path, message, value=None):
    return InvalidError(message, value=value, file=file, obj="Lab", field=field_path)


def _net(value, file, path) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(str(value), strict=True)
    except ValueError as exc:
        raise _err(file, path, f"not a valid IPv4 CIDR ({exc})", value) from None
    if net.version != 4:
        raise _err(file, path, "only IPv4 is supported", value)
    return net


def _int(value, file, path, lo, hi) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _err(file, path, f"must be an integer between {lo} and {hi}", value)
    return value


def parse_lab(doc: dict | None, *, default_name: str, file: str = "lab.yaml",
              nodes_override: int | None = None, name_override: str | None = None,
              backend_override: str | None = None, proxy_override: str | None = None) -> LabConfig:
    doc = doc or {}
    if not isinstance(doc, dict):
        raise _err(file, "", "lab.yaml must be a mapping")
    if doc:
        if doc.get("kind") != "Lab":
            raise _err(file, "kind", "lab.yaml must have kind: Lab", doc.get("kind"))
        if doc.get("apiVersion") not in LAB_API_VERSIONS:
            raise _err(file, "apiVersion", f"must be one of {', '.join(LAB_API_VERSIONS)}",
                       doc.get("apiVersion"))
    md = doc.get("metadata") or {}
    spec = doc.get("spec") or {}
    if not isinstance(md, dict) or not isinstance(spec, dict):
        raise _err(file, "spec", "metadata and spec must be mappings")
    _known(doc, TOP_FIELDS, "", file)
    _known(md, METADATA_FIELDS, "metadata.", file)
    _known(spec, SPEC_FIELDS, "spec.", file)
    raw_name = md.get("name")
    if raw_name is not None and not isinstance(raw_name, str):
        raise _err(file, "metadata.name", "must be a string", raw_name)
    name = validate_lab_name(name_override or raw_name or default_name, file=file)

    raw_nodes = spec.get("nodes", 2) if nodes_override is None else nodes_override
    nodes: list[NodeSpec] = []
    if isinstance(raw_nodes, int) and not isinstance(raw_nodes, bool):
        _int(raw_nodes, file, "spec.nodes", 1, 250)
        nodes = [NodeSpec(f"node{i + 1}") for i in range(raw_nodes)]
    elif isinstance(raw_nodes, list) and raw_nodes:
        for i, rn in enumerate(raw_nodes):
            path = f"spec.nodes[{i}]"
            if isinstance(rn, str):
                rn = {"name": rn}
            if not isinstance(rn, dict) or not rn.get("name"):
                raise _err(file, f"{path}.name", "Required value")
            _known(rn, NODE_FIELDS, f"{path}.", file)
            if not isinstance(rn["name"], str):
                raise _err(file, f"{path}.name", "must be a string", rn["name"])
            nname = rn["name"]
            problem = check_dns_label(nname, 30)
            if problem:
                raise _err(file, f"{path}.name", problem, nname)
            if any(n.name == nname for n in nodes):
                raise _err(file, f"{path}.name", "Duplicate value", nname)
            nodes.append(NodeSpec(nname, _labels(rn.get("labels"), f"{path}.labels", file)))
    else:
        raise _err(file, "spec.nodes", "must be a node count or a non-empty list of nodes", raw_nodes)

    backend = backend_override or spec.get("backend", "vxlan")
    if backend not in BACKENDS:
        raise _err(file, "spec.backend", f"supported values: {', '.join(BACKENDS)}", backend)
    proxy_mode = proxy_override or spec.get("proxyMode", "iptables")
    if proxy_mode not in PROXY_MODES:
        raise _err(file, "spec.proxyMode", f"supported values: {', '.join(PROXY_MODES)}", proxy_mode)

    dns = spec.get("dns", True)
    if not isinstance(dns, bool):
        raise _err(file, "spec.dns", "must be true or false", dns)
    dns_pods = spec.get("dnsPods", "insecure")
    if dns_pods not in DNS_POD_MODES:
        raise _err(file, "spec.dnsPods", f"supported values: {', '.join(DNS_POD_MODES)}", dns_pods)
    network_policy = _network_policy(spec.get("networkPolicy"), backend, file)
    ingress = spec.get("ingress")
    if ingress is not None and not isinstance(ingress, bool):
        raise _err(file, "spec.ingress", "must be true or false", ingress)
    net = spec.get("network") or {}
    if not isinstance(net, dict):
        raise _err(file, "spec.network", "must be a mapping")
    known = {"clusterCIDR", "nodeSubnetPrefix", "serviceCIDR", "dnsServiceIP", "dnsDomain",
             "underlayCIDR", "nodeIPOffset", "nodePortRange", "loadBalancerPool", "internetCIDR",
             "mtu", "vxlanVNI", "vxlanPort"}
    for key in net:
        if key not in known:
            raise _err(file, f"spec.network.{key}", f"unknown field (known: {', '.join(sorted(known))})")
    cfg = LabConfig(name=name, nodes=nodes, backend=backend, proxy_mode=proxy_mode, dns=dns,
                    dns_pods=dns_pods, network_policy=network_policy, source=file)
    if cfg.calico_pods and proxy_mode == "userspace":
        # The userspace proxy REDIRECTs a pod's packet to the address of the interface it came
        # in on; a cali veth has none, so the kernel drops it (every Service would time out).
        raise _err(file, "spec.proxyMode", "userspace needs an address on the pod's host interface "
                   "for its REDIRECT, and Calico's cali veths have none (backend calico, or "
                   "networkPolicy: calico): use proxyMode: iptables", proxy_mode)
    cfg.ingress = ingress
    p = "spec.network."
    cluster = _net(net.get("clusterCIDR", cfg.cluster_cidr), file, p + "clusterCIDR")
    if cluster.prefixlen > 28:
        # Node subnets are /29 at the smallest and the first one is never used (as flannel's
        # SubnetMin), so even one node needs a /28.
        raise _err(file, p + "clusterCIDR", "too small: must be a /28 or larger", str(cluster))
    prefix = (_int(net.get("nodeSubnetPrefix", cfg.node_prefix), file, p + "nodeSubnetPrefix",
                   cluster.prefixlen + 1, 29) if backend != "calico"
              else max(cluster.prefixlen + 1, 26))     # calico: replaced by spec.calico.blockSize
    service = _net(net.get("serviceCIDR", cfg.service_cidr), file, p + "serviceCIDR")
    underlay = _net(net.get("underlayCIDR", cfg.underlay_cidr), file, p + "underlayCIDR")
    lb_pool = _net(net.get("loadBalancerPool", cfg.lb_pool), file, p + "loadBalancerPool")
    internet = _net(net.get("internetCIDR", cfg.internet_cidr), file, p + "internetCIDR")
    # .1 is the underlay router and .2 the outside client: node 1 starts at .offset+1 >= .3.
    offset = _int(net.get("nodeIPOffset", cfg.node_ip_offset), file, p + "nodeIPOffset", 2, 250)
    dns_ip = str(net.get("dnsServiceIP", cfg.dns_ip))
    try:
        dns_addr = ipaddress.IPv4Address(dns_ip)
    except ValueError:
        raise _err(file, p + "dnsServiceIP", "not a valid IPv4 address", dns_ip) from None
    if dns_addr not in service:
        raise _err(file, p + "dnsServiceIP", f"must be inside serviceCIDR {service}", dns_ip)
    if dns_addr in (service.network_address, service.network_address + 1, service.broadcast_address):
        raise _err(file, p + "dnsServiceIP", f"must not be the network, broadcast or first address "
                   f"of serviceCIDR {service} (the first is the kubernetes service's)", dns_ip)
    dns_domain = str(net.get("dnsDomain", cfg.dns_domain))
    problem = check_dns_subdomain(dns_domain)
    if problem:
        raise _err(file, p + "dnsDomain", problem, dns_domain)
    npr = str(net.get("nodePortRange", "30000-32767"))
    try:
        lo, hi = (int(x) for x in npr.split("-"))
    except ValueError:
        lo = hi = 0
    if not 1 <= lo <= hi <= 65535:
        raise _err(file, p + "nodePortRange", "must look like 30000-32767", npr)

    for (a_name, a), (b_name, b) in _pairs([("clusterCIDR", cluster), ("serviceCIDR", service),
                                            ("underlayCIDR", underlay), ("internetCIDR", internet),
                                            ("loadBalancerPool", lb_pool)]):
        if a.overlaps(b):
            raise _err(file, p + b_name, f"overlaps {a_name} {a}", str(b))
    # Node i gets subnet i (node1: 10.244.1.0/24); subnet 0 is never handed out.
    subnets = 2 ** (prefix - cluster.prefixlen) - 1
    if len(nodes) > subnets and backend != "calico":
        raise _err(file, "spec.nodes", f"{len(nodes)} nodes do not fit: clusterCIDR {cluster} has "
                   f"only {subnets} usable /{prefix} node subnets (the first is not used)")
    # Node addresses .offset+1 .. must stay inside the underlay, leaving room for the
    # router (.1) and the outside client (.2).
    last_node = int(underlay.network_address) + offset + len(nodes)
    if last_node >= int(underlay.broadcast_address):
        raise _err(file, "spec.nodes", f"{len(nodes)} nodes from offset {offset} do not fit in "
                   f"underlay {underlay}")

    cfg.cluster_cidr, cfg.node_prefix = str(cluster), prefix
    cfg.service_cidr, cfg.dns_ip = str(service), dns_ip
    cfg.dns_domain = dns_domain
    cfg.underlay_cidr, cfg.node_ip_offset = str(underlay), offset
    cfg.nodeport_range = (lo, hi)
    cfg.lb_pool, cfg.internet_cidr = str(lb_pool), str(internet)
    cfg.mtu = _int(net.get("mtu", cfg.mtu), file, p + "mtu", 1280, 9000)
    cfg.vxlan_vni = _int(net.get("vxlanVNI", cfg.vxlan_vni), file, p + "vxlanVNI", 1, 16777215)
    cfg.vxlan_port = _int(net.get("vxlanPort", cfg.vxlan_port), file, p + "vxlanPort", 1, 65535)
    if spec.get("calico") is not None and backend != "calico":
        raise _err(file, "spec.calico", "only for backend: calico", backend)
    if backend == "calico":
        cfg.calico = _calico(spec.get("calico"), cfg, cluster, net.get("nodeSubnetPrefix"), file)
        cfg.node_prefix = cfg.calico.block_size
    return cfg


def _network_policy(value, backend: str, file) -> str:
    """spec.networkPolicy: calico (Canal) on a flannel backend. Backend calico enforces
    NetworkPolicy anyway, so there the field may only say so."""
    if value is None:
        return ""
    if value not in NETWORK_POLICY_PROVIDERS:
        raise _err(file, "spec.networkPolicy", f"supported values: {', '.join(NETWORK_POLICY_PROVIDERS)} "
                   "(leave it out for no enforcement)", value)
    return value if backend in FLANNEL_BACKENDS else ""


def _calico(doc, cfg: LabConfig, cluster: ipaddress.IPv4Network, node_prefix, file) -> CalicoConfig:
    """spec.calico. Nodes take IPAM blocks of the pool (the cluster CIDR) as they need them;
    each node starts with one, so the pool must hold a block per node."""
    doc = {} if doc is None else doc
    p = "spec.calico."
    if not isinstance(doc, dict):
        raise _err(file, "spec.calico", "must be a mapping", doc)
    _known(doc, CALICO_FIELDS, p, file)
    out = CalicoConfig()
    out.as_number = _int(doc.get("asNumber", out.as_number), file, p + "asNumber", 1, 4294967295)
    out.block_size = _int(doc.get("blockSize", out.block_size), file, p + "blockSize",
                          max(20, cluster.prefixlen + 1), 32)
    if node_prefix is not None and node_prefix != out.block_size:
        raise _err(file, "spec.network.nodeSubnetPrefix", "backend calico hands out IPAM blocks: "
                   "set spec.calico.blockSize instead", node_prefix)
    blocks = 2 ** (out.block_size - cluster.prefixlen) - 1
    if len(cfg.nodes) > blocks:
        raise _err(file, "spec.nodes", f"{len(cfg.nodes)} nodes do not fit: clusterCIDR {cluster} "
                   f"has only {blocks} usable /{out.block_size} blocks (the first is kept back)")
    rrs = doc.get("routeReflectors", [])
    if not isinstance(rrs, list) or not all(isinstance(r, str) for r in rrs):
        raise _err(file, p + "routeReflectors", "must be a list of node names", rrs)
    known = [n.name for n in cfg.nodes]
    for i, r in enumerate(rrs):
        if r not in known:
            raise _err(file, f"{p}routeReflectors[{i}]", f"no such node (nodes: {', '.join(known)})", r)
    if len(set(rrs)) != len(rrs):
        raise _err(file, p + "routeReflectors", "Duplicate value", rrs)
    out.route_reflectors = list(rrs)
    mode = doc.get("ipipMode", out.ipip_mode)
    if mode not in IPIP_MODES:
        raise _err(file, p + "ipipMode", f"supported values: {', '.join(IPIP_MODES)}", mode)
    out.ipip_mode = mode
    out.hold_time = _int(doc.get("bgpHoldTime", out.hold_time), file, p + "bgpHoldTime", 3, 65535)
    return out


def _known(doc: dict, known: tuple, prefix: str, file) -> None:
    """Refuse a field lab.yaml does not have, as the manifests' strict decoding does."""
    for key in doc:
        if key not in known:
            raise _err(file, f"{prefix}{key}", f"unknown field (known: {', '.join(known)})")


def _labels(value, path: str, file) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _err(file, path, "must be a mapping", value)
    out = {}
    for k, v in value.items():
        if not isinstance(k, str):
            raise _err(file, path, "label keys must be strings", k)
        problem = check_label_key(k)
        if problem:
            raise _err(file, path, problem, k)
        if isinstance(v, bool) or not isinstance(v, (str, int, float, type(None))):
            raise _err(file, f"{path}[{k}]", "must be a string", v)
        v = "" if v is None else str(v)
        problem = check_label_value(v)
        if problem:
            raise _err(file, f"{path}[{k}]", problem, v)
        out[k] = v
    return out


def _pairs(items):
    for i, a in enumerate(items):
        for b in items[i + 1:]:
            yield a, b
