"""NetworkPolicy without root: parsing as the API server validates, the meaning (decide), and
the Felix-style compiler's chains, rules and ipsets."""
from __future__ import annotations

import pytest
import yaml

from netlab.model.cluster import Cluster, make_nodes
from netlab.model.config import parse_lab
from netlab.model.errors import InvalidError
from netlab.model.netpol import decide
from netlab.model.objects import parse_object
from netlab.plan import netpol

PODS = """
apiVersion: v1
kind: Namespace
metadata: {name: team-a, labels: {team: a}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec: {nodeName: node1, containers: [{name: c, image: netexec, ports: [{containerPort: 8080, name: http}, {containerPort: 9090}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {role: client}}
spec: {nodeName: node2, containers: [{name: c, image: netexec}]}
---
apiVersion: v1
kind: Pod
metadata: {name: a1, namespace: team-a, labels: {role: client}}
spec: {nodeName: node2, containers: [{name: c, image: netexec}]}
"""


def policy(spec: dict, name: str = "p", namespace: str = "default"):
    return parse_object({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                         "metadata": {"name": name, "namespace": namespace}, "spec": spec}, "test")


def cluster(*policies) -> Cluster:
    cfg = parse_lab({"apiVersion": "netlab/v1", "kind": "Lab", "spec": {"backend": "calico", "nodes": 2}},
                    default_name="c")
    c = Cluster(config=cfg, nodes=make_nodes(cfg))
    c.admit([parse_object(d, "test") for d in yaml.safe_load_all(PODS)] + list(policies))
    return c


def allowed(c: Cluster, src: str, dst: str, port: int, src_ns="default", dst_ns="default") -> bool:
    s, d = c.pod(src, src_ns), c.pod(dst, dst_ns)
    return decide(c, s.pod_ip, s, d.pod_ip, d, port).allowed


# ---------------------------------------------------------------------------- parsing

def test_policy_types_default_and_round_trip():
    p = policy({"podSelector": {}, "egress": [{}]})
    assert p.types == ("Egress", "Ingress")
    assert policy({"podSelector": {}}).types == ("Ingress",)
    c = cluster(p)
    again = Cluster.from_state(c.to_state())
    assert again.policies["default/p"].types == ("Egress", "Ingress")


@pytest.mark.parametrize("spec, field", [
    ({}, "spec.podSelector"),
    ({"podSelector": {}, "ingress": [{"from": [{}]}]}, "spec.ingress[0].from[0]"),
    ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.1/8"}}]}]}, "spec.ingress[0].from[0].ipBlock.cidr"),
    ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/8"]}}]}]},
     "spec.ingress[0].from[0].ipBlock.except[0]"),
    ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]},
     "spec.ingress[0].from[0]"),
    ({"podSelector": {}, "ingress": [{"ports": [{"port": 90, "endPort": 80}]}]}, "spec.ingress[0].ports[0].endPort"),
    ({"podSelector": {}, "ingress": [{"ports": [{"port": "http", "endPort": 80}]}]}, "spec.ingress[0].ports[0].endPort"),
    ({"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP"}]}]}, "spec.ingress[0].ports[0].protocol"),
    ({"podSelector": {}, "policyTypes": ["Both"]}, "spec.policyTypes[0]"),
])
def test_refused(spec, field):
    with pytest.raises(InvalidError) as err:
        policy(spec)
    assert err.value.field == field


def test_unknown_field_refused_strictly():
    with pytest.raises(InvalidError, match='unknown field "spec.ingress\\[0\\].form"'):
        policy({"podSelector": {}, "ingress": [{"form": []}]})


# ---------------------------------------------------------------------------- meaning

def test_no_policy_everything_open():
    c = cluster()
    assert allowed(c, "client", "web", 8080) and allowed(c, "web", "client", 1)


def test_default_deny_and_union():
    deny = policy({"podSelector": {}}, "deny")
    web = policy({"podSelector": {"matchLabels": {"app": "web"}},
                  "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                               "ports": [{"port": "http"}]}]}, "web")
    c = cluster(deny, web)
    assert allowed(c, "client", "web", 8080)                 # named port http = 8080
    assert not allowed(c, "client", "web", 9090)
    assert not allowed(c, "a1", "web", 8080, src_ns="team-a")   # podSelector alone: own namespace
    assert not allowed(c, "web", "client", 8080)             # deny isolates client too
    assert allowed(c, "client", "a1", 1, dst_ns="team-a")    # team-a is not isolated


def test_namespace_selector_alone_and_combined():
    ns_only = policy({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]}]})
    assert allowed(cluster(ns_only), "a1", "web", 1, src_ns="team-a")
    assert not allowed(cluster(ns_only), "client", "web", 1)
    both = policy({"podSelector": {}, "ingress": [{"from": [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "team-a"}},
        "podSelector": {"matchLabels": {"role": "nobody"}}}]}]})
    assert not allowed(cluster(both), "a1", "web", 1, src_ns="team-a")


def test_egress_ipblock_except_and_endport():
    p = policy({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["203.0.113.0/24"]}}],
                            "ports": [{"port": 80, "endPort": 90}]}]})
    c = cluster(p)
    web = c.pod("web")
    assert decide(c, web.pod_ip, web, "198.51.100.7", None, 85).allowed
    assert not decide(c, web.pod_ip, web, "203.0.113.10", None, 80).allowed
    assert not decide(c, web.pod_ip, web, "198.51.100.7", None, 91).allowed
    assert allowed(c, "client", "web", 8080)                # ingress untouched


# ---------------------------------------------------------------------------- compiler

def test_compiled_layout_is_felixs():
    deny = policy({"podSelector": {}}, "deny")
    web = policy({"podSelector": {"matchLabels": {"app": "web"}},
                  "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}},
                                        {"ipBlock": {"cidr": "192.168.56.0/24", "except": ["192.168.56.2/32"]}}],
                               "ports": [{"port": "http"}, {"port": 9000, "endPort": 9010}]}]}, "web")
    c = cluster(deny, web)
    node1 = c.node("node1")
    out = netpol.render_node(c, node1)
    text = out.text()
    iface = "cali68caf03a5f4"           # sha1("default.web")[:11]
    tw, fw = netpol.endpoint_chains(iface)
    pi = netpol.policy_chain(c.policies["default/web"], "Ingress")
    assert len(pi) <= 28 and pi.startswith("cali-pi-_")
    assert f"-A cali-to-wl-dispatch -o {iface} -g {tw}" in text
    assert f"-A cali-from-wl-dispatch -i {iface} -g {fw}" in text
    assert f"-A {tw} -m mark --mark 0x0/0x10000 -j {pi}" in text
    assert "Drop if no policies passed packet (ingress policies of default/web: deny, web)" in text
    assert "Profile kns.default: no policy isolates web for egress" in text
    assert "-m tcp --dport 9000:9010" in text and "-s 192.168.56.0/24 -m set ! --match-set cali40s:" in text
    kinds = {s.kind: s for s in out.ipsets.values()}
    assert kinds["hash:ip"].members == [c.pod("client").pod_ip]
    assert kinds["hash:ip,port"].members == [f"{c.pod('web').pod_ip},tcp:8080"]
    assert kinds["hash:net"].members == ["192.168.56.2/32"]
    assert all(len(name) <= 31 for name in out.ipsets)
    # Only the node's own pods get endpoint chains; policies nobody here needs are left out.
    node2 = netpol.render_node(c, c.node("node2")).text()
    assert f":{tw} " not in node2 and f":{pi} " not in node2
    stale = out.text(existing=["cali-pi-_OLD", "KUBE-SERVICES", tw])
    assert ":cali-pi-_OLD - [0:0]" in stale and "-X cali-pi-_OLD" in stale and "-X KUBE" not in stale
    assert f"-X {tw}" not in stale


def test_ipset_restore_text_swaps_a_full_set_in():
    c = cluster(policy({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}))
    text = netpol.render_node(c, c.node("node1")).ipset_text()
    lines = text.splitlines()
    name = lines[0].split()[1]
    tmp = "cali4t" + name[6:]
    assert lines[0] == f"create {name} hash:ip family inet -exist"
    assert f"swap {tmp} {name}" in lines and lines[-1] == f"destroy {tmp}"
