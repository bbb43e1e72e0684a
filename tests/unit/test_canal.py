"""Canal without root: lab.yaml's spec.networkPolicy, and the plans of a flannel backend whose
pods Calico's CNI plugin wires (no cni0, cali veths, /32 routes) while flannel keeps the
cross-node part (flannel.1 / flannel0 / host-gw routes) and its masquerade rules."""
from __future__ import annotations

import pytest

from netlab.model import names
from netlab.model.cluster import Cluster, make_nodes
from netlab.model.config import parse_lab
from netlab.model.errors import InvalidError
from netlab.model.objects import parse_object
from netlab.plan import kubeproxy, netpol, network

from .model_helpers import check_error

L = "labs/canal/lab.yaml"


def config(backend="vxlan", **spec):
    doc = {"apiVersion": "netlab/v1", "kind": "Lab", "spec": {"backend": backend, "nodes": 2, **spec}}
    return parse_lab(doc, default_name="c", file=L)


def lab(backend="vxlan", **spec) -> Cluster:
    cfg = config(backend, networkPolicy="calico", dns=False, **spec)
    return Cluster(config=cfg, nodes=make_nodes(cfg))


def pod(name, node="node1"):
    return parse_object({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
                         "spec": {"nodeName": node, "containers": [{"name": "c", "image": "netexec"}]}}, "test")


# ---------------------------------------------------------------------------- lab.yaml

@pytest.mark.parametrize("backend", ["vxlan", "host-gw", "udp"])
def test_network_policy_calico_on_a_flannel_backend_is_canal(backend):
    cfg = config(backend, networkPolicy="calico")
    assert cfg.canal and cfg.calico_pods and cfg.network_policy == "calico"
    again = parse_lab(cfg.to_dict(), default_name="x")
    assert again.network_policy == "calico" and again.canal and again.backend == backend
    assert cfg.to_dict()["spec"]["networkPolicy"] == "calico"


def test_without_the_field_flannel_stays_plain():
    cfg = config("vxlan")
    assert not cfg.canal and not cfg.calico_pods and "networkPolicy" not in cfg.to_dict()["spec"]


def test_backend_calico_implies_it():
    cfg = config("calico", networkPolicy="calico")
    assert cfg.calico_pods and not cfg.canal and "networkPolicy" not in cfg.to_dict()["spec"]
    # `up --backend calico` on a Canal lab is a calico lab, not an error.
    doc = {"apiVersion": "netlab/v1", "kind": "Lab", "spec": {"networkPolicy": "calico"}}
    assert parse_lab(doc, default_name="c", backend_override="calico").calico_pods


@pytest.mark.parametrize("value", ["Calico", "cilium", True, {"provider": "calico"}, ""])
def test_bad_values_are_one_line_naming_file_and_field(value):
    with pytest.raises(InvalidError) as info:
        config("vxlan", networkPolicy=value)
    check_error(info.value, L, "Lab", "spec.networkPolicy", "supported values: calico")


def test_spec_calico_still_needs_backend_calico():
    with pytest.raises(InvalidError) as info:
        config("vxlan", networkPolicy="calico", calico={"asNumber": 65000})
    check_error(info.value, L, "Lab", "spec.calico", "only for backend: calico")


# ---------------------------------------------------------------------------- plans

@pytest.mark.parametrize("backend", ["vxlan", "host-gw", "udp"])
def test_node_has_no_bridge_and_keeps_flannels_part(backend):
    c, plain = lab(backend), Cluster(config=config(backend, dns=False), nodes=make_nodes(config(backend)))
    n1, n2 = c.nodes
    node_plan = network.plan_node(c, n1)
    links = [link.name for link in node_plan.links]
    assert network.POD_BRIDGE not in links and all(dev != network.POD_BRIDGE for dev, _ in node_plan.addresses)
    # Everything flannel builds is as on the plain backend: only the bridge is gone.
    flannel = network.plan_node(plain, plain.nodes[0])
    assert [x for x in flannel.links if x.name != network.POD_BRIDGE] == node_plan.links
    assert [a for a in flannel.addresses if a[0] != network.POD_BRIDGE] == node_plan.addresses
    assert flannel.routes == node_plan.routes and flannel.fdb == node_plan.fdb
    routes = {r.dst: r for r in node_plan.routes}
    assert n1.pod_cidr not in routes                 # own subnet: only its pods' /32s
    if backend == "vxlan":
        r = routes[n2.pod_cidr]
        assert (r.dev, r.via, r.onlink) == (network.VXLAN_DEV, n2.vtep_ip, True)
        assert (network.VXLAN_DEV, f"{n1.vtep_ip}/32") in node_plan.addresses
    elif backend == "host-gw":
        assert (routes[n2.pod_cidr].dev, routes[n2.pod_cidr].via) == ("eth0", n2.internal_ip)
    else:
        # flannel0's prefix route covers the cluster CIDR; the local /32s are longer and win.
        assert (network.TUN_DEV, f"{n1.vtep_ip}/16") in node_plan.addresses


def test_pod_is_wired_as_calico_wires_it_from_the_nodes_flannel_subnet():
    c = lab("vxlan")
    c.admit([pod("a"), pod("b", "node2")])
    a = c.pods["default/a"]
    assert a.pod_ip == "10.244.1.2"                   # host-local on node1's flannel subnet
    node_part, pod_part = network.plan_pod(c, a)
    veth = names.host_veth("default", "a", calico=True)
    assert veth.startswith("cali") and len(veth) == 15
    assert node_part.links[0].name == veth and node_part.devices[0].mac == network.CALICO_HOST_MAC
    assert not node_part.devices[0].master and not node_part.devices[0].hairpin
    route = node_part.routes[0]
    assert (route.dst, route.dev, route.scope) == ("10.244.1.2/32", veth, "link")
    assert node_part.sysctls[f"net.ipv4.conf.{veth}.proxy_arp"] == "1"
    assert pod_part.addresses == [("eth0", "10.244.1.2/32")]
    r = pod_part.routes[0]
    assert (r.dst, r.via, r.dev, r.onlink) == ("default", network.CALICO_GATEWAY, "eth0", True)
    assert pod_part.devices[0].mtu == node_part.devices[0].mtu == 1450      # VXLAN's overhead


def test_felix_chains_name_the_cali_veths_and_flannel_masquerades_its_subnet():
    c = lab("vxlan")
    c.admit([pod("a"), parse_object({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                     "metadata": {"name": "deny"}, "spec": {"podSelector": {}}}, "test")])
    veth = names.host_veth("default", "a", calico=True)
    text = netpol.render_node(c, c.nodes[0]).text()
    assert f"-A cali-to-wl-dispatch -o {veth} -g cali-tw-{veth}" in text and "Drop if no policies" in text
    rules = kubeproxy.render_node_rules(c, c.nodes[0])
    # flanneld --ip-masq as canal.yaml runs it: the node's own subnet, not the whole pool.
    assert f"-A FLANNEL-POSTRTG -s {c.nodes[0].pod_cidr} -d 10.244.0.0/16" in rules


def test_cli_up_says_what_is_wrong_in_one_line_and_exits_non_zero(tmp_path):
    """As a user types it: nothing is built, one line names the file and the field."""
    import subprocess
    import sys
    (tmp_path / "lab.yaml").write_text("apiVersion: netlab/v1\nkind: Lab\nmetadata: {name: cn-bad}\n"
                                       "spec: {backend: vxlan, networkPolicy: cilium}\n")
    done = subprocess.run([sys.executable, "-m", "netlab", "up", str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "lab.yaml" in lines[0] and "spec.networkPolicy" in lines[0], done.stderr
    assert "supported values: calico" in lines[0]


@pytest.mark.parametrize("backend, spec", [("vxlan", {"networkPolicy": "calico"}), ("calico", {})])
def test_userspace_proxy_refused_with_calico_wiring(backend, spec):
    """Its REDIRECT needs an address on the interface a pod's packet came in on; a cali veth
    has none (a real lab timed out on every Service)."""
    with pytest.raises(InvalidError) as info:
        config(backend, proxyMode="userspace", **spec)
    check_error(info.value, L, "Lab", "spec.proxyMode", "cali veths have none", "use proxyMode: iptables")
    assert config("vxlan", proxyMode="userspace").proxy_mode == "userspace"     # plain flannel: fine


def test_readme_lab_yaml_snippet_is_canal():
    """Docs are code: the README's Canal snippet parses to a Canal lab, on each backend it names."""
    from pathlib import Path

    import yaml
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    snippet = readme.split("## Canal: flannel between nodes")[1].split("```yaml\n")[1].split("```")[0]
    spec = yaml.safe_load(snippet)["spec"]
    assert spec == {"backend": "vxlan", "networkPolicy": "calico"}
    for backend in ("vxlan", "host-gw", "udp"):           # "or host-gw, udp"
        cfg = parse_lab({"apiVersion": "netlab/v1", "kind": "Lab", "spec": {**spec, "backend": backend}},
                        default_name="c")
        assert cfg.canal and cfg.backend == backend
