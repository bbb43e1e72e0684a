"""The kube-proxy renderer, against golden text and kube-proxy's own published names.

Regenerate the goldens after an intended change with NETLAB_UPDATE_GOLDEN=1 and read the diff.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from netlab.kernel import iptables, netns
from netlab.kernel.iptables import context, missing_jumps_text
from netlab.model.errors import LabError
from netlab.model.cluster import Cluster, make_nodes
from netlab.model.config import parse_lab
from netlab.model.objects import parse_object
from netlab.model.services import Endpoint, endpoints_for
from netlab.plan.kubeproxy import (node_chains, port_proto_hash, probability, render_jumps,
                                   render_node_rules, sep_chain, service_port_name, svc_chain)

GOLDEN = Path(__file__).parent / "golden"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("NETLAB_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs from its golden (NETLAB_UPDATE_GOLDEN=1 rewrites it)"


def service(name: str, spec: dict, namespace: str = "default") -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def pod(name: str, labels: dict, node: str, ip: str, port: int) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox",
                                                        "ports": [{"containerPort": port}]}]},
            "status": {"podIP": ip}}


def make_cluster(*docs: dict) -> Cluster:
    cfg = parse_lab({"apiVersion": "netlab/v1", "kind": "Lab", "metadata": {"name": "unit"},
                     "spec": {"nodes": 2}}, default_name="unit")
    cluster = Cluster(config=cfg, nodes=make_nodes(cfg), seed=1)
    cluster.admit([parse_object(d, "unit.yaml") for d in docs])
    return cluster


def ep(ip: str, port: int, node: str = "node1") -> Endpoint:
    return Endpoint(ip, port, f"default/pod-{ip}", node)


@pytest.fixture
def cluster() -> Cluster:
    return make_cluster(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns1"}},
        # The service kube-proxy's own proxier_test.go uses, so the chain names can be compared.
        service("svc1", {"clusterIP": "10.96.0.41", "ports": [{"name": "p80", "port": 80}]}, "ns1"),
        service("web", {"type": "NodePort", "clusterIP": "10.96.0.50",
                        "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30080}]}),
        service("sticky", {"clusterIP": "10.96.0.51", "sessionAffinity": "ClientIP",
                           "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
                           "ports": [{"name": "http", "port": 8080}]}),
        service("lb", {"type": "LoadBalancer", "clusterIP": "10.96.0.52", "loadBalancerIP": "198.51.100.5",
                       "externalIPs": ["203.0.113.9"],
                       "ports": [{"name": "https", "port": 443, "targetPort": 8443, "nodePort": 30443}]}),
        service("empty", {"type": "LoadBalancer", "clusterIP": "10.96.0.53", "loadBalancerIP": "198.51.100.6",
                          "externalIPs": ["203.0.113.10"],
                          "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053}]}),
        service("headless", {"clusterIP": "None", "ports": [{"port": 80}]}),
    )


ENDPOINTS = {
    "ns1/svc1": {"p80": [ep("10.180.0.1", 80)]},
    # 10.244.1.10 sorts before 10.244.1.2: kube-proxy orders endpoints by their "IP:port" text.
    "default/web": {"": [ep("10.244.1.2", 8080), ep("10.244.2.2", 8080, "node2"), ep("10.244.1.10", 8080)]},
    "default/sticky": {"http": [ep("10.244.1.3", 8080), ep("10.244.2.3", 8080, "node2")]},
    "default/lb": {"https": [ep("10.244.1.4", 8443), ep("10.244.2.4", 8443, "node2")]},
}


def without(endpoints: dict, key: str, ip: str) -> dict:
    changed = {k: {p: list(v) for p, v in ports.items()} for k, ports in endpoints.items()}
    for port, eps in changed[key].items():
        changed[key][port] = [e for e in eps if e.ip != ip]
    return changed


def nat_chains_declared(text: str) -> set[str]:
    nat = text.split("*nat\n", 1)[1]
    return {line[1:].split()[0] for line in nat.splitlines() if line.startswith(":")}


# ---------------------------------------------------------------------- names


@pytest.mark.parametrize("name, protocol, expected", [
    # kubernetes/kubernetes pkg/proxy/iptables/proxier_test.go
    ("ns1/svc1:p80", "tcp", "XPGD46QRK7WJZT7O"),
    ("ns1/svc1", "tcp", "AQI2S6QIMU7PVVRP"),
    # on every cluster: the API server's service and kube-dns
    ("default/kubernetes:https", "tcp", "NPX46M4PTMTKRN6Y"),
    ("kube-system/kube-dns:dns", "udp", "TCOU7JCQXEZGVUNU"),
    ("kube-system/kube-dns:dns-tcp", "tcp", "ERIFXISQEP7F7OF4"),
])
def test_service_chain_names_match_kube_proxy(name, protocol, expected):
    assert port_proto_hash(name, protocol) == expected
    assert svc_chain(name, protocol) == "KUBE-SVC-" + expected


@pytest.mark.parametrize("name, endpoint, expected", [
    ("ns1/svc1:p80", "10.180.0.1:80", "KUBE-SEP-SXIVWICOYRO3J4NJ"),
    ("ns1/svc1", "10.0.1.1:80", "KUBE-SEP-3JOIVZTXZZRGORX4"),
    ("ns1/svc1", "10.0.1.5:80", "KUBE-SEP-EQCHZ7S2PJ72OHAY"),
])
def test_endpoint_chain_names_match_kube_proxy(name, endpoint, expected):
    assert sep_chain(name, "tcp", endpoint) == expected


def test_unnamed_port_has_no_colon(cluster):
    web = cluster.service("web")
    assert service_port_name(web, web.ports[0]) == "default/web"
    svc1 = cluster.service("svc1", "ns1")
    assert service_port_name(svc1, svc1.ports[0]) == "ns1/svc1:p80"


# ---------------------------------------------------------------------- load balancing


@pytest.mark.parametrize("n, expected", [
    (1, []),
    (2, ["0.5000000000"]),
    (3, ["0.3333333333", "0.5000000000"]),
    (4, ["0.2500000000", "0.3333333333", "0.5000000000"]),
    (5, ["0.2000000000", "0.2500000000", "0.3333333333", "0.5000000000"]),
])
def test_probability_cascade(cluster, n, expected):
    eps = {"ns1/svc1": {"p80": [ep(f"10.244.1.{i}", 80) for i in range(2, 2 + n)]}}
    text = render_node_rules(cluster, cluster.nodes[0], eps)
    chain = svc_chain("ns1/svc1:p80", "tcp")
    jumps = [line for line in text.splitlines() if line.startswith(f"-A {chain} ") and "KUBE-SEP-" in line]
    assert len(jumps) == n
    assert re.findall(r"--probability (\S+)", "\n".join(jumps)) == expected
    assert "statistic" not in jumps[-1]     # the last endpoint takes whatever is left
    assert [probability(k) for k in range(n, 1, -1)] == expected


def test_session_affinity(cluster):
    text = render_node_rules(cluster, cluster.nodes[0], ENDPOINTS)
    svc = svc_chain("default/sticky:http", "tcp")
    seps = [sep_chain("default/sticky:http", "tcp", e) for e in ("10.244.1.3:8080", "10.244.2.3:8080")]
    rules = [line for line in text.splitlines() if line.startswith(f"-A {svc} ")]
    # Remembered clients go straight back to their endpoint, before the random cascade.
    assert rules[1:3] == [
        f'-A {svc} -m comment --comment "default/sticky:http -> 10.244.1.3:8080" '
        f"-m recent --name {seps[0]} --rcheck --seconds 600 --reap -j {seps[0]}",
        f'-A {svc} -m comment --comment "default/sticky:http -> 10.244.2.3:8080" '
        f"-m recent --name {seps[1]} --rcheck --seconds 600 --reap -j {seps[1]}",
    ]
    assert "statistic" in rules[3]
    assert (f"-A {seps[0]} -m comment --comment default/sticky:http -m recent --name {seps[0]} --set "
            f"-m tcp -p tcp -j DNAT --to-destination 10.244.1.3:8080") in text


# ---------------------------------------------------------------------- whole node


def test_full_render_golden(cluster):
    check_golden("kubeproxy_full.rules", render_node_rules(cluster, cluster.nodes[0], ENDPOINTS))


def test_nodeport_and_load_balancer(cluster):
    text = render_node_rules(cluster, cluster.nodes[0], ENDPOINTS)
    ext = "KUBE-EXT-" + port_proto_hash("default/lb:https", "tcp")
    assert (f"-A KUBE-NODEPORTS -m comment --comment default/lb:https -m tcp -p tcp --dport 30443 "
            f"-j {ext}") in text
    assert (f'-A KUBE-SERVICES -m comment --comment "default/lb:https loadbalancer IP" -m tcp -p tcp '
            f"-d 198.51.100.5 --dport 443 -j {ext}") in text
    assert (f'-A KUBE-SERVICES -m comment --comment "default/lb:https external IP" -m tcp -p tcp '
            f"-d 203.0.113.9 --dport 443 -j {ext}") in text
    assert (f'-A {ext} -m comment --comment "masquerade traffic for default/lb:https external '
            f'destinations" -j KUBE-MARK-MASQ') in text
    nodeports = ('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be '
                 'the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS')
    nat_services = [line for line in text.splitlines() if line.startswith("-A KUBE-SERVICES ")]
    assert nat_services[-1] == nodeports


def test_service_without_endpoints_is_rejected(cluster):
    text = render_node_rules(cluster, cluster.nodes[0], ENDPOINTS)
    filter_table, nat_table = text.split("*nat\n")
    comment = '-m comment --comment "default/empty:dns has no endpoints"'
    assert f"-A KUBE-SERVICES {comment} -m udp -p udp -d 10.96.0.53 --dport 53 -j REJECT" in filter_table
    for rule in ("-m udp -p udp -d 198.51.100.6 --dport 53 -j REJECT",
                 "-m udp -p udp -d 203.0.113.10 --dport 53 -j REJECT",
                 "-m addrtype --dst-type LOCAL -m udp -p udp --dport 30053 -j REJECT"):
        assert f"-A KUBE-EXTERNAL-SERVICES {comment} {rule}" in filter_table
    assert "default/empty" not in nat_table
    assert svc_chain("default/empty:dns", "udp") not in text


def test_live_order_puts_standing_rejects_then_nat_then_filter(cluster):
    """A node in use commits the REJECT and DROP lines that will stand first (no chain
    declared, so nothing is flushed), then nat, then filter as kube-proxy writes it: see the
    kernel check in tests/integration/test_iptables_apply.py."""
    text = render_node_rules(cluster, cluster.nodes[0], ENDPOINTS)
    filter_table, nat_table = (part.replace("COMMIT\n", "") for part in text.split("*nat\n"))
    rejects = [line for line in filter_table.splitlines()
               if line.startswith(("-A KUBE-SERVICES ", "-A KUBE-EXTERNAL-SERVICES ")) and "-j REJECT" in line]
    assert len(rejects) == 4
    live = render_node_rules(cluster, cluster.nodes[0], ENDPOINTS, live=True)
    assert live == "\n".join(["*filter", *rejects, "COMMIT", "*nat" + "\n" + nat_table.rstrip("\n"),
                               "COMMIT", filter_table.rstrip("\n"), "COMMIT", ""])


def test_headless_service_gets_no_rules(cluster):
    assert "headless" not in render_node_rules(cluster, cluster.nodes[0], ENDPOINTS)


def test_flannel_masquerade_uses_the_node_subnet(cluster):
    node2 = render_node_rules(cluster, cluster.nodes[1], ENDPOINTS)
    assert ('-A FLANNEL-POSTRTG -s 10.244.2.0/24 -d 10.244.0.0/16 -m comment --comment "flanneld masq" '
            "-j RETURN") in node2
    assert ('-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" '
            "-j MASQUERADE --random-fully") in node2


def test_endpoints_default_to_the_selected_pods():
    labels = {"app": "web"}
    cluster = make_cluster(
        service("web", {"clusterIP": "10.96.0.50", "selector": labels, "ports": [{"port": 80}]}),
        pod("web-a", labels, "node1", "10.244.1.7", 80),
        pod("web-b", labels, "node2", "10.244.2.7", 80),
    )
    node = cluster.nodes[0]
    computed = {"default/web": endpoints_for(cluster.service("web"), cluster.pods.values())}
    text = render_node_rules(cluster, node)
    assert text == render_node_rules(cluster, node, computed)
    assert "--to-destination 10.244.2.7:80" in text


def test_large_cluster_mode_drops_endpoint_comments(cluster):
    eps = {"default/web": {"": [ep(f"10.244.{i // 250}.{i % 250 + 2}", 8080) for i in range(1001)]}}
    text = render_node_rules(cluster, cluster.nodes[0], eps)
    seps = [line for line in text.splitlines() if line.startswith("-A KUBE-SEP-")]
    assert len(seps) == 2002 and not any("comment" in line for line in seps)
    assert '"default/web cluster IP"' in text     # service-level comments stay


# ---------------------------------------------------------------------- syncs


def test_node_chains_are_the_declared_nat_chains(cluster):
    node = cluster.nodes[0]
    assert set(node_chains(cluster, node, ENDPOINTS)) == nat_chains_declared(
        render_node_rules(cluster, node, ENDPOINTS))


def test_stale_chains_are_flushed_and_deleted(cluster):
    node = cluster.nodes[0]
    previous = node_chains(cluster, node, ENDPOINTS)
    cluster.remove_service("default/sticky")
    now = without(ENDPOINTS, "default/web", "10.244.2.2")
    text = render_node_rules(cluster, node, now, previous_chains=previous)
    gone = sorted(set(previous) - set(node_chains(cluster, node, now)))
    assert gone == sorted([svc_chain("default/sticky:http", "tcp"),
                           sep_chain("default/sticky:http", "tcp", "10.244.1.3:8080"),
                           sep_chain("default/sticky:http", "tcp", "10.244.2.3:8080"),
                           sep_chain("default/web", "tcp", "10.244.2.2:8080")])
    for chain in gone:
        assert f":{chain} - [0:0]\n" in text and f"\n-X {chain}\n" in text
    assert text.count("\n-X ") == len(gone)
    check_golden("kubeproxy_stale.rules", text)


def test_partial_sync_rewrites_only_changed_services(cluster):
    node = cluster.nodes[0]
    previous = node_chains(cluster, node, ENDPOINTS)
    now = without(ENDPOINTS, "default/web", "10.244.2.2")
    text = render_node_rules(cluster, node, now, previous_chains=previous, changed={"default/web"})
    declared = nat_chains_declared(text)
    assert svc_chain("default/web", "tcp") in declared
    assert svc_chain("default/lb:https", "tcp") not in declared     # left as it is in the kernel
    assert '"default/lb:https cluster IP"' in text                  # KUBE-SERVICES is always whole
    assert f"-X {sep_chain('default/web', 'tcp', '10.244.2.2:8080')}" in text
    assert text.count("\n-X ") == 1
    check_golden("kubeproxy_partial.rules", text)


# ---------------------------------------------------------------------- jumps


def test_jumps_are_kube_proxys():
    jumps = {(j.table, j.chain, j.target): j for j in render_jumps()}
    assert len(jumps) == len(render_jumps())
    assert jumps["nat", "PREROUTING", "KUBE-SERVICES"].spec == (
        '-m comment --comment "kubernetes service portals" -j KUBE-SERVICES')
    assert jumps["filter", "INPUT", "KUBE-EXTERNAL-SERVICES"].spec == (
        '-m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" '
        "-j KUBE-EXTERNAL-SERVICES")
    assert not jumps["nat", "POSTROUTING", "FLANNEL-POSTRTG"].prepend


def test_missing_jumps_only_adds_what_is_absent():
    jumps = render_jumps()
    everything = missing_jumps_text("", jumps)
    assert everything.count("\n-I ") + everything.count("\n-A ") == len(jumps)
    assert ":KUBE-SERVICES - [0:0]" in everything      # target chains a fresh table lacks
    saved = "\n".join(["*filter", *[":" + j.target + " - [0:0]" for j in jumps if j.table == "filter"],
                       *[f"-A {j.chain} {j.spec}" for j in jumps if j.table == "filter"], "COMMIT",
                       "*nat", ":KUBE-SERVICES - [0:0]",
                       '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
                       "COMMIT"])
    rest = missing_jumps_text(saved, jumps)
    assert "*filter" not in rest
    assert "-I PREROUTING" not in rest and "-I OUTPUT 1 -m comment" in rest
    assert ":KUBE-SERVICES" not in rest and ":KUBE-POSTROUTING - [0:0]" in rest
    assert rest.endswith('-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG\nCOMMIT\n')


def test_error_context_marks_the_failing_line():
    text = "\n".join(f"line {i}" for i in range(1, 11))
    assert context(text, 5, 2) == ["      3 | line 3", "      4 | line 4", ">     5 | line 5",
                                   "      6 | line 6", "      7 | line 7"]
    assert context(text, 1, 1) == [">     1 | line 1", "      2 | line 2"]


def test_kernel_refuses_the_callers_own_namespace(tmp_path, monkeypatch):
    (tmp_path / "looks-harmless").symlink_to("/proc/self/ns/net")
    monkeypatch.setattr(netns, "NETNS_DIR", str(tmp_path))
    for bad in ("looks-harmless", "", "../net", "missing"):
        with pytest.raises(LabError):
            iptables.restore(bad, "*nat\nCOMMIT\n")
