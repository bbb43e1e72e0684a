"""kube-proxy userspace mode: rule text, proxy port choice, proxy config and the balancer."""
from __future__ import annotations

import pytest

from netlab.model.cluster import Cluster, make_nodes
from netlab.model.config import parse_lab
from netlab.model.errors import LabError
from netlab.model.objects import parse_object
from netlab.model.services import Endpoint
from netlab.plan import userspace
from netlab.plan.userspace import proxy_config, proxy_ports, render_jumps, render_userspace_rules
from netlab.runtime.userspace_proxy import Balancer


def service(name: str, spec: dict, namespace: str = "default") -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": spec}


def make_cluster(*docs: dict, nodes: int = 2) -> Cluster:
    cfg = parse_lab({"apiVersion": "netlab/v1", "kind": "Lab", "metadata": {"name": "unit"},
                     "spec": {"nodes": nodes}}, default_name="unit")
    cluster = Cluster(config=cfg, nodes=make_nodes(cfg), seed=1)
    cluster.admit([parse_object(d, "unit.yaml") for d in docs])
    return cluster


@pytest.fixture
def cluster() -> Cluster:
    return make_cluster(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "smart"}},
        # The service of the document's node, with its ClusterIP and port.
        service("ccdb", {"type": "NodePort", "clusterIP": "10.96.120.169",
                         "ports": [{"name": "port1521", "port": 1521, "nodePort": 30171}]}, "smart"),
        service("web", {"clusterIP": "10.96.0.50", "ports": [{"port": 80, "targetPort": 8080}]}),
        service("lb", {"type": "LoadBalancer", "clusterIP": "10.96.0.52", "loadBalancerIP": "198.51.100.5",
                       "sessionAffinity": "ClientIP",
                       "ports": [{"name": "https", "port": 443, "nodePort": 30443}]}),
        service("dns", {"clusterIP": "10.96.0.53", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                                                             {"name": "sctp", "port": 99, "protocol": "SCTP"}]}),
        service("headless", {"clusterIP": "None", "ports": [{"port": 80}]}),
    )


PORTS = {"default/dns:dns": 40053, "default/lb:https": 40443, "default/web": 40080, "smart/ccdb:port1521": 52244}

# The document's lines, with this lab's addresses: node1 is 192.168.56.11.
EXPECTED = """\
*filter
:KUBE-NODEPORT-NON-LOCAL - [0:0]
-A KUBE-NODEPORT-NON-LOCAL -p tcp -m comment --comment "default/lb:https" -m tcp --dport 40443 -m comment --comment "default/lb:https" -m state --state NEW -j ACCEPT
-A KUBE-NODEPORT-NON-LOCAL -p tcp -m comment --comment "smart/ccdb:port1521" -m tcp --dport 52244 -m comment --comment "smart/ccdb:port1521" -m state --state NEW -j ACCEPT
COMMIT
*nat
:KUBE-PORTALS-CONTAINER - [0:0]
:KUBE-PORTALS-HOST - [0:0]
:KUBE-NODEPORT-CONTAINER - [0:0]
:KUBE-NODEPORT-HOST - [0:0]
:FLANNEL-POSTRTG - [0:0]
-A KUBE-PORTALS-CONTAINER -d 10.96.0.53/32 -p udp -m comment --comment "default/dns:dns" -m udp --dport 53 -j REDIRECT --to-ports 40053
-A KUBE-PORTALS-CONTAINER -d 10.96.0.52/32 -p tcp -m comment --comment "default/lb:https" -m tcp --dport 443 -j REDIRECT --to-ports 40443
-A KUBE-PORTALS-CONTAINER -d 198.51.100.5/32 -p tcp -m comment --comment "default/lb:https" -m tcp --dport 443 -j REDIRECT --to-ports 40443
-A KUBE-PORTALS-CONTAINER -d 10.96.0.50/32 -p tcp -m comment --comment "default/web:" -m tcp --dport 80 -j REDIRECT --to-ports 40080
-A KUBE-PORTALS-CONTAINER -d 10.96.120.169/32 -p tcp -m comment --comment "smart/ccdb:port1521" -m tcp --dport 1521 -j REDIRECT --to-ports 52244
-A KUBE-PORTALS-HOST -d 10.96.0.53/32 -p udp -m comment --comment "default/dns:dns" -m udp --dport 53 -j DNAT --to-destination 192.168.56.11:40053
-A KUBE-PORTALS-HOST -d 10.96.0.52/32 -p tcp -m comment --comment "default/lb:https" -m tcp --dport 443 -j DNAT --to-destination 192.168.56.11:40443
-A KUBE-PORTALS-HOST -d 198.51.100.5/32 -p tcp -m comment --comment "default/lb:https" -m tcp --dport 443 -j DNAT --to-destination 192.168.56.11:40443
-A KUBE-PORTALS-HOST -d 10.96.0.50/32 -p tcp -m comment --comment "default/web:" -m tcp --dport 80 -j DNAT --to-destination 192.168.56.11:40080
-A KUBE-PORTALS-HOST -d 10.96.120.169/32 -p tcp -m comment --comment "smart/ccdb:port1521" -m tcp --dport 1521 -j DNAT --to-destination 192.168.56.11:52244
-A KUBE-NODEPORT-CONTAINER -p tcp -m comment --comment "default/lb:https" -m tcp --dport 30443 -j REDIRECT --to-ports 40443
-A KUBE-NODEPORT-CONTAINER -p tcp -m comment --comment "smart/ccdb:port1521" -m tcp --dport 30171 -j REDIRECT --to-ports 52244
-A KUBE-NODEPORT-HOST -p tcp -m comment --comment "default/lb:https" -m tcp --dport 30443 -j DNAT --to-destination 192.168.56.11:40443
-A KUBE-NODEPORT-HOST -p tcp -m comment --comment "smart/ccdb:port1521" -m tcp --dport 30171 -j DNAT --to-destination 192.168.56.11:52244
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
COMMIT
"""


# ---------------------------------------------------------------------- rules


def test_rules_are_the_documents_lines(cluster):
    assert render_userspace_rules(cluster, cluster.node("node1"), PORTS) == EXPECTED


def test_node_address_and_pod_subnet_are_the_nodes_own(cluster):
    text = render_userspace_rules(cluster, cluster.node("node2"), PORTS)
    assert "-j DNAT --to-destination 192.168.56.12:52244" in text
    assert "-s 10.244.2.0/24 -d 10.244.0.0/16" in text
    assert "192.168.56.11" not in text


def test_no_masquerade_mark_for_service_traffic(cluster):
    # The proxy connects from the node's own address: nothing to SNAT, nothing to mark.
    text = render_userspace_rules(cluster, cluster.node("node1"), PORTS)
    assert "KUBE-MARK-MASQ" not in text and "--or-mark" not in text


def test_a_vanished_service_leaves_nothing(cluster):
    node = cluster.node("node1")
    cluster.remove_service("smart/ccdb")
    text = render_userspace_rules(cluster, node, PORTS)
    assert "ccdb" not in text
    # The chains are still declared, so --noflush empties them before the new rules go in.
    assert ":KUBE-NODEPORT-CONTAINER - [0:0]" in text and ":KUBE-NODEPORT-NON-LOCAL - [0:0]" in text


def test_jumps_from_built_in_chains():
    portals = '-m comment --comment "handle ClusterIPs; NOTE: this must be before the NodePort rules"'
    node_ports = ('-m addrtype --dst-type LOCAL -m comment --comment "handle service NodePorts; '
                  'NOTE: this must be the last rule in the chain"')
    assert [(j.table, j.chain, j.prepend, j.spec) for j in render_jumps()] == [
        ("nat", "PREROUTING", True, f"{portals} -j KUBE-PORTALS-CONTAINER"),
        ("nat", "OUTPUT", True, f"{portals} -j KUBE-PORTALS-HOST"),
        ("nat", "PREROUTING", False, f"{node_ports} -j KUBE-NODEPORT-CONTAINER"),
        ("nat", "OUTPUT", False, f"{node_ports} -j KUBE-NODEPORT-HOST"),
        ("filter", "INPUT", True,
         '-m comment --comment "Ensure that non-local NodePort traffic can flow" -j KUBE-NODEPORT-NON-LOCAL'),
        ("nat", "POSTROUTING", False, '-m comment --comment "flanneld masq" -j FLANNEL-POSTRTG'),
    ]


# ---------------------------------------------------------------------- proxy ports


def test_ports_are_deterministic_in_range_and_unique(cluster):
    node = cluster.node("node1")
    ports = proxy_ports(cluster, node)
    assert list(ports) == ["default/dns:dns", "default/lb:https", "default/web", "smart/ccdb:port1521"]
    assert ports == proxy_ports(cluster, node)
    assert all(userspace.PORT_MIN <= p <= userspace.PORT_MAX for p in ports.values())
    assert len(set(ports.values())) == len(ports)


def test_ports_are_a_stable_hash_of_node_and_name(cluster):
    # sha256, not Python's salted hash(): the same on every run, so rules and config agree.
    assert proxy_ports(cluster, cluster.node("node1"))["default/web"] == 48411
    assert proxy_ports(cluster, cluster.node("node2"))["default/web"] == 51790


def test_collisions_take_the_next_free_port_and_wrap(cluster, monkeypatch):
    monkeypatch.setattr(userspace, "_hashed_port", lambda node, name: userspace.PORT_MAX - 1)
    assert list(proxy_ports(cluster, cluster.node("node1")).values()) == [59998, 59999, 40000, 40001]


def test_previous_ports_stay_when_a_new_service_collides(cluster, monkeypatch):
    node = cluster.node("node1")
    monkeypatch.setattr(userspace, "_hashed_port", lambda node, name: 45000)
    before = proxy_ports(cluster, node)
    # "default/aaa" sorts first and hashes onto the same port: without `previous` it would win it.
    cluster.admit([parse_object(service("aaa", {"ports": [{"port": 1}]}), "unit.yaml")])
    assert proxy_ports(cluster, node)["default/aaa"] == 45000
    after = proxy_ports(cluster, node, previous=before)
    assert {k: after[k] for k in before} == before
    assert after["default/aaa"] == 45004


def test_too_many_service_ports_for_the_range(cluster, monkeypatch):
    monkeypatch.setattr(userspace, "PORT_COUNT", 3)
    with pytest.raises(LabError, match="only 3 proxy ports"):
        proxy_ports(cluster, cluster.node("node1"))


# ---------------------------------------------------------------------- proxy config


def test_proxy_config(cluster):
    eps = {"default/lb": {"https": [Endpoint("10.244.2.4", 8443, "", "node2"),
                                    Endpoint("10.244.1.4", 8443, "", "node1")]}}
    config = proxy_config(cluster, cluster.node("node1"), PORTS, eps)
    assert config == {"node": "node1", "services": {
        "default/dns:dns": {"listen": 40053, "protocol": "UDP", "endpoints": [],
                            "sessionAffinity": "None", "affinityTimeoutSeconds": 10800},
        "default/lb:https": {"listen": 40443, "protocol": "TCP",
                             "endpoints": ["10.244.1.4:8443", "10.244.2.4:8443"],
                             "sessionAffinity": "ClientIP", "affinityTimeoutSeconds": 10800},
        "default/web": {"listen": 40080, "protocol": "TCP", "endpoints": [],
                        "sessionAffinity": "None", "affinityTimeoutSeconds": 10800},
        "smart/ccdb:port1521": {"listen": 52244, "protocol": "TCP", "endpoints": [],
                                "sessionAffinity": "None", "affinityTimeoutSeconds": 10800},
    }}


def test_proxy_config_finds_endpoints_from_pods_when_not_given():
    cluster = make_cluster(
        service("web", {"clusterIP": "10.96.0.50", "selector": {"app": "web"},
                        "ports": [{"port": 80, "targetPort": 8080}]}),
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "w", "labels": {"app": "web"}},
         "spec": {"nodeName": "node2", "containers": [{"name": "c", "image": "x"}]},
         "status": {"podIP": "10.244.2.7"}})
    node = cluster.node("node1")
    config = proxy_config(cluster, node, proxy_ports(cluster, node))
    assert config["services"]["default/web"]["endpoints"] == ["10.244.2.7:8080"]


# ---------------------------------------------------------------------- balancer


def test_round_robin():
    b = Balancer(["a:1", "b:1", "c:1"])
    assert [b.next("10.0.0.1", 0.0) for _ in range(4)] == ["a:1", "b:1", "c:1", "a:1"]


def test_affinity_sticks_per_client_until_idle_for_the_timeout():
    b = Balancer(["a:1", "b:1"], affinity=True, affinity_timeout=10)
    assert [b.next("10.0.0.1", t) for t in (0, 5, 14)] == ["a:1"] * 3   # each use renews it
    assert b.next("10.0.0.2", 15) == "b:1"
    assert b.next("10.0.0.1", 24.5) == "a:1"
    assert b.next("10.0.0.1", 35) == "b:1"     # idle 10.5 s: a new pick


def test_idle_sessions_are_pruned():
    b = Balancer(["a:1", "b:1"], affinity=True, affinity_timeout=10)
    b.next("10.0.0.1", 0)
    b.next("10.0.0.2", 5)
    b.prune(12)
    assert list(b.sessions) == ["10.0.0.2"]


def test_a_failed_dial_resets_affinity():
    b = Balancer(["a:1", "b:1"], affinity=True)
    assert b.next("10.0.0.1", 0) == "a:1"
    assert b.next("10.0.0.1", 1, reset=True) == "b:1"
    assert b.next("10.0.0.1", 2) == "b:1"


def test_update_drops_sessions_of_vanished_endpoints_and_restarts_the_rotation():
    b = Balancer(["a:1", "b:1", "c:1"], affinity=True)
    assert [b.next(ip, 0) for ip in ("1.1.1.1", "2.2.2.2")] == ["a:1", "b:1"]
    b.update(["a:1", "c:1"], affinity=True, affinity_timeout=10800)
    assert b.next("1.1.1.1", 1) == "a:1"
    assert b.next("2.2.2.2", 1) == "a:1"   # b is gone: a fresh pick, from the top
    b.update(["a:1", "c:1"], affinity=False, affinity_timeout=10800)
    assert b.sessions == {}


def test_external_ip_portals_are_the_v1_2_proxiers():
    """pkg/proxy/userspace/proxier.go (v1.2/v1.3), openOnePortal with portal.isExternal: a
    container portal that skips bridged-in packets (`-m physdev ! --physdev-is-in`), one for
    the node's own addresses (`-m addrtype --dst-type LOCAL`), and a host portal likewise; an
    unnamed port's comment is ServicePortName.String(), "ns/name:"."""
    cluster = make_cluster(service("web", {"clusterIP": "10.96.0.50", "externalIPs": ["203.0.113.9"],
                                           "ports": [{"port": 80, "targetPort": 8080}]}))
    text = render_userspace_rules(cluster, cluster.node("node1"), {"default/web": 40080})
    c = '-p tcp -m comment --comment "default/web:" -m tcp --dport 80'
    assert [line for line in text.splitlines() if "203.0.113.9" in line] == [
        f"-A KUBE-PORTALS-CONTAINER -d 203.0.113.9/32 {c} -m physdev ! --physdev-is-in -j REDIRECT --to-ports 40080",
        f"-A KUBE-PORTALS-CONTAINER -d 203.0.113.9/32 {c} -m addrtype --dst-type LOCAL -j REDIRECT --to-ports 40080",
        f"-A KUBE-PORTALS-HOST -d 203.0.113.9/32 {c} -m addrtype --dst-type LOCAL "
        f"-j DNAT --to-destination 192.168.56.11:40080",
    ]
