"""backend calico without root: lab.yaml's spec.calico, Calico IPAM blocks, the pod and node
plans, the host veth's name, and BIRD's configuration (parsed by bird itself when installed)."""
from __future__ import annotations

import hashlib
import shutil
import subprocess

import pytest

from netlab.model import names
from netlab.model.cluster import Cluster, make_nodes
from netlab.model.config import parse_lab
from netlab.model.errors import InvalidError
from netlab.model.ipam import BlockIPAM, Exhausted
from netlab.model.objects import parse_object
from netlab.plan import bird, network


def lab(nodes=2, **calico) -> Cluster:
    spec = {"backend": "calico", "nodes": nodes, "dns": False}
    if calico:
        spec["calico"] = calico
    cfg = parse_lab({"apiVersion": "netlab/v1", "kind": "Lab", "spec": spec}, default_name="c")
    return Cluster(config=cfg, nodes=make_nodes(cfg))


def pod(name, node="node1", ip=""):
    doc = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"nodeName": node, "containers": [{"name": "c", "image": "netexec"}]}}
    if ip:
        doc["status"] = {"podIP": ip}
    return parse_object(doc, "test")


# ---------------------------------------------------------------------------- lab.yaml

def test_defaults():
    c = lab()
    assert c.config.calico.as_number == 64512 and c.config.calico.block_size == 26
    assert c.config.calico.route_reflectors == [] and c.config.calico.ipip_mode == "Never"
    assert [n.pod_cidr for n in c.nodes] == ["10.244.0.64/26", "10.244.0.128/26"]


def test_round_trip_through_state():
    c = lab(3, routeReflectors=["node2"], blockSize=28, bgpHoldTime=9)
    again = parse_lab(c.config.to_dict(), default_name="c")
    assert again.calico == c.config.calico and again.node_prefix == 28


@pytest.mark.parametrize("calico, field", [
    ({"routeReflectors": ["node9"]}, "spec.calico.routeReflectors[0]"),
    ({"routeReflectors": ["node1", "node1"]}, "spec.calico.routeReflectors"),
    ({"ipipMode": "Sometimes"}, "spec.calico.ipipMode"),
    ({"blockSize": 33}, "spec.calico.blockSize"),
    ({"blockSize": 16}, "spec.calico.blockSize"),
    ({"asn": 1}, "spec.calico.asn"),
])
def test_refused(calico, field):
    with pytest.raises(InvalidError) as err:
        lab(**calico)
    assert err.value.field == field


def test_calico_section_needs_backend_calico():
    with pytest.raises(InvalidError) as err:
        parse_lab({"apiVersion": "netlab/v1", "kind": "Lab",
                   "spec": {"backend": "vxlan", "calico": {}}}, default_name="c")
    assert err.value.field == "spec.calico"


# ---------------------------------------------------------------------------- IPAM blocks

def test_blocks_claimed_in_order_and_every_address_used():
    ipam = BlockIPAM("10.244.0.0/24", 26)
    assert ipam.claim("a") == "10.244.0.64/26"      # block 0 is kept back
    got = [ipam.allocate("a") for _ in range(64)]
    assert got[0] == "10.244.0.64" and got[-1] == "10.244.0.127"     # .64 and .127 too: routed
    assert ipam.allocate("a") == "10.244.0.128"      # full: the next free block
    assert ipam.blocks_of("a") == ["10.244.0.64/26", "10.244.0.128/26"]
    assert ipam.claim("b") == "10.244.0.192/26"
    with pytest.raises(Exhausted):
        ipam.claim("c")


def test_block_of_another_node_is_not_taken():
    ipam = BlockIPAM("10.244.0.0/16", 26)
    ipam.claim("a")
    ipam.claim("b")
    assert not ipam.take("a", "10.244.0.130")        # b's block
    assert ipam.take("b", "10.244.0.130") and not ipam.take("b", "10.244.0.130")


def test_cluster_claims_blocks_and_keeps_them_across_state():
    c = lab(2)
    c.admit([pod(f"p{i}") for i in range(70)])
    assert c.ipam.blocks_of("node1") == ["10.244.0.64/26", "10.244.0.192/26"]
    assert c.pods["default/p69"].pod_ip == "10.244.0.197"
    again = Cluster.from_state(c.to_state())
    assert again.ipam.affinity == c.ipam.affinity
    again.admit([pod("q", "node2")])
    assert again.pods["default/q"].pod_ip == "10.244.0.128"
    c.remove_pod("default/p0")
    c.admit([pod("r")])
    assert c.pods["default/r"].pod_ip == "10.244.0.64"     # the first affine block with room


def test_pool_exhausted_is_one_clear_error():
    cfg = parse_lab({"apiVersion": "netlab/v1", "kind": "Lab", "spec": {
        "backend": "calico", "nodes": 1, "network": {"clusterCIDR": "10.244.0.0/27"},
        "calico": {"blockSize": 28}}}, default_name="c")
    c = Cluster(config=cfg, nodes=make_nodes(cfg))
    c.admit([pod(f"p{i}") for i in range(16)])
    with pytest.raises(InvalidError, match="no free /28 block"):
        c.admit([pod("one-more")])


# ---------------------------------------------------------------------------- plans

def test_host_veth_name_is_calicos():
    want = "cali" + hashlib.sha1(b"default.web-1").hexdigest()[:11]
    assert names.host_veth("default", "web-1", calico=True) == want and len(want) == 15
    assert names.host_veth("default", "web-1").startswith("veth")


def test_node_has_no_bridge_and_pod_is_a_routed_slash_32():
    c = lab(2)
    c.admit([pod("a")])
    node_plan = network.plan_node(c, c.nodes[0])
    assert not node_plan.links and [r.dst for r in node_plan.routes] == ["default"]
    node_part, pod_part = network.plan_pod(c, c.pods["default/a"])
    veth = names.host_veth("default", "a", calico=True)
    assert node_part.links[0].name == veth and node_part.devices[0].mac == "ee:ee:ee:ee:ee:ee"
    assert not node_part.devices[0].master and not node_part.addresses
    route = node_part.routes[0]
    assert (route.dst, route.dev, route.scope) == ("10.244.0.64/32", veth, "link")
    assert node_part.sysctls[f"net.ipv4.conf.{veth}.proxy_arp"] == "1"
    assert pod_part.addresses == [("eth0", "10.244.0.64/32")]
    r = pod_part.routes[0]
    assert (r.dst, r.via, r.dev, r.onlink) == ("default", "169.254.1.1", "eth0", True)
    assert network.pod_mtu(c) == 1500


# ---------------------------------------------------------------------------- BIRD

def test_mesh_sessions_one_per_peer_higher_address_passive():
    c = lab(3)
    got = {n.name: [(name, peer.name, passive) for name, peer, passive, _ in bird.peers(c, n)] for n in c.nodes}
    assert got["node1"] == [("Mesh_192_168_56_12", "node2", True), ("Mesh_192_168_56_13", "node3", True)]
    assert got["node3"] == [("Mesh_192_168_56_11", "node1", False), ("Mesh_192_168_56_12", "node2", False)]


def test_route_reflector_topology():
    c = lab(4, routeReflectors=["node1", "node2"])
    peers = {n.name: {(peer.name, client) for _, peer, _, client in bird.peers(c, n)} for n in c.nodes}
    assert peers["node1"] == {("node2", False), ("node3", True), ("node4", True)}
    assert peers["node3"] == {("node1", False), ("node2", False)}


def test_config_exports_blocks_and_blackholes_them():
    c = lab(2)
    c.admit([pod(f"p{i}") for i in range(65)])
    text = bird.render(c, c.nodes[0])
    assert "router id 192.168.56.11;" in text and "local as 64512;" in text
    for block in ("10.244.0.64/26", "10.244.0.192/26"):
        assert f"route {block} blackhole;" in text
        assert f"if ( net = {block} ) then {{ accept; }}" in text
    assert "protocol bgp Mesh_192_168_56_12 from bgp_template" in text
    assert "10.244.0.128/26" not in text          # node2's block is node2's to announce


def test_slash_32_blocks_are_not_blackholed():
    c = lab(2, blockSize=32)
    text = bird.render(c, c.nodes[0])
    assert "blackhole" not in text and "if ( net = 10.244.0.1/32 )" in text


@pytest.mark.skipif(not shutil.which("bird"), reason="bird2 not installed")
@pytest.mark.parametrize("rrs", [[], ["node1"]])
def test_bird_parses_the_config(tmp_path, rrs):
    c = lab(3, routeReflectors=rrs)
    for n in c.nodes:
        path = tmp_path / f"{n.name}.conf"
        path.write_text(bird.render(c, n))
        out = subprocess.run(["bird", "-p", "-c", str(path)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
