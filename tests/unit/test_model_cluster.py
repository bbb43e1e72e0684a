"""netlab.model.cluster: admission, RC expansion, scheduling, pod IPAM and the state round trip."""
from __future__ import annotations

import ipaddress
import re
from collections import Counter

import pytest

from netlab.model.cluster import _SUFFIX_ALPHABET, Cluster, make_nodes
from netlab.model.errors import InvalidError, LabError, NotFoundError
from netlab.model.loader import load_lab as _load_lab

from .model_helpers import GUESTBOOK, check_error, cluster, lab, parse, pod_doc, rc_doc, svc_doc


def load_lab(*args, **kwargs):
    """These tests are about the lab's own objects: leave the kube-dns add-on out."""
    return _load_lab(*args, addons=False, **kwargs)


@pytest.fixture(scope="module")
def guestbook_state() -> dict:
    return load_lab(GUESTBOOK, seed=7).to_state()


@pytest.fixture
def guestbook(guestbook_state) -> Cluster:
    # Loading once and copying through the state keeps the module fast.
    return Cluster.from_state(guestbook_state)


def admit_error(c: Cluster, *docs, file="unit.yaml") -> LabError:
    with pytest.raises(LabError) as info:
        c.admit([parse(d, file) for d in docs])
    return info.value


def all_pod_ips(c: Cluster) -> list[str]:
    return [p.pod_ip for p in c.pods.values()]


# ---------------------------------------------------------------------------- nodes


def test_make_nodes():
    nodes = make_nodes(lab({"nodes": [{"name": "a", "labels": {"disk": "ssd"}}, "b"]}))
    a, b = nodes
    assert (a.index, a.internal_ip, a.pod_cidr) == (1, "192.168.56.11", "10.244.1.0/24")
    assert (b.index, b.internal_ip, b.pod_cidr) == (2, "192.168.56.12", "10.244.2.0/24")
    assert a.labels == {"kubernetes.io/hostname": "a", "kubernetes.io/os": "linux", "disk": "ssd"}
    assert (a.gateway, a.vtep_ip) == ("10.244.1.1", "10.244.1.0")
    assert a.netns == "netlab-unit.node-a"
    for n in nodes:
        first = int(n.vtep_mac.split(":")[0], 16)
        assert first & 0b10 and not first & 0b01          # locally administered, unicast
        assert re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", n.vtep_mac)
    assert a.vtep_mac != b.vtep_mac
    assert a.vtep_mac == make_nodes(lab({"nodes": ["a"]}))[0].vtep_mac           # stable


def test_lookups_not_found():
    c = cluster()
    for call, what in ((lambda: c.node("node9"), 'node "node9" not found (nodes: node1, node2)'),
                       (lambda: c.pod("web"), 'pod "web" not found in namespace "default"'),
                       (lambda: c.service("web", "kube-system"),
                        'service "web" not found in namespace "kube-system"')):
        with pytest.raises(NotFoundError) as info:
            call()
        assert str(info.value) == what and info.value.exit_code == 3


# ---------------------------------------------------------------------------- the guestbook


def test_guestbook_pods_and_services(guestbook):
    owners = Counter(p.owner for p in guestbook.pods.values())
    assert owners == {"ReplicationController/frontend": 3, "ReplicationController/redis-master": 1,
                      "ReplicationController/redis-slave": 2}
    assert sorted(guestbook.rcs) == ["default/frontend", "default/redis-master", "default/redis-slave"]
    for pod in guestbook.pods.values():
        rc = pod.owner.split("/")[1]
        assert re.fullmatch(rf"{rc}-[{_SUFFIX_ALPHABET}]{{5}}", pod.meta.name)
        assert pod.meta.labels == {"name": rc}
        assert pod.meta.source.endswith(f"{rc}-controller.yaml")
        assert pod.uid and pod.created > 0
    assert sorted(guestbook.services) == ["default/frontend", "default/redis-master", "default/redis-slave"]
    frontend = guestbook.service("frontend")
    assert frontend.type == "NodePort" and frontend.ports[0].node_port == 30001
    for name in ("redis-master", "redis-slave"):
        svc = guestbook.service(name)
        assert svc.type == "ClusterIP" and svc.ports[0].node_port == 0
    ips = [s.cluster_ip for s in guestbook.services.values()]
    assert len(set(ips)) == 3
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network("10.96.0.0/12") for ip in ips)
    assert "10.96.0.10" not in ips and "10.96.0.1" not in ips


def test_guestbook_spreads_pods_and_gives_unique_ips(guestbook):
    per_node = Counter(p.spec.node_name for p in guestbook.pods.values())
    assert per_node == {"node1": 3, "node2": 3}
    for rc in ("frontend", "redis-slave"):
        nodes = {p.spec.node_name for p in guestbook.pods.values() if p.owner.endswith("/" + rc)}
        assert nodes == {"node1", "node2"}
    ips = all_pod_ips(guestbook)
    assert len(set(ips)) == 6
    for pod in guestbook.pods.values():
        node = guestbook.node(pod.spec.node_name)
        assert ipaddress.ip_address(pod.pod_ip) in ipaddress.ip_network(node.pod_cidr)
        assert pod.pod_ip not in (node.gateway, node.vtep_ip)
        assert guestbook.pod_netns(pod) == f"netlab-guestbook.pod-default.{pod.meta.name}"
    assert sum(len(guestbook.pods_on(n.name)) for n in guestbook.nodes) == 6


def test_same_seed_same_cluster():
    a, b = load_lab(GUESTBOOK, seed=3), load_lab(GUESTBOOK, seed=3)
    assert [(p.meta.name, p.spec.node_name, p.pod_ip, p.uid) for p in a.pods.values()] == \
           [(p.meta.name, p.spec.node_name, p.pod_ip, p.uid) for p in b.pods.values()]
    assert set(load_lab(GUESTBOOK, seed=4).pods) != set(a.pods)


# ---------------------------------------------------------------------------- RC expansion


def test_rc_expands_to_replicas():
    c = cluster()
    added = c.admit([parse(rc_doc("web", 4))])
    assert [o.kind for o in added] == ["ReplicationController"] + ["Pod"] * 4
    rc = c.rcs["default/web"]
    assert len(c.rc_pods(rc)) == 4
    pod = c.rc_pods(rc)[0]
    assert pod.owner == "ReplicationController/web"
    assert pod.meta.raw["metadata"]["generateName"] == "web-"
    assert pod.meta.raw["metadata"]["ownerReferences"][0]["name"] == "web"
    assert pod.spec.containers[0].ports[0].name == "http"
    assert c.reconcile_rc(rc) == []                       # already at replicas


def test_rc_zero_replicas_and_reconcile_after_pod_removal():
    c = cluster()
    c.admit([parse(rc_doc("idle", 0)), parse(rc_doc("web", 2))])
    assert not c.rc_pods(c.rcs["default/idle"])
    rc = c.rcs["default/web"]
    gone = c.remove_pod(c.rc_pods(rc)[0].meta.key)
    new = c.reconcile_rc(rc)
    assert len(new) == 1 and new[0].meta.name != gone.meta.name
    assert len(c.rc_pods(rc)) == 2


def test_rc_template_does_not_share_state_between_pods():
    c = cluster()
    c.admit([parse(rc_doc("web", 2))])
    a, b = c.rc_pods(c.rcs["default/web"])
    assert a.spec is not b.spec and a.meta.raw is not b.meta.raw
    a.meta.labels["x"] = "y"
    assert "x" not in b.meta.labels and "x" not in c.rcs["default/web"].template_labels


def test_rc_pod_that_cannot_be_scheduled_names_the_rc_template():
    c = cluster()
    err = admit_error(c, rc_doc("web", 1, nodeSelector={"disk": "ssd"}), file="rc.yaml")
    check_error(err, "rc.yaml", "ReplicationController/web", "spec.template.spec.nodeSelector",
                "0/2 nodes are available")
    err = admit_error(c, rc_doc("web", 1, nodeName="node7"), file="rc.yaml")
    check_error(err, "rc.yaml", "ReplicationController/web", "spec.template.spec.nodeName",
                "Invalid value: 'node7': no such node")


# ---------------------------------------------------------------------------- scheduling


def test_node_name_pins_the_pod():
    c = cluster()
    c.admit([parse(pod_doc(f"p{i}", nodeName="node2")) for i in range(3)])
    assert {p.spec.node_name for p in c.pods.values()} == {"node2"}
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network("10.244.2.0/24") for ip in all_pod_ips(c))


def test_unknown_node_name():
    err = admit_error(cluster(), pod_doc("web", nodeName="node3"), file="pod.yaml")
    assert str(err) == "pod.yaml: Pod/web: spec.nodeName: Invalid value: 'node3': no such node"


def test_unpinned_pods_go_to_the_least_loaded_node():
    c = cluster({"nodes": 3})
    c.admit([parse(pod_doc("a", nodeName="node1")), parse(pod_doc("b", nodeName="node1")),
             parse(pod_doc("c", nodeName="node2"))])
    c.admit([parse(pod_doc("d"))])
    assert c.pod("d").spec.node_name == "node3"
    c.admit([parse(pod_doc("e"))])
    assert c.pod("e").spec.node_name == "node2"                # ties go to the lower index
    c.admit([parse(pod_doc("f")), parse(pod_doc("g"))])
    assert (c.pod("f").spec.node_name, c.pod("g").spec.node_name) == ("node3", "node1")


def test_node_selector():
    c = cluster({"nodes": [{"name": "fast", "labels": {"disk": "ssd"}}, "slow"]})
    c.admit([parse(pod_doc(f"db{i}", nodeSelector={"disk": "ssd"})) for i in range(3)]
            + [parse(pod_doc("pinned", nodeSelector={"kubernetes.io/hostname": "slow"}))])
    assert {c.pod(f"db{i}").spec.node_name for i in range(3)} == {"fast"}
    assert c.pod("pinned").spec.node_name == "slow"


def test_node_selector_that_matches_nothing():
    err = admit_error(cluster(), pod_doc("web", nodeSelector={"disk": "ssd"}), file="pod.yaml")
    check_error(err, "pod.yaml", "Pod/web", "spec.nodeSelector",
                "Invalid value: {'disk': 'ssd'}: 0/2 nodes are available: "
                "node(s) didn't match Pod's node affinity/selector")


# ---------------------------------------------------------------------------- pod IPAM


def test_many_pods_get_distinct_addresses_in_their_node_subnet():
    c = cluster({"nodes": 2, "network": {"nodeSubnetPrefix": 26}})    # 64 addresses a node
    c.admit([parse(rc_doc("big", 100))])
    ips = all_pod_ips(c)
    assert len(ips) == 100 == len(set(ips))
    for pod in c.pods.values():
        node = c.node(pod.spec.node_name)
        assert ipaddress.ip_address(pod.pod_ip) in ipaddress.ip_network(node.pod_cidr)
        assert pod.pod_ip not in (node.gateway, node.vtep_ip, str(ipaddress.ip_network(node.pod_cidr)[-1]))


def test_node_subnet_exhaustion_is_an_error_and_admits_nothing():
    c = cluster({"nodes": 1, "network": {"clusterCIDR": "10.244.0.0/28", "nodeSubnetPrefix": 29}})
    c.admit([parse(rc_doc("web", 5))])                     # .10 - .14 of 10.244.0.8/29
    assert sorted(all_pod_ips(c)) == [f"10.244.0.{i}" for i in range(10, 15)]
    before = c.to_state()
    with pytest.raises(LabError, match="no free address left in 10.244.0.8/29"):
        c.admit([parse(pod_doc("one-more"))])
    assert c.to_state() == before


def test_removed_pod_address_is_released_and_never_duplicated():
    c = cluster({"nodes": 1, "network": {"clusterCIDR": "10.244.0.0/28", "nodeSubnetPrefix": 29}})
    c.admit([parse(pod_doc(f"p{i}")) for i in range(5)])
    freed = c.remove_pod("default/p2").pod_ip
    assert freed not in all_pod_ips(c)
    c.admit([parse(pod_doc("again"))])                     # the only free address left
    assert c.pod("again").pod_ip == freed
    assert len(set(all_pod_ips(c))) == 5


def test_requested_pod_ip_is_honoured_only_when_free():
    c = cluster()
    first = pod_doc("a", nodeName="node1")
    first["status"] = {"podIP": "10.244.1.50"}
    c.admit([parse(first)])
    assert c.pod("a").pod_ip == "10.244.1.50"
    clash = pod_doc("b", nodeName="node1")
    clash["status"] = {"podIP": "10.244.1.50"}
    gateway = pod_doc("c", nodeName="node1")
    gateway["status"] = {"podIP": "10.244.1.1"}
    elsewhere = pod_doc("d", nodeName="node2")
    elsewhere["status"] = {"podIP": "10.244.1.51"}
    c.admit([parse(clash), parse(gateway), parse(elsewhere)])
    assert c.pod("b").pod_ip not in ("10.244.1.50", "10.244.1.1")
    assert c.pod("c").pod_ip not in ("10.244.1.50", "10.244.1.1")
    assert c.pod("d").pod_ip.startswith("10.244.2.")
    assert len(set(all_pod_ips(c))) == 4


# ---------------------------------------------------------------------------- namespaces and names


def test_namespaces():
    c = cluster()
    assert set(c.namespaces) == {"default", "kube-system"}
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}
    # The namespace may come after its objects in the batch: namespaces are admitted first.
    c.admit([parse(pod_doc("web", namespace="team")), parse(ns)])
    assert c.pod("web", "team").meta.key == "team/web"
    err = admit_error(c, ns, file="ns.yaml")
    check_error(err, "ns.yaml", "Namespace/team", "metadata.name", "already exists")
    c.admit([parse({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})])


def test_object_in_a_missing_namespace():
    err = admit_error(cluster(), svc_doc("web") | {"metadata": {"name": "web", "namespace": "nope"}},
                      file="svc.yaml")
    assert isinstance(err, NotFoundError)
    assert str(err) == 'svc.yaml: Service/web: metadata.namespace: namespaces "nope" not found'


def test_already_exists_across_batches():
    c = cluster()
    c.admit([parse(pod_doc("web")), parse(svc_doc("web")), parse(rc_doc("fe", 1))])
    for doc, kind in ((pod_doc("web"), "Pod"), (svc_doc("web"), "Service"), (rc_doc("fe", 1), "ReplicationController")):
        name = doc["metadata"]["name"]
        err = admit_error(c, doc, file="again.yaml")
        check_error(err, "again.yaml", f"{kind}/{name}", "metadata.name", f"{kind} default/{name} already exists")


def test_duplicates_within_one_batch():
    c = cluster()
    err = admit_error(c, pod_doc("web"), pod_doc("web"))
    check_error(err, "unit.yaml", "Pod/web", "metadata.name", "duplicate Pod default/web (also in unit.yaml)")
    assert not c.pods


# ---------------------------------------------------------------------------- all or nothing


def test_failed_admission_leaves_the_cluster_as_it_was(guestbook):
    before = guestbook.to_state()
    docs = [svc_doc("extra", type="NodePort", ports=[{"port": 80, "nodePort": 30100}]),
            rc_doc("extra", 3), pod_doc("bad", nodeName="node9")]
    err = admit_error(guestbook, *docs, file="extra.yaml")
    check_error(err, "extra.yaml", "Pod/bad", "spec.nodeName", "no such node")
    assert guestbook.to_state() == before
    assert "default/extra" not in guestbook.services and not any(
        p.owner == "ReplicationController/extra" for p in guestbook.pods.values())
    # Nothing the failed batch took stays taken: the same service and RC go in now.
    docs[2] = pod_doc("good", nodeName="node2")
    guestbook.admit([parse(d, "extra.yaml") for d in docs])
    assert guestbook.service("extra").ports[0].node_port == 30100
    assert len(guestbook.pods) == 6 + 3 + 1
    assert len(set(all_pod_ips(guestbook))) == 10


def test_seeded_cluster_stays_reproducible_after_a_refused_batch():
    def run() -> list[str]:
        c = cluster(seed=11)
        with pytest.raises(LabError):
            c.admit([parse(rc_doc("web", 2)), parse(pod_doc("bad", nodeName="node9"))])
        c.admit([parse(rc_doc("web", 2))])
        return sorted(c.pods)
    assert run() == run()


# ---------------------------------------------------------------------------- state round trip


def test_state_round_trip(guestbook):
    state = guestbook.to_state()
    again = Cluster.from_state(state)
    assert again.to_state() == state
    assert again.name == "guestbook" and [n.name for n in again.nodes] == ["node1", "node2"]
    for key, pod in guestbook.pods.items():
        other = again.pods[key]
        assert (other.spec.node_name, other.pod_ip, other.uid, other.owner, other.created) == \
               (pod.spec.node_name, pod.pod_ip, pod.uid, pod.owner, pod.created)
        assert other.meta.source == pod.meta.source and other.meta.labels == pod.meta.labels
    for key, svc in guestbook.services.items():
        other = again.services[key]
        assert (other.cluster_ip, other.type, [p.node_port for p in other.ports]) == \
               (svc.cluster_ip, svc.type, [p.node_port for p in svc.ports])
    assert again.rcs["default/frontend"].replicas == 3


def test_state_is_plain_data(guestbook):
    import json
    state = guestbook.to_state()
    assert json.loads(json.dumps(state)) == state
    pod_doc_ = next(d for d in state["objects"] if d["kind"] == "Pod")
    assert pod_doc_["spec"]["nodeName"] and pod_doc_["status"]["podIP"] and pod_doc_["metadata"]["uid"]
    fe = next(d for d in state["objects"] if d["kind"] == "Service" and d["metadata"]["name"] == "frontend")
    assert fe["spec"]["ports"][0]["nodePort"] == 30001 and fe["spec"]["clusterIP"]


def test_allocations_survive_the_round_trip(guestbook):
    again = Cluster.from_state(guestbook.to_state())
    again.admit([parse(rc_doc("more", 6)),
                 parse(svc_doc("more", type="NodePort", ports=[{"port": 80}]))])
    ips = all_pod_ips(again)
    assert len(ips) == 12 == len(set(ips))
    cluster_ips = [s.cluster_ip for s in again.services.values()]
    assert len(set(cluster_ips)) == 4
    assert again.service("more").ports[0].node_port not in (0, 30001)
    err = admit_error(again, svc_doc("clash", type="NodePort", ports=[{"port": 80, "nodePort": 30001}]))
    check_error(err, "unit.yaml", "Service/clash", "spec.ports[0].nodePort", "already allocated")
    taken = guestbook.service("redis-master").cluster_ip
    err = admit_error(again, svc_doc("clash", clusterIP=taken))
    check_error(err, "unit.yaml", "Service/clash", "spec.clusterIP", "already allocated")


def test_round_trip_keeps_namespaces_and_headless_services():
    c = cluster()
    c.admit([parse({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
             parse(svc_doc("db", clusterIP="None") | {"metadata": {"name": "db", "namespace": "team"}})])
    again = Cluster.from_state(c.to_state())
    assert set(again.namespaces) == {"default", "kube-system", "team"}
    assert again.service("db", "team").headless
    assert again.to_state() == c.to_state()


def test_remove_service_releases_its_addresses():
    c = cluster()
    c.admit([parse(svc_doc("lb", type="LoadBalancer", ports=[{"port": 80, "nodePort": 30005}]))])
    svc = c.service("lb")
    ip, lb_ip = svc.cluster_ip, svc.load_balancer_ip
    c.remove_service("default/lb")
    with pytest.raises(NotFoundError):
        c.service("lb")
    c.admit([parse(svc_doc("lb2", type="LoadBalancer", clusterIP=ip, loadBalancerIP=lb_ip,
                           ports=[{"port": 80, "nodePort": 30005}]))])
    assert c.service("lb2").cluster_ip == ip and c.service("lb2").load_balancer_ip == lb_ip


def test_every_lab_gets_the_kube_dns_addon_unless_disabled(tmp_path):
    c = _load_lab(GUESTBOOK, seed=1)
    svc = c.service("kube-dns", "kube-system")
    assert svc.cluster_ip == c.config.dns_ip == "10.96.0.10"
    assert [(p.name, p.port, p.protocol) for p in svc.ports] == [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")]
    dns_pods = [p for p in c.pods.values() if p.meta.namespace == "kube-system"]
    assert [ctr.name for ctr in dns_pods[0].spec.containers] == ["kubedns", "dnsmasq"]
    (tmp_path / "lab.yaml").write_text("apiVersion: netlab/v1\nkind: Lab\nmetadata: {name: x}\nspec: {dns: false}\n"
                                       "---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
                                       "spec: {containers: [{name: c, image: x}]}\n")
    assert list(_load_lab(tmp_path).pods) == ["default/p"]


def test_an_rc_controls_its_own_pods_not_another_rcs_that_match_its_selector():
    from netlab.model.objects import parse_object
    c = _load_lab(GUESTBOOK, seed=1, addons=False)
    newer = parse_object({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "frontend-v2"},
                          "spec": {"replicas": 2, "selector": {"name": "frontend", "version": "v2"},
                                   "template": {"metadata": {"labels": {"name": "frontend", "version": "v2"}},
                                                "spec": {"containers": [{"name": "c", "image": "x"}]}}}}, "v2.yaml")
    c.admit([newer])
    old = c.rcs["default/frontend"]
    assert len(c.rc_pods(old)) == 3 and len(c.rc_pods(newer)) == 2
    assert all(p.owner == "ReplicationController/frontend" for p in c.rc_pods(old))


def test_an_rc_template_must_restart_always(tmp_path):
    from netlab.model.objects import parse_object
    doc = {"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "r"},
           "spec": {"replicas": 1, "selector": {"a": "b"}, "template": {
               "metadata": {"labels": {"a": "b"}},
               "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}}
    with pytest.raises(InvalidError, match="rc.yaml: ReplicationController/r: spec.template.spec.restartPolicy"):
        parse_object(doc, "rc.yaml")
