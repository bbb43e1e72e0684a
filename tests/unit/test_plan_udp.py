"""flannel's udp backend in the plan: flannel0 per node, MTUs, the subnet table flanneld reads."""
from __future__ import annotations

import ipaddress

import pytest

from netlab.model.errors import LabError
from netlab.plan import network as netplan
from netlab.runtime import daemons
from netlab.runtime.flanneld import parse_table, render_table

from .model_helpers import cluster, lab


def test_backend_udp_is_accepted_and_overrides():
    assert lab({"backend": "udp"}).backend == "udp"
    assert lab({"backend": "vxlan"}, backend_override="udp").backend == "udp"
    with pytest.raises(LabError, match="vxlan, host-gw, udp"):
        lab({"backend": "udp-gw"})


def test_each_node_gets_flannel0_and_no_vxlan_device():
    c = cluster({"backend": "udp", "nodes": 3})
    for node in c.nodes:
        plan = netplan.plan_node(c, node)
        assert [(link.name, link.kind) for link in plan.links] == [("cni0", "bridge"), ("flannel0", "tun")]
        dev = next(d for d in plan.devices if d.name == "flannel0")
        assert dev.mtu == 1500 - 28 and not dev.mac and not dev.master
        # The subnet's .0 with the cluster's prefix: the kernel's prefix route for it is the
        # cluster route `10.244.0.0/16 dev flannel0` (document 001's route table).
        assert ("flannel0", f"{node.vtep_ip}/16") in plan.addresses
        assert node.vtep_ip == str(ipaddress.ip_network(node.pod_cidr).network_address)
        # No per-node routes, neighbours or FDB entries: flanneld's table does the choosing.
        assert [r.dst for r in plan.routes] == ["default"]
        assert not plan.neighbours and not plan.fdb


def test_udp_mtus_follow_the_underlay():
    c = cluster({"backend": "udp", "network": {"mtu": 9000}})
    assert netplan.pod_mtu(c) == 9000 - 28
    node_plan = netplan.plan_node(c, c.nodes[0])
    assert {d.name: d.mtu for d in node_plan.devices}["cni0"] == 9000 - 28
    assert netplan.pod_mtu(cluster({"backend": "vxlan"})) == 1450
    assert netplan.pod_mtu(cluster({"backend": "host-gw"})) == 1500


def test_subnet_table_round_trips_and_looks_up_by_shift():
    c = cluster({"backend": "udp", "nodes": 3})
    entries = netplan.udp_subnets(c)
    assert entries == [("10.244.1.0/24", "192.168.56.11"), ("10.244.2.0/24", "192.168.56.12"),
                       ("10.244.3.0/24", "192.168.56.13")]
    text = render_table(entries)
    assert text.splitlines()[1] == "10.244.2.0/24 192.168.56.12"
    shift, table = parse_table(text, 8285)
    assert shift == 8
    dst = int(ipaddress.IPv4Address("10.244.2.77"))
    assert table[dst >> shift] == ("192.168.56.12", 8285)
    assert table.get(int(ipaddress.IPv4Address("10.244.9.1")) >> shift) is None


def test_table_with_other_node_prefix():
    c = cluster({"backend": "udp", "network": {"clusterCIDR": "10.10.0.0/20", "nodeSubnetPrefix": 26}})
    shift, table = parse_table(render_table(netplan.udp_subnets(c)))
    assert shift == 6
    second = c.nodes[1]
    probe = int(ipaddress.ip_network(second.pod_cidr).network_address) + 5
    assert table[probe >> shift][0] == second.internal_ip


def test_flanneld_is_wanted_only_for_the_udp_backend(monkeypatch, tmp_path):
    from netlab import state
    from netlab.kernel import netns
    monkeypatch.setattr(state, "STATE_ROOT", tmp_path)
    monkeypatch.setattr(netns, "is_netns", lambda name: True)
    assert not [s for s in daemons.wanted(cluster({"backend": "vxlan"})).values() if s.name == "flanneld"]
    c = cluster({"backend": "udp", "nodes": 2})
    (tmp_path / c.name).mkdir()
    specs = {k: s for k, s in daemons.wanted(c).items() if s.name == "flanneld"}
    assert sorted(specs) == ["flanneld/node1", "flanneld/node2"]
    spec = specs["flanneld/node2"]
    assert spec.entry == "netlab.runtime.flanneld:run" and spec.netns == c.nodes[1].netns
    table, ip, port, dev = spec.args
    assert (ip, port, dev) == ("192.168.56.12", "8285", "flannel0")
    assert open(table).read() == render_table(netplan.udp_subnets(c))
