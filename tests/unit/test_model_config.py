"""netlab.model.config: lab.yaml, its defaults, overrides and the address-plan checks."""
from __future__ import annotations

import ipaddress

import pytest
import yaml

from netlab.model.cluster import make_nodes
from netlab.model.config import LabConfig, parse_lab
from netlab.model.errors import InvalidError

from .model_helpers import GUESTBOOK, check_error, lab

L = "labs/x/lab.yaml"


def bad(spec=None, field="", *fragments, doc=None, **kw) -> str:
    with pytest.raises(InvalidError) as info:
        if doc is not None:
            parse_lab(doc, default_name="x", file=L, **kw)
        else:
            lab(spec, file=L, **kw)
    return check_error(info.value, L, "Lab", field, *fragments)


def net(**fields) -> dict:
    return {"network": fields}


def test_defaults_without_lab_yaml():
    cfg = parse_lab(None, default_name="mylab")
    assert cfg.name == "mylab" and [n.name for n in cfg.nodes] == ["node1", "node2"]
    assert (cfg.backend, cfg.proxy_mode) == ("vxlan", "iptables")
    assert (cfg.cluster_cidr, cfg.node_prefix) == ("10.244.0.0/16", 24)
    assert (cfg.service_cidr, cfg.dns_ip, cfg.dns_domain) == ("10.96.0.0/12", "10.96.0.10", "cluster.local")
    assert (cfg.underlay_cidr, cfg.node_ip_offset) == ("192.168.56.0/24", 10)
    assert cfg.nodeport_range == (30000, 32767)
    assert (cfg.mtu, cfg.vxlan_vni, cfg.vxlan_port) == (1500, 1, 8472)


def test_guestbook_lab_yaml():
    doc = yaml.safe_load((GUESTBOOK / "lab.yaml").read_text())
    cfg = parse_lab(doc, default_name="ignored", file="labs/guestbook/lab.yaml")
    assert cfg.name == "guestbook" and len(cfg.nodes) == 2
    assert cfg.backend == "vxlan" and cfg.proxy_mode == "iptables"
    assert cfg.source == "labs/guestbook/lab.yaml"


def test_node_list_with_labels_and_plain_names():
    cfg = lab({"nodes": [{"name": "alpha", "labels": {"disk": "ssd", "zone": 1}}, "beta"]})
    assert [(n.name, n.labels) for n in cfg.nodes] == [("alpha", {"disk": "ssd", "zone": "1"}),
                                                      ("beta", {})]


def test_overrides_win_over_the_file():
    cfg = lab({"nodes": 2, "backend": "vxlan"}, nodes_override=3, name_override="other",
              backend_override="host-gw", proxy_override="iptables")
    assert (cfg.name, len(cfg.nodes), cfg.backend, cfg.proxy_mode) == ("other", 3, "host-gw", "iptables")
    bad({}, "spec.proxyMode", "Invalid value: 'ipvs'", proxy_override="ipvs")
    bad({}, "spec.backend", "Invalid value: 'ipip'", backend_override="ipip")


def test_network_settings_are_read():
    cfg = lab(net(clusterCIDR="172.16.0.0/16", nodeSubnetPrefix=26, serviceCIDR="10.0.0.0/16",
                  dnsServiceIP="10.0.0.53", dnsDomain="lab.example", underlayCIDR="10.10.0.0/24",
                  nodeIPOffset=100, nodePortRange="31000-31010", loadBalancerPool="198.51.100.64/27",
                  internetCIDR="192.0.2.0/24", mtu=9000, vxlanVNI=42, vxlanPort=4789))
    assert (cfg.cluster_cidr, cfg.node_prefix, cfg.service_cidr) == ("172.16.0.0/16", 26, "10.0.0.0/16")
    assert (cfg.dns_ip, cfg.dns_domain, cfg.node_ip_offset) == ("10.0.0.53", "lab.example", 100)
    assert cfg.nodeport_range == (31000, 31010) and cfg.lb_pool == "198.51.100.64/27"
    assert (cfg.mtu, cfg.vxlan_vni, cfg.vxlan_port) == (9000, 42, 4789)
    nodes = make_nodes(cfg)
    assert [n.internal_ip for n in nodes] == ["10.10.0.101", "10.10.0.102"]
    assert [n.pod_cidr for n in nodes] == ["172.16.0.64/26", "172.16.0.128/26"]


def test_to_dict_round_trips():
    cfg = lab({"nodes": [{"name": "a", "labels": {"x": "1"}}, "b"], "backend": "host-gw",
               **net(clusterCIDR="10.200.0.0/16", nodePortRange="30500-30600", mtu=1450)})
    again = parse_lab(cfg.to_dict(), default_name="zzz", file=cfg.source)
    assert again == cfg


# ---------------------------------------------------------------------------- the envelope


@pytest.mark.parametrize("doc,field,why", [
    ({"apiVersion": "netlab/v1", "kind": "Cluster"}, "kind", "must have kind: Lab"),
    ({"apiVersion": "v1", "kind": "Lab"}, "apiVersion", "Invalid value: 'v1': must be one of netlab/v1"),
    ({"apiVersion": "netlab/v1", "kind": "Lab", "spec": [1]}, "spec", "must be mappings"),
    ({"apiVersion": "netlab/v1", "kind": "Lab", "metadata": {"name": "Bad_Lab"}}, "metadata.name",
     "Invalid value: 'Bad_Lab'"),
    ({"apiVersion": "netlab/v1", "kind": "Lab", "spec": {"node": 3}}, "spec.node", "unknown field"),
])
def test_bad_envelope(doc, field, why):
    bad(field=field, doc=doc)
    assert why in bad(field=field, doc=doc)


def test_not_a_mapping():
    with pytest.raises(InvalidError) as info:
        parse_lab(["x"], default_name="x", file=L)
    check_error(info.value, L, "Lab", None, "must be a mapping")


# ---------------------------------------------------------------------------- nodes, backend, proxy


@pytest.mark.parametrize("nodes,field,why", [
    (0, "spec.nodes", "Invalid value: 0: must be an integer between 1 and 250"),
    (251, "spec.nodes", "between 1 and 250"),
    (True, "spec.nodes", "node count or a non-empty list"),
    ("3", "spec.nodes", "node count or a non-empty list"),
    ([], "spec.nodes", "node count or a non-empty list"),
    ([{"labels": {}}], "spec.nodes[0].name", "Required value"),
    (["Node1"], "spec.nodes[0].name", "Invalid value: 'Node1'"),
    (["n" * 31], "spec.nodes[0].name", "no more than 30"),
    (["a", "b", "a"], "spec.nodes[2].name", "Duplicate value"),
    ([{"name": "a", "labels": ["x"]}], "spec.nodes[0].labels", "must be a mapping"),
])
def test_bad_nodes(nodes, field, why):
    bad({"nodes": nodes}, field, why)


def test_bad_node_count_override():
    bad({}, "spec.nodes", "between 1 and 250", nodes_override=0)


@pytest.mark.parametrize("spec,field", [({"backend": "udp-tunnel"}, "spec.backend"),
                                        ({"proxyMode": "ipvs"}, "spec.proxyMode")])
def test_bad_backend_and_proxy(spec, field):
    bad(spec, field, "supported values")


# ---------------------------------------------------------------------------- the address plan


@pytest.mark.parametrize("field,value,why", [
    ("clusterCIDR", "banana", "not a valid IPv4 CIDR"),
    ("clusterCIDR", "10.244.0.0/33", "not a valid IPv4 CIDR"),
    ("clusterCIDR", "10.244.0.1/16", "has host bits set"),
    ("serviceCIDR", "300.96.0.0/12", "not a valid IPv4 CIDR"),
    ("underlayCIDR", "fd00::/64", "only IPv4 is supported"),
    ("loadBalancerPool", "", "not a valid IPv4 CIDR"),
    ("internetCIDR", None, "not a valid IPv4 CIDR"),
])
def test_invalid_cidr_strings(field, value, why):
    bad(net(**{field: value}), f"spec.network.{field}", why,
        *([f"Invalid value: {value!r}"] if value is not None else []))


def test_unknown_network_field():
    bad(net(podCIDR="10.1.0.0/16"), "spec.network.podCIDR", "unknown field", "clusterCIDR")


@pytest.mark.parametrize("fields,field,other", [
    ({"serviceCIDR": "10.244.128.0/17", "dnsServiceIP": "10.244.128.10"}, "serviceCIDR",
     "clusterCIDR 10.244.0.0/16"),
    ({"clusterCIDR": "10.96.0.0/16"}, "serviceCIDR", "clusterCIDR 10.96.0.0/16"),
    ({"underlayCIDR": "10.244.7.0/24"}, "underlayCIDR", "clusterCIDR"),
    ({"internetCIDR": "192.168.0.0/16"}, "internetCIDR", "underlayCIDR 192.168.56.0/24"),
    ({"loadBalancerPool": "10.100.0.0/28"}, "loadBalancerPool", "serviceCIDR 10.96.0.0/12"),
    ({"loadBalancerPool": "203.0.113.0/28"}, "loadBalancerPool", "internetCIDR 203.0.113.0/24"),
])
def test_overlapping_cidrs(fields, field, other):
    bad(net(**fields), f"spec.network.{field}", f"overlaps {other}")


def test_too_many_nodes_for_the_cluster_cidr():
    # A /22 has four /24s, but the first one is never handed out: node i gets subnet i.
    cfg = lab({"nodes": 3, **net(clusterCIDR="10.244.0.0/22")})
    assert [n.pod_cidr for n in make_nodes(cfg)] == ["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"]
    bad({"nodes": 4, **net(clusterCIDR="10.244.0.0/22")}, "spec.nodes",
        "4 nodes do not fit: clusterCIDR 10.244.0.0/22 has only 3 usable /24 node subnets")
    bad({"nodes": 2, **net(clusterCIDR="10.244.0.0/16", nodeSubnetPrefix=17)}, "spec.nodes",
        "only 1 usable /17")


def test_smallest_cluster_cidr():
    cfg = lab({"nodes": 1, **net(clusterCIDR="10.244.0.0/28", nodeSubnetPrefix=29)})
    assert make_nodes(cfg)[0].pod_cidr == "10.244.0.8/29"
    bad({"nodes": 1, **net(clusterCIDR="10.244.0.0/29")}, "spec.network.clusterCIDR",
        "Invalid value: '10.244.0.0/29': too small")
    bad({"nodes": 1, **net(clusterCIDR="10.244.0.0/32")}, "spec.network.clusterCIDR", "too small")


@pytest.mark.parametrize("prefix,why", [(16, "between 17 and 29"), (30, "between 17 and 29"),
                                        ("24", "must be an integer")])
def test_bad_node_subnet_prefix(prefix, why):
    bad(net(nodeSubnetPrefix=prefix), "spec.network.nodeSubnetPrefix", why)


def test_node_count_vs_underlay():
    # .1 router, .2 client, nodes from .offset+1; the broadcast address is not a node's.
    cfg = lab({"nodes": 4, **net(underlayCIDR="10.10.0.0/28")})
    assert [n.internal_ip for n in make_nodes(cfg)][-1] == "10.10.0.14"
    bad({"nodes": 5, **net(underlayCIDR="10.10.0.0/28")}, "spec.nodes",
        "5 nodes from offset 10 do not fit in underlay 10.10.0.0/28")
    assert len(lab({"nodes": 244}).nodes) == 244
    bad({"nodes": 245}, "spec.nodes", "do not fit in underlay 192.168.56.0/24")
    bad({"nodes": 6, **net(underlayCIDR="10.10.0.0/28", nodeIPOffset=9)}, "spec.nodes", "offset 9")


def test_node_addresses_never_take_router_or_client():
    ips = [n.internal_ip for n in make_nodes(lab({"nodes": 3, **net(nodeIPOffset=2)}))]
    assert ips == ["192.168.56.3", "192.168.56.4", "192.168.56.5"]
    bad(net(nodeIPOffset=1), "spec.network.nodeIPOffset", "Invalid value: 1: must be an integer between 2")
    bad(net(nodeIPOffset=251), "spec.network.nodeIPOffset", "between 2 and 250")


@pytest.mark.parametrize("dns,why", [
    ("10.97.0.10", "must be inside serviceCIDR 10.96.0.0/16"),
    ("10.96.0.300", "not a valid IPv4 address"),
    ("dns", "not a valid IPv4 address"),
    ("10.96.0.0", "must not be the network, broadcast or first address"),
    ("10.96.0.1", "kubernetes service"),
    ("10.96.255.255", "must not be the network, broadcast or first address"),
])
def test_bad_dns_service_ip(dns, why):
    bad(net(serviceCIDR="10.96.0.0/16", dnsServiceIP=dns), "spec.network.dnsServiceIP",
        f"Invalid value: {dns!r}", why)


@pytest.mark.parametrize("domain", ["Cluster.Local", "cluster..local", "-x.local", ""])
def test_bad_dns_domain(domain):
    bad(net(dnsDomain=domain), "spec.network.dnsDomain")


@pytest.mark.parametrize("npr", ["32767-30000", "abc", "0-100", 30000, "30000-70000", "1-2-3", "30000-"])
def test_bad_node_port_range(npr):
    bad(net(nodePortRange=npr), "spec.network.nodePortRange", f"Invalid value: {str(npr)!r}",
        "must look like 30000-32767")


@pytest.mark.parametrize("field,value,why", [
    ("mtu", 1279, "between 1280 and 9000"), ("mtu", 9001, "between 1280 and 9000"),
    ("mtu", "1500", "must be an integer"), ("vxlanVNI", 0, "between 1 and 16777215"),
    ("vxlanVNI", 2 ** 24, "between 1 and 16777215"), ("vxlanPort", 65536, "between 1 and 65535"),
])
def test_bad_numbers(field, value, why):
    bad(net(**{field: value}), f"spec.network.{field}", why)


def test_network_must_be_a_mapping():
    bad({"network": ["clusterCIDR"]}, "spec.network", "must be a mapping")


def test_every_default_address_range_is_disjoint():
    cfg = LabConfig(name="x", nodes=[])
    nets = [ipaddress.ip_network(c) for c in (cfg.cluster_cidr, cfg.service_cidr, cfg.underlay_cidr,
                                              cfg.lb_pool, cfg.internet_cidr)]
    assert not any(a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1:])
