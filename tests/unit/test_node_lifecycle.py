"""Nodes joining and leaving a running lab, the pure part: who the new node is (name, number,
address, subnet or first IPAM block), the refusals (one line each, naming the field), the
drain, and what the other namespaces' routing must change (plan/nodedelta.py)."""
from __future__ import annotations

import pytest

from netlab.model import nodes
from netlab.model.cluster import Cluster
from netlab.model.errors import InvalidError, NotFoundError, StateError
from netlab.model.objects import parse_object
from netlab.plan import nodedelta
from netlab.plan.network import Route

from .model_helpers import cluster, pod_doc, raises_at


def add(c: Cluster, name=None, labels=None):
    return nodes.add(c, name, labels)


def rc_doc(replicas: int) -> dict:
    return {"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "web"},
            "spec": {"replicas": replicas, "selector": {"app": "web"},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "netexec"}]}}}}


def test_new_node_takes_the_next_number_address_and_subnet():
    c = cluster()
    node = add(c)
    assert (node.name, node.index, node.internal_ip, node.pod_cidr) == \
        ("node3", 3, "192.168.56.13", "10.244.3.0/24")
    assert node.netns == "netlab-unit.node-node3"
    assert add(c, "gpu", {"accel": "yes"}).labels["accel"] == "yes"
    # New pods go to the least loaded node: an empty new one.
    c.admit([parse_object(pod_doc("p1"), "t"), parse_object(pod_doc("p2"), "t"),
             parse_object(pod_doc("p3"), "t")])
    assert {p.spec.node_name for p in c.pods.values()} == {"node1", "node2", "node3"}
    assert c.pod("p3").pod_ip == "10.244.3.2"


def test_a_node_keeps_its_number_when_another_leaves_and_through_state():
    c = cluster({"nodes": 3})
    nodes.drain(c, "node2")
    again = Cluster.from_state(c.to_state())
    assert [(n.name, n.index, n.internal_ip, n.pod_cidr) for n in again.nodes] == [
        ("node1", 1, "192.168.56.11", "10.244.1.0/24"), ("node3", 3, "192.168.56.13", "10.244.3.0/24")]
    # The lowest free number is handed out again (name and number are independent).
    node = add(again, "edge")
    assert (node.index, node.internal_ip) == (2, "192.168.56.12")
    # Its age counts from when it joined (the others': the lab's, 0 here).
    assert node.created > 0 and Cluster.from_state(again.to_state()).node("edge").created == node.created
    assert again.node("node1").created == 0.0
    assert nodes.default_name(again) == "node2"


def test_calico_new_node_skips_a_block_another_node_holds():
    c = cluster({"backend": "calico", "calico": {"blockSize": 30}})   # 4 addresses per block
    for i in range(5):                    # node1's block 1 fills up: it claims block 3
        c.admit([parse_object(pod_doc(f"p{i}", nodeName="node1"), "t")])
    assert c.ipam.blocks_of("node1") == ["10.244.0.4/30", "10.244.0.12/30"]
    node = add(c)
    assert (node.index, node.pod_cidr) == (4, "10.244.0.16/30")
    assert c.ipam.blocks_of("node3") == ["10.244.0.16/30"]
    # Leaving frees its blocks.
    nodes.drain(c, "node3")
    assert "10.244.0.16/30" not in c.ipam.affinity


@pytest.mark.parametrize("spec, count, field, fragment", [
    ({"nodes": 1, "network": {"clusterCIDR": "10.244.0.0/23"}}, 0, "spec.network.nodeSubnetPrefix",
     "clusterCIDR 10.244.0.0/23 has 1 usable /24 node subnets, all taken"),
    ({"nodes": 4, "network": {"underlayCIDR": "192.168.56.0/28"}}, 0, "spec.network.underlayCIDR",
     "underlay 192.168.56.0/28 holds 4 node addresses from offset 10"),
    ({"nodes": 3, "backend": "calico", "network": {"clusterCIDR": "10.244.0.0/24"}}, 0,
     "spec.calico.blockSize", "every /26 block of the IP pool 10.244.0.0/24 is held"),
])
def test_no_room_for_another_node_is_one_line_naming_the_field(spec, count, field, fragment):
    c = cluster(spec)
    before = c.to_state()
    raises_at(lambda: nodes.new_node(c), "lab.yaml", "Lab", field, "no room for another node", fragment)
    assert c.to_state() == before


def test_bad_new_node_names_and_labels_are_refused():
    c = cluster()
    raises_at(lambda: nodes.new_node(c, "node1"), None, "Node/node1", "metadata.name", "already exists")
    raises_at(lambda: nodes.new_node(c, "Node_3"), None, "Node/Node_3", "metadata.name", "RFC 1123")
    raises_at(lambda: nodes.new_node(c, "n" * 31), None, "Node/" + "n" * 31, "metadata.name",
              "no more than 30 characters")
    raises_at(lambda: nodes.new_node(c, "ok", {"a": "b c"}), None, "Node/ok", "metadata.labels[a]", "label")


def test_refusals_to_remove():
    c = cluster()
    with pytest.raises(NotFoundError, match=r'^nodes "node9" not found \(nodes: node1, node2\)$'):
        nodes.drain(c, "node9")
    nodes.drain(c, "node2")
    with pytest.raises(StateError, match="node node1 is the lab's last node"):
        nodes.drain(c, "node1")
    rr = cluster({"nodes": 3, "backend": "calico", "calico": {"routeReflectors": ["node1"]}})
    with pytest.raises(StateError, match=r"node node1 is a BGP route reflector \(spec.calico.routeReflectors\)"):
        nodes.drain(rr, "node1")
    assert len(rr.nodes) == 3
    assert nodes.drain(rr, "node2") == []


def test_drain_deletes_pods_and_controllers_replace_them_elsewhere():
    c = cluster({"nodes": 3})
    c.admit([parse_object(rc_doc(3), "t"), parse_object(pod_doc("bare", nodeName="node3"), "t")])
    on3 = {p.meta.key for p in c.pods_on("node3")}
    assert "default/bare" in on3 and len(on3) == 2
    gone = nodes.drain(c, "node3")
    assert set(gone) == on3
    assert "default/bare" not in c.pods                       # nobody recreates a bare pod
    assert len(c.rc_pods(c.rcs["default/web"])) == 3          # the RC's replacement ...
    assert {p.spec.node_name for p in c.pods.values()} == {"node1", "node2"}    # ... elsewhere
    assert "node3" not in {s.name for s in c.config.nodes}


def test_node_of_request():
    assert nodes.node_of_request(None) == (None, {})
    assert nodes.node_of_request({"kind": "Node", "metadata": {"name": "n4", "labels": {"a": "b"}}}) == \
        ("n4", {"a": "b"})
    with pytest.raises(InvalidError, match="kind: Invalid value: 'Pod': must be a v1 Node"):
        nodes.node_of_request({"kind": "Pod"})
    with pytest.raises(InvalidError, match="metadata.taints: unknown field"):
        nodes.node_of_request({"kind": "Node", "metadata": {"taints": []}})


def _delta(c_old: Cluster, c_new: Cluster) -> dict:
    return {d.netns: d for d in nodedelta.between(c_old, c_new)}


def test_delta_vxlan_other_nodes_learn_the_new_vtep_and_forget_it_again():
    old = cluster()
    new = Cluster.from_state(old.to_state())
    n3 = add(new)
    there = _delta(old, new)
    assert set(there) == {"netlab-unit.underlay", "netlab-unit.node-node1", "netlab-unit.node-node2"}
    n1 = there["netlab-unit.node-node1"]
    assert n1.add.routes == [Route("10.244.3.0/24", via="10.244.3.0", dev="flannel.1", onlink=True)]
    assert [(n.ip, n.mac) for n in n1.add.neighbours] == [("10.244.3.0", n3.vtep_mac)]
    assert [(f.mac, f.dst) for f in n1.add.fdb] == [(n3.vtep_mac, "192.168.56.13")]
    assert not (n1.remove.routes or n1.remove.neighbours or n1.remove.fdb)
    lb = there["netlab-unit.underlay"].add.routes
    assert lb == [Route("198.51.100.0/28", multipath=["192.168.56.11", "192.168.56.12", "192.168.56.13"])]
    back = _delta(new, old)
    assert back["netlab-unit.node-node1"].remove.routes == n1.add.routes
    assert back["netlab-unit.node-node1"].remove.fdb == n1.add.fdb
    assert back["netlab-unit.underlay"].add.routes[0].multipath == ["192.168.56.11", "192.168.56.12"]
    assert "netlab-unit.node-node3" not in back       # its namespace goes whole


def test_delta_host_gw_and_calico():
    old = cluster({"backend": "host-gw"})
    new = Cluster.from_state(old.to_state())
    add(new)
    assert _delta(old, new)["netlab-unit.node-node2"].add.routes == [
        Route("10.244.3.0/24", via="192.168.56.13", dev="eth0")]
    # calico and udp: only the load balancer's route; BIRD and flanneld follow the node set.
    for backend in ("calico", "udp"):
        old = cluster({"backend": backend})
        new = Cluster.from_state(old.to_state())
        add(new)
        assert list(_delta(old, new)) == ["netlab-unit.underlay"]


def test_calico_new_node_peers_as_the_topology_says():
    """Mesh: the new node peers with everyone and everyone with it. With route reflectors: it
    peers with the reflectors only, and they take it as a client."""
    from netlab.plan.bird import render
    mesh = cluster({"backend": "calico"})
    n3 = add(mesh)
    assert "neighbor 192.168.56.13 as 64512;" in render(mesh, mesh.node("node1"))
    text = render(mesh, n3)
    assert "neighbor 192.168.56.11" in text and "neighbor 192.168.56.12" in text
    assert f"route {n3.pod_cidr} blackhole;" in text
    rr = cluster({"nodes": 3, "backend": "calico", "calico": {"routeReflectors": ["node1"]}})
    n4 = add(rr)
    text = render(rr, n4)
    assert "neighbor 192.168.56.11" in text and "neighbor 192.168.56.12" not in text
    reflector = render(rr, rr.node("node1"))
    assert "protocol bgp Node_192_168_56_14 from bgp_template {\n  neighbor 192.168.56.14 as 64512;" in reflector
    assert reflector.split("Node_192_168_56_14", 1)[1].split("}")[0].count("rr client;") == 1
    assert "192.168.56.14" not in render(rr, rr.node("node2"))


def test_the_kubernetes_service_endpoints_follow_the_nodes():
    """default/kubernetes's endpoints are the nodes' API listeners: a node that leaves is no
    longer one, a node that joins is; Endpoints a lab wrote itself are left alone."""
    from netlab.model.addons import KUBERNETES_SOURCE, kubernetes_service
    c = cluster({"nodes": 3})
    c.admit([parse_object(d, KUBERNETES_SOURCE) for d in kubernetes_service(c.config, c.nodes)])

    def ips(cl):
        return [a["ip"] for a in cl.endpoints["default/kubernetes"].meta.raw["subsets"][0]["addresses"]]
    assert ips(c) == ["192.168.56.11", "192.168.56.12", "192.168.56.13"]
    nodes.drain(c, "node2")
    c = Cluster.from_state(c.to_state())
    assert ips(c) == ["192.168.56.11", "192.168.56.13"]
    add(c, "edge")
    assert ips(c) == ["192.168.56.11", "192.168.56.13", "192.168.56.12"]
    c.endpoints["default/kubernetes"].meta.source = "mine.yaml"
    nodes.drain(c, "edge")
    assert ips(c) == ["192.168.56.11", "192.168.56.13", "192.168.56.12"]


def test_the_underlay_bridge_has_a_fixed_mac():
    """Left to itself a bridge takes its ports' lowest MAC: a node joining or leaving would
    change the router's MAC under the other nodes' ARP entries. Its own, stable per lab."""
    from netlab.plan.network import UNDERLAY_BRIDGE, plan_underlay
    macs = [d.mac for d in plan_underlay(cluster()).devices if d.name == UNDERLAY_BRIDGE]
    assert len(macs) == 1 and macs == [d.mac for d in plan_underlay(cluster({"nodes": 5})).devices
                                       if d.name == UNDERLAY_BRIDGE]
    first = int(macs[0].split(":")[0], 16)
    assert first & 0b10 and not first & 0b1          # locally administered, unicast


def test_delta_canal_is_flannels():
    """Canal (Calico's pod wiring over flannel): the other nodes learn the new subnet as
    flannel routes it, through flannel.1; no cni0 anywhere."""
    old = cluster({"backend": "vxlan", "networkPolicy": "calico"})
    new = Cluster.from_state(old.to_state())
    add(new)
    delta = _delta(old, new)["netlab-unit.node-node1"]
    assert delta.add.routes == [Route("10.244.3.0/24", via="10.244.3.0", dev="flannel.1", onlink=True)]
    assert len(delta.add.neighbours) == len(delta.add.fdb) == 1
