"""kube-proxy's traffic policies, load-balancer firewall and health-check ports, compared with
the rules upstream kube-proxy's own test expects.

Upstream: kubernetes/kubernetes pkg/proxy/iptables/proxier_test.go, TestOverallIPTablesRules
(v1.30 line, read at commit 4177b600d4b97a67b765a18ddeeb295ef757b212 of a kubernetes fork that
tracks master). Its services ns2/svc2 (LoadBalancer, externalTrafficPolicy Local, one endpoint
on another node) and ns5/svc5 (LoadBalancer with loadBalancerSourceRanges and ClientIP
affinity) are rebuilt here with the same addresses; the expected lines are upstream's, less the
localhost NodePort rules that carry an nfacct counter (added in v1.30, after the v1.28-v1.29
rules netlab renders).
"""
from __future__ import annotations

from netlab.model.cluster import Cluster, make_nodes
from netlab.model.config import parse_lab
from netlab.model.objects import parse_object
from netlab.model.services import Endpoint
from netlab.plan.kubeproxy import node_chains, render_node_rules

UPSTREAM_SVC2_SVC5 = '''
-A KUBE-NODEPORTS -m comment --comment "ns2/svc2:p80 health check node port" -m tcp -p tcp --dport 30000 -j ACCEPT
-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns2/svc2:p80 has no local endpoints" -m tcp -p tcp -d 192.168.99.22 --dport 80 -j DROP
-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns2/svc2:p80 has no local endpoints" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j DROP
-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns2/svc2:p80 has no local endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3001 -j DROP
-A KUBE-PROXY-FIREWALL -m comment --comment "ns5/svc5:p80 traffic not accepted by KUBE-FW-NUKIZ6OKUXPJNT4C" -m tcp -p tcp -d 5.6.7.8 --dport 80 -j DROP
:KUBE-EXT-GNZBNJ2PO5MGZ6GT - [0:0]
:KUBE-EXT-NUKIZ6OKUXPJNT4C - [0:0]
:KUBE-FW-NUKIZ6OKUXPJNT4C - [0:0]
:KUBE-SEP-I77PXRDZVX7PMWMN - [0:0]
:KUBE-SEP-RS4RBKLTHTF2IUXJ - [0:0]
:KUBE-SVC-GNZBNJ2PO5MGZ6GT - [0:0]
:KUBE-SVC-NUKIZ6OKUXPJNT4C - [0:0]
-A KUBE-NODEPORTS -m comment --comment ns2/svc2:p80 -m tcp -p tcp --dport 3001 -j KUBE-EXT-GNZBNJ2PO5MGZ6GT
-A KUBE-NODEPORTS -m comment --comment ns5/svc5:p80 -m tcp -p tcp --dport 3002 -j KUBE-EXT-NUKIZ6OKUXPJNT4C
-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 -j KUBE-SVC-GNZBNJ2PO5MGZ6GT
-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 external IP" -m tcp -p tcp -d 192.168.99.22 --dport 80 -j KUBE-EXT-GNZBNJ2PO5MGZ6GT
-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 loadbalancer IP" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j KUBE-EXT-GNZBNJ2PO5MGZ6GT
-A KUBE-SERVICES -m comment --comment "ns5/svc5:p80 cluster IP" -m tcp -p tcp -d 172.30.0.45 --dport 80 -j KUBE-SVC-NUKIZ6OKUXPJNT4C
-A KUBE-SERVICES -m comment --comment "ns5/svc5:p80 loadbalancer IP" -m tcp -p tcp -d 5.6.7.8 --dport 80 -j KUBE-FW-NUKIZ6OKUXPJNT4C
-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment "pod traffic for ns2/svc2:p80 external destinations" -s 10.0.0.0/8 -j KUBE-SVC-GNZBNJ2PO5MGZ6GT
-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment "masquerade LOCAL traffic for ns2/svc2:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ
-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment "route LOCAL traffic for ns2/svc2:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-GNZBNJ2PO5MGZ6GT
-A KUBE-EXT-NUKIZ6OKUXPJNT4C -m comment --comment "masquerade traffic for ns5/svc5:p80 external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-NUKIZ6OKUXPJNT4C -j KUBE-SVC-NUKIZ6OKUXPJNT4C
-A KUBE-FW-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 loadbalancer IP" -s 203.0.113.0/25 -j KUBE-EXT-NUKIZ6OKUXPJNT4C
-A KUBE-FW-NUKIZ6OKUXPJNT4C -m comment --comment "other traffic to ns5/svc5:p80 will be dropped by KUBE-PROXY-FIREWALL"
-A KUBE-SEP-I77PXRDZVX7PMWMN -m comment --comment ns5/svc5:p80 -s 10.180.0.3 -j KUBE-MARK-MASQ
-A KUBE-SEP-I77PXRDZVX7PMWMN -m comment --comment ns5/svc5:p80 -m recent --name KUBE-SEP-I77PXRDZVX7PMWMN --set -m tcp -p tcp -j DNAT --to-destination 10.180.0.3:80
-A KUBE-SEP-RS4RBKLTHTF2IUXJ -m comment --comment ns2/svc2:p80 -s 10.180.0.2 -j KUBE-MARK-MASQ
-A KUBE-SEP-RS4RBKLTHTF2IUXJ -m comment --comment ns2/svc2:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.2:80
-A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2/svc2:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2/svc2:p80 -> 10.180.0.2:80" -j KUBE-SEP-RS4RBKLTHTF2IUXJ
-A KUBE-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 cluster IP" -m tcp -p tcp -d 172.30.0.45 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 -> 10.180.0.3:80" -m recent --name KUBE-SEP-I77PXRDZVX7PMWMN --rcheck --seconds 10800 --reap -j KUBE-SEP-I77PXRDZVX7PMWMN
-A KUBE-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 -> 10.180.0.3:80" -j KUBE-SEP-I77PXRDZVX7PMWMN
'''


def lab(*docs: dict, **network) -> Cluster:
    net = {"clusterCIDR": "10.0.0.0/8", "serviceCIDR": "172.30.0.0/16", "dnsServiceIP": "172.30.0.10",
           "nodePortRange": "3000-32767", **network}
    cfg = parse_lab({"apiVersion": "netlab/v1", "kind": "Lab", "metadata": {"name": "unit"},
                     "spec": {"nodes": 2, "network": net}}, default_name="unit")
    cluster = Cluster(config=cfg, nodes=make_nodes(cfg), seed=1)
    cluster.admit([parse_object(d, "unit.yaml") for d in docs])
    return cluster


def svc(ns: str, name: str, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def namespace(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def upstream_cluster() -> Cluster:
    cluster = lab(
        namespace("ns2"), namespace("ns5"),
        svc("ns2", "svc2", type="LoadBalancer", externalTrafficPolicy="Local", clusterIP="172.30.0.42",
            externalIPs=["192.168.99.22"], healthCheckNodePort=30000,
            ports=[{"name": "p80", "port": 80, "nodePort": 3001}]),
        svc("ns5", "svc5", type="LoadBalancer", clusterIP="172.30.0.45", sessionAffinity="ClientIP",
            loadBalancerSourceRanges=["203.0.113.0/25"], ports=[{"name": "p80", "port": 80, "nodePort": 3002}]))
    # status.loadBalancer.ingress as upstream's test sets it (outside the lab's own pool).
    cluster.service("svc2", "ns2").lb_ingress = ["1.2.3.4"]
    cluster.service("svc5", "ns5").lb_ingress = ["5.6.7.8"]
    return cluster


UPSTREAM_EPS = {"ns2/svc2": {"p80": [Endpoint("10.180.0.2", 80, "", "")]},
                "ns5/svc5": {"p80": [Endpoint("10.180.0.3", 80, "", "")]}}


def service_lines(text: str) -> set[str]:
    return {line for line in text.splitlines() if "svc2" in line or "svc5" in line
            or any(h in line for h in ("GNZBNJ2PO5MGZ6GT", "NUKIZ6OKUXPJNT4C", "I77PXRDZVX7PMWMN",
                                        "RS4RBKLTHTF2IUXJ"))}


def test_local_policy_and_source_ranges_match_upstream():
    cluster = upstream_cluster()
    text = render_node_rules(cluster, cluster.nodes[0], UPSTREAM_EPS)
    expected = {line for line in UPSTREAM_SVC2_SVC5.strip().splitlines()}
    assert service_lines(text) == expected


def test_local_endpoint_gets_a_svl_chain_and_keeps_the_client():
    cluster = upstream_cluster()
    node1 = cluster.nodes[0]
    eps = {"ns2/svc2": {"p80": [Endpoint("10.180.0.2", 80, "", "node2"), Endpoint("10.180.0.7", 80, "", node1.name)]}}
    text = render_node_rules(cluster, node1, eps)
    svl = "KUBE-SVL-GNZBNJ2PO5MGZ6GT"
    assert f"-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -j {svl}" in text
    svl_rules = [line for line in text.splitlines() if line.startswith(f"-A {svl} ")]
    assert svl_rules == [f'-A {svl} -m comment --comment "ns2/svc2:p80 -> 10.180.0.7:80" -j KUBE-SEP-'
                         + svl_rules[0].rsplit("KUBE-SEP-", 1)[1]]
    assert "has no local endpoints" not in text
    assert "masquerade traffic for ns2/svc2" not in text        # the client's address is kept
    assert svl in node_chains(cluster, node1, eps)
    # node2 has the other endpoint locally: its SVL chain holds only that one.
    text2 = render_node_rules(cluster, cluster.nodes[1], eps)
    assert '-A KUBE-SVL-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2/svc2:p80 -> 10.180.0.2:80"' in text2


def test_internal_traffic_policy_local_drops_without_local_endpoints():
    cluster = lab(svc("default", "web", clusterIP="172.30.0.50", internalTrafficPolicy="Local",
                      ports=[{"port": 80}]))
    node1, node2 = cluster.nodes
    eps = {"default/web": {"": [Endpoint("10.1.2.3", 80, "", node2.name)]}}
    text1 = render_node_rules(cluster, node1, eps)
    assert ('-A KUBE-SERVICES -m comment --comment "default/web has no local endpoints" -m tcp -p tcp '
            '-d 172.30.0.50 --dport 80 -j DROP') in text1
    assert "KUBE-SVC-" not in text1 and "KUBE-SVL-" not in text1
    text2 = render_node_rules(cluster, node2, eps)
    svl = [line for line in text2.splitlines() if line.startswith("-A KUBE-SERVICES") and "cluster IP" in line]
    assert svl and svl[0].endswith("-j KUBE-SVL-" + svl[0].rsplit("KUBE-SVL-", 1)[1])
    assert "KUBE-SVC-" not in text2          # not externally accessible: no Cluster chain at all


def test_source_range_holding_the_node_lets_the_vip_in():
    cluster = lab(svc("default", "lb", type="LoadBalancer", clusterIP="172.30.0.60",
                      loadBalancerSourceRanges=["192.168.56.0/24", "203.0.113.0/25"], ports=[{"port": 80}]))
    eps = {"default/lb": {"": [Endpoint("10.1.1.5", 80, "", "node1")]}}
    text = render_node_rules(cluster, cluster.nodes[0], eps)
    lb = cluster.service("lb").load_balancer_ips[0]
    fw = [line for line in text.splitlines() if line.startswith("-A KUBE-FW-")]
    assert [line.split(" -s ")[1].split()[0] for line in fw[:-1]] == ["192.168.56.0/24", "203.0.113.0/25", lb]
    assert fw[-1].endswith('"other traffic to default/lb will be dropped by KUBE-PROXY-FIREWALL"')


def test_health_check_node_port_is_allocated_for_local_load_balancers():
    cluster = lab(svc("default", "a", type="LoadBalancer", externalTrafficPolicy="Local", ports=[{"port": 80}]),
                  svc("default", "b", type="NodePort", externalTrafficPolicy="Local", ports=[{"port": 80}]))
    a, b = cluster.service("a"), cluster.service("b")
    assert a.health_check_node_port and a.health_check_node_port != a.ports[0].node_port
    assert b.health_check_node_port == 0          # only LoadBalancer services get one
    cluster.remove_service("default/a")
    assert a.health_check_node_port not in cluster.service_alloc.node_ports


def test_large_cluster_mode_defers_stale_chain_deletion():
    """proxier.go: `if !proxier.largeClusterMode || time.Since(proxier.lastIPTablesCleanup) >
    proxier.syncPeriod` guards the iptables-save and the `-X` of stale chains."""
    from netlab.plan.kubeproxy import large_cluster, stale_chains
    cluster = lab(svc("default", "big", clusterIP="172.30.0.70", ports=[{"port": 80}]),
                  svc("default", "gone", clusterIP="172.30.0.71", ports=[{"port": 80}]))
    node = cluster.nodes[0]
    eps = {"default/big": {"": [Endpoint(f"10.2.{i // 250}.{i % 250 + 2}", 80, "", "") for i in range(1001)]},
           "default/gone": {"": [Endpoint("10.3.0.2", 80, "", "")]}}
    assert large_cluster(cluster, eps)
    before = node_chains(cluster, node, eps)
    cluster.remove_service("default/gone")
    now = {"default/big": eps["default/big"]}
    deferred = render_node_rules(cluster, node, now, previous_chains=before, cleanup=False)
    assert "\n-X " not in deferred
    kept = stale_chains(before, node_chains(cluster, node, now))
    assert len(kept) == 2 and all(c.startswith(("KUBE-SVC-", "KUBE-SEP-")) for c in kept)
    cleaned = render_node_rules(cluster, node, now, previous_chains=kept, cleanup=True)
    assert sorted(line[3:] for line in cleaned.splitlines() if line.startswith("-X ")) == kept
    # Below the threshold kube-proxy cleans up on every sync, whatever `cleanup` says.
    small = lab(svc("default", "gone", clusterIP="172.30.0.71", ports=[{"port": 80}]))
    small_before = node_chains(small, small.nodes[0], {"default/gone": eps["default/gone"]})
    small.remove_service("default/gone")
    assert "\n-X " in render_node_rules(small, small.nodes[0], {}, previous_chains=small_before, cleanup=False)
