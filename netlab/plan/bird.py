"""BIRD's configuration for a calico node, written as calico-node's confd writes it.

Pure: the text for one node, from the cluster (its blocks, the other nodes, the BGP
topology). The shape follows confd's bird.cfg / bird_aggr.cfg / bird_ipam.cfg templates,
in BIRD 2 syntax (Debian's bird2):

- a static protocol with a blackhole route per IPAM block of this node (never for a /32
  block: that is the pod's own route), exported to the kernel, so the node drops traffic
  for addresses of its blocks that no pod has instead of sending it back to the default
  route;
- a kernel protocol that learns the CNI plugin's /32 routes (`learn`), keeps its routes when
  BIRD stops (`persist`) and programs into the kernel only routes inside the IP pool;
- a direct protocol for the underlay's connected network, so a BGP next hop (a node's
  address) resolves recursively, as confd's `gateway recursive` wants;
- one BGP session per peer from a common template, AS 64512: a full node-to-node mesh
  (sessions named Mesh_<peer ip with _>, the higher address passive, as confd makes the mesh
  unidirectional), or, with route reflectors, each client peers with every reflector and the
  reflectors with everyone (`rr client` towards clients, one cluster id);
- the export filter announces this node's blocks and nothing beneath them (calico_aggr),
  the import filter takes only routes inside the pool.

Graceful restart is left out (confd turns it on): a lab's stopped BIRD should have its
routes withdrawn, not kept as stale for two minutes.
"""
from __future__ import annotations

import ipaddress

from ..model.cluster import Cluster, Node

RR_CLUSTER_ID = "244.0.0.1"       # routeReflectorClusterID as Calico's docs write it


def session_name(prefix: str, peer_ip: str) -> str:
    return f"{prefix}_{peer_ip.replace('.', '_')}"


def peers(cluster: Cluster, node: Node) -> list[tuple[str, Node, bool, bool]]:
    """[(session name, peer, passive, peer is a route-reflector client)] for this node."""
    rrs = set(cluster.config.calico.route_reflectors)
    others = [n for n in cluster.nodes if n.name != node.name]
    if not rrs:
        me = ipaddress.ip_address(node.internal_ip)
        return [(session_name("Mesh", n.internal_ip), n, ipaddress.ip_address(n.internal_ip) > me, False)
                for n in others]
    if node.name in rrs:
        return [(session_name("Node", n.internal_ip), n, False, n.name not in rrs) for n in others]
    return [(session_name("Node", n.internal_ip), n, False, False) for n in others if n.name in rrs]


def render(cluster: Cluster, node: Node) -> str:
    cfg = cluster.config
    pool = cfg.cluster_cidr
    asn = cfg.calico.as_number
    blocks = cluster.ipam.blocks_of(node.name) if cluster.ipam else [node.pod_cidr]
    hold = cfg.calico.hold_time
    out = [f"# netlab: BIRD for calico node {node.name} (as calico-node's confd writes it)",
           f"router id {node.internal_ip};",
           "log stderr { info, remote, warning, error, auth, fatal, bug };",
           "",
           "# bird_aggr.cfg: IP blocks for this host.",
           "protocol static {",
           "  ipv4;"]
    out += [f"  route {b} blackhole;" for b in blocks if not b.endswith("/32")]
    out += ["}",
            "",
            "# Aggregation of routes on this host; export the block, nothing beneath it.",
            "function calico_aggr() {"]
    for b in blocks:
        out += [f"  if ( net = {b} ) then {{ accept; }}",
                f"  if ( net ~ {b} ) then {{ reject; }}"]
    out += ["}",
            "",
            "# bird_ipam.cfg: the IP pool.",
            "filter calico_export_to_bgp_peers {",
            "  calico_aggr();",
            f"  if ( net ~ {pool} ) then {{ accept; }}",
            "  reject;",
            "}",
            "",
            "filter calico_import_from_bgp_peers {",
            f"  if ( net ~ {pool} ) then {{ accept; }}",
            "  reject;",
            "}",
            "",
            "filter calico_kernel_programming {",
            f"  if ( net ~ {pool} ) then {{ accept; }}",
            "  reject;",
            "}",
            "",
            "protocol kernel {",
            "  ipv4 { import all; export filter calico_kernel_programming; };",
            "  learn;             # the CNI plugin's /32 routes to the node's pods",
            "  persist;           # keep routes in the kernel when BIRD stops",
            "  scan time 2;",
            "  merge paths on;",
            "}",
            "",
            "protocol device {",
            "  scan time 2;",
            "}",
            "",
            "protocol direct {",
            "  ipv4;",
            '  interface -"cali*", "*";',
            "}",
            "",
            "template bgp bgp_template {",
            "  debug { states };",
            '  description "Connection to BGP peer";',
            f"  local as {asn};",
            "  multihop;",
            "  ipv4 {",
            "    gateway recursive;",
            "    import filter calico_import_from_bgp_peers;",
            "    export filter calico_export_to_bgp_peers;",
            "    add paths on;",
            "  };",
            "  connect delay time 1;",
            "  connect retry time 3;",
            "  error wait time 5,60;",
            f"  hold time {hold};",
            f"  keepalive time {max(1, hold // 3)};",
            "}",
            ""]
    rrs = cfg.calico.route_reflectors
    out.append("# ------------- Node-to-node mesh -------------" if not rrs else
               f"# ------------- Route reflectors: {', '.join(rrs)} -------------")
    for name, peer, passive, client in peers(cluster, node):
        out.append(f"protocol bgp {name} from bgp_template {{")
        out.append(f"  neighbor {peer.internal_ip} as {asn};")
        out.append(f"  source address {node.internal_ip};")
        if passive:
            out.append("  passive on; # Mesh is unidirectional, peer will connect to us.")
        if client:
            out.append("  rr client;")
            out.append(f"  rr cluster id {RR_CLUSTER_ID};")
        out.append("}")
    return "\n".join(out) + "\n"
