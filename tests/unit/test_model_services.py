"""The allocation half of netlab.model.services: clusterIPs, nodePorts, the load-balancer pool and
named targetPorts, with errors worded like the API server's 422 responses."""
from __future__ import annotations

import pytest

from netlab.model.cluster import Cluster
from netlab.model.errors import InvalidError, LabError
from netlab.model.services import ServiceAllocator

from .model_helpers import check_error, cluster, parse, rc_doc, svc_doc

S = "labs/x/svc.yaml"


def admit(c: Cluster, *docs, file=S):
    return c.admit([parse(d, file) for d in docs])


def refused(c: Cluster, doc, field, *fragments, file=S) -> str:
    before = c.to_state()
    with pytest.raises(LabError) as info:
        admit(c, doc, file=file)
    assert c.to_state() == before
    return check_error(info.value, file, f"Service/{doc['metadata']['name']}", field, *fragments)


# ---------------------------------------------------------------------------- clusterIP


def test_automatic_cluster_ips_skip_the_kubernetes_and_dns_addresses():
    c = cluster()
    admit(c, *[svc_doc(f"s{i}") for i in range(10)])
    ips = [c.service(f"s{i}").cluster_ip for i in range(10)]
    assert ips == [f"10.96.0.{i}" for i in (2, 3, 4, 5, 6, 7, 8, 9, 11, 12)]


def test_dns_address_goes_to_the_service_that_names_it():
    c = cluster()
    admit(c, svc_doc("a"), svc_doc("kube-dns", clusterIP="10.96.0.10", ports=[{"port": 53, "protocol": "UDP"}]))
    assert c.service("kube-dns").cluster_ip == "10.96.0.10"


def test_explicit_cluster_ip():
    c = cluster()
    admit(c, svc_doc("web", clusterIP="10.100.0.7"))
    assert c.service("web").cluster_ip == "10.100.0.7"


def test_cluster_ip_already_allocated_message_is_exact():
    c = cluster()
    admit(c, svc_doc("a", clusterIP="10.96.0.50"))
    assert refused(c, svc_doc("b", clusterIP="10.96.0.50"), "spec.clusterIP") == (
        "labs/x/svc.yaml: Service/b: spec.clusterIP: Invalid value: '10.96.0.50': "
        "provided IP is already allocated")


@pytest.mark.parametrize("ip,why", [
    ("10.200.0.1", "provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12"),
    ("10.96.0.0", "provided IP is not in the valid range"),             # network address
    ("10.111.255.255", "provided IP is not in the valid range"),        # broadcast address
    ("10.96.0.300", "must be a valid IP address, (e.g. 10.9.8.7)"),
    ("fd00::1", "must be a valid IP address"),
])
def test_bad_cluster_ip(ip, why):
    refused(cluster(), svc_doc("web", clusterIP=ip), "spec.clusterIP", f"Invalid value: '{ip}': {why}")


def test_the_kubernetes_address_goes_to_the_service_that_names_it():
    c = cluster()
    admit(c, svc_doc("a"), svc_doc("kubernetes", clusterIP="10.96.0.1", ports=[{"port": 443}]))
    assert c.service("kubernetes").cluster_ip == "10.96.0.1"
    refused(c, svc_doc("web", clusterIP="10.96.0.1"), "spec.clusterIP",
            "Invalid value: '10.96.0.1': provided IP is already allocated")


def test_headless_service_takes_no_address():
    c = cluster()
    admit(c, svc_doc("db", clusterIP="None"), svc_doc("web"))
    assert c.service("db").cluster_ip == "None"
    assert c.service("web").cluster_ip == "10.96.0.2"


def test_explicit_cluster_ip_later_in_the_batch_is_not_stolen():
    c = cluster()
    admit(c, svc_doc("a"), svc_doc("b", clusterIP="10.96.0.2"))
    assert c.service("b").cluster_ip == "10.96.0.2"


# ---------------------------------------------------------------------------- nodePort


def test_automatic_node_ports_are_the_lowest_free_ones():
    c = cluster()
    admit(c, svc_doc("fixed", type="NodePort", ports=[{"port": 80, "nodePort": 30000}]),
          svc_doc("auto", type="NodePort", ports=[{"name": "a", "port": 80}, {"name": "b", "port": 81}]))
    assert [p.node_port for p in c.service("auto").ports] == [30001, 30002]


@pytest.mark.parametrize("port", [29999, 32768, 80])
def test_node_port_out_of_range(port):
    msg = refused(cluster(), svc_doc("web", type="NodePort", ports=[{"port": 80, "nodePort": port}]),
                  "spec.ports[0].nodePort")
    assert msg == (f"labs/x/svc.yaml: Service/web: spec.ports[0].nodePort: Invalid value: {port}: "
                   "provided port is not in the valid range. The range of valid ports is 30000-32767")


def test_node_port_taken_and_released():
    c = cluster()
    admit(c, svc_doc("frontend", type="NodePort", ports=[{"port": 80, "nodePort": 30001}]))
    msg = refused(c, svc_doc("other", type="NodePort", ports=[{"port": 80, "nodePort": 30001}]),
                  "spec.ports[0].nodePort")
    assert msg.endswith("Invalid value: 30001: provided port is already allocated")
    c.remove_service("default/frontend")
    admit(c, svc_doc("other", type="NodePort", ports=[{"port": 80, "nodePort": 30001}]))
    assert c.service("other").ports[0].node_port == 30001


def test_node_port_range_from_lab_yaml():
    c = cluster({"network": {"nodePortRange": "31000-31001"}})
    admit(c, svc_doc("a", type="NodePort"), svc_doc("b", type="NodePort"))
    assert [c.service(n).ports[0].node_port for n in "ab"] == [31000, 31001]
    refused(c, svc_doc("c", type="NodePort"), "spec.ports[0].nodePort", "no free node port left in 31000-31001")
    refused(c, svc_doc("d", type="NodePort", ports=[{"port": 80, "nodePort": 30000}]),
            "spec.ports[0].nodePort", "The range of valid ports is 31000-31001")


def test_cluster_ip_service_gets_no_node_port():
    c = cluster()
    admit(c, svc_doc("web"))
    assert c.service("web").ports[0].node_port == 0 and not c.service_alloc.node_ports


# ---------------------------------------------------------------------------- LoadBalancer


def test_load_balancer_gets_pool_address_and_node_port():
    c = cluster()
    admit(c, svc_doc("a", type="LoadBalancer"), svc_doc("b", type="LoadBalancer"))
    a, b = c.service("a"), c.service("b")
    assert (a.load_balancer_ip, b.load_balancer_ip) == ("198.51.100.1", "198.51.100.2")
    assert a.ports[0].node_port == 30000 and b.ports[0].node_port == 30001
    assert a.cluster_ip.startswith("10.96.")


def test_explicit_load_balancer_ip():
    c = cluster()
    admit(c, svc_doc("a", type="LoadBalancer", loadBalancerIP="198.51.100.9"))
    assert c.service("a").load_balancer_ip == "198.51.100.9"
    refused(c, svc_doc("b", type="LoadBalancer", loadBalancerIP="198.51.100.9"), "spec.loadBalancerIP",
            "Invalid value: '198.51.100.9': already allocated")
    refused(c, svc_doc("b", type="LoadBalancer", loadBalancerIP="203.0.113.9"), "spec.loadBalancerIP",
            "Invalid value: '203.0.113.9': not in the lab's load-balancer pool 198.51.100.0/28")
    refused(c, svc_doc("b", type="LoadBalancer", loadBalancerIP="198.51.100.0"), "spec.loadBalancerIP",
            "not in the lab's load-balancer pool")


def test_load_balancer_pool_exhaustion_and_release():
    c = cluster({"network": {"loadBalancerPool": "198.51.100.0/30"}})        # .1 and .2
    admit(c, svc_doc("a", type="LoadBalancer"), svc_doc("b", type="LoadBalancer"))
    with pytest.raises(LabError, match="no free address left in 198.51.100.0/30"):
        admit(c, svc_doc("c", type="LoadBalancer"))
    c.remove_service("default/a")
    admit(c, svc_doc("c", type="LoadBalancer"))
    assert c.service("c").load_balancer_ip == "198.51.100.1"


# ---------------------------------------------------------------------------- named targetPort


def test_named_target_port_declared_by_the_selected_pods():
    c = cluster()
    admit(c, rc_doc("web", 2), svc_doc("web", ports=[{"port": 80, "targetPort": "http"}]))
    assert c.service("web").ports[0].target == "http"


def test_named_target_port_not_declared_in_the_same_batch():
    c = cluster()
    with pytest.raises(InvalidError) as info:
        # The RC is in another file of the same batch; services are admitted before it.
        c.admit([parse(svc_doc("web", ports=[{"port": 80, "targetPort": "metrics"}]), S),
                 parse(rc_doc("web", 2), "labs/x/rc.yaml")])
    assert str(info.value) == (
        "labs/x/svc.yaml: Service/web: spec.ports[0].targetPort: Invalid value: 'metrics': "
        "no container of the selected pods declares a port with this name")
    assert not c.pods and not c.services and not c.rcs


def test_named_target_port_checked_against_existing_pods():
    c = cluster()
    admit(c, rc_doc("web", 2))
    refused(c, svc_doc("web", ports=[{"port": 80, "targetPort": "metrics"}]), "spec.ports[0].targetPort",
            "Invalid value: 'metrics'")
    # A service that selects nothing yet may name any port.
    admit(c, svc_doc("later", selector={"app": "later"}, ports=[{"port": 80, "targetPort": "metrics"}]))


# ---------------------------------------------------------------------------- the allocator itself


def test_allocator_rolls_back_a_refused_service():
    c = cluster()
    alloc: ServiceAllocator = c.service_alloc
    svc = parse(svc_doc("web", type="LoadBalancer", clusterIP="10.96.0.50",
                        ports=[{"name": "a", "port": 80}, {"name": "b", "port": 81, "nodePort": 40000}]), S)
    with pytest.raises(InvalidError):
        alloc.admit(svc, c)
    assert alloc.ips.is_free("10.96.0.50")
    assert not alloc.node_ports
    assert alloc.lb.is_free("198.51.100.1")


def test_allocator_release_and_restore():
    c = cluster()
    admit(c, svc_doc("lb", type="LoadBalancer", clusterIP="10.96.0.77", ports=[{"port": 80, "nodePort": 30500}]))
    svc = c.service("lb")
    alloc = c.service_alloc
    alloc.release(svc)
    assert alloc.ips.is_free("10.96.0.77") and alloc.lb.is_free(svc.load_balancer_ip)
    assert 30500 not in alloc.node_ports
    alloc.restore(svc)
    assert not alloc.ips.is_free("10.96.0.77") and not alloc.lb.is_free(svc.load_balancer_ip)
    assert 30500 in alloc.node_ports


def test_one_service_may_use_a_node_port_for_tcp_and_udp():
    c = cluster()
    admit(c, svc_doc("dns", type="NodePort", ports=[
        {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP", "nodePort": 30053}]))
    assert [p.node_port for p in c.service("dns").ports] == [30053, 30053]


def test_a_refused_service_keeps_the_fields_it_asked_for():
    c = cluster()
    admit(c, svc_doc("a", type="NodePort", ports=[{"port": 80, "nodePort": 30080}]))
    bad = parse(svc_doc("b", type="NodePort", ports=[{"port": 80, "nodePort": 30080}]))
    with pytest.raises(LabError):
        c.admit([bad])
    assert bad.cluster_ip == "" and bad.ports[0].node_port == 30080


def test_a_replacement_pod_gets_the_next_address_not_the_freed_one():
    c = cluster({"nodes": 1})
    admit(c, rc_doc("web", replicas=3))
    first = sorted(c.pods.values(), key=lambda p: p.pod_ip)[0]
    c.remove_pod(first.meta.key)
    c = Cluster.from_state(c.to_state())       # as the CLI does: every command reloads state
    c.reconcile_rc(next(iter(c.rcs.values())))
    assert first.pod_ip not in {p.pod_ip for p in c.pods.values()}
