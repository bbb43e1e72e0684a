"""Services for real: ClusterIP load balancing, affinity, NodePort, LoadBalancer, egress SNAT,
REJECT without endpoints, and live changes re-syncing every node."""
from __future__ import annotations

import collections
import socket
import threading

import pytest

from netlab import engine
from netlab.kernel import iptables, netns
from netlab.model import names
from netlab.model.errors import LabError
from netlab.model.loader import load_objects
from netlab.plan import kubeproxy
from netlab.plan.network import internet_host_ip

from .netutil import http_get, tcp_connects

pytestmark = pytest.mark.root

LAB = """
apiVersion: netlab/v1
kind: Lab
metadata: {name: ignored}
spec: {nodes: 3}
---
apiVersion: v1
kind: ReplicationController
metadata: {name: web}
spec:
  replicas: 3
  selector: {app: web}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: example/web, ports: [{containerPort: 8080, name: http}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {role: client}}
spec:
  nodeName: node1
  containers: [{name: c, image: example/client, ports: [{containerPort: 9000}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client2, labels: {role: client}}
spec:
  nodeName: node2
  containers: [{name: c, image: example/client, ports: [{containerPort: 9000}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: sticky}
spec:
  selector: {app: web}
  sessionAffinity: ClientIP
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: public}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]
---
apiVersion: v1
kind: Service
metadata: {name: nobody}
spec:
  selector: {app: nothing-matches}
  ports: [{port: 80, targetPort: 8080}]
"""

CONNECTIONS = 60     # bounded: enough that each of 3 endpoints shows up with near certainty


@pytest.fixture
def lab(make_lab):
    return make_lab(manifests=LAB)


def _client_ns(cluster, name="client"):
    return cluster.pod_netns(cluster.pod(name))


def _web_pods(cluster):
    return sorted(p.meta.name for p in cluster.pods.values() if p.meta.labels.get("app") == "web")


def test_clusterip_spreads_over_every_endpoint(lab):
    svc = lab.service("web")
    seen = collections.Counter(http_get(_client_ns(lab), svc.cluster_ip, 80, "/hostname")
                               for _ in range(CONNECTIONS))
    assert sorted(seen) == _web_pods(lab)
    # Random with probabilities 1/3, 1/2, 1: each endpoint gets a fair share (P(<5 of 60) ~ 1e-5).
    assert min(seen.values()) >= 5, seen


def test_session_affinity_keeps_a_client_on_one_endpoint(lab):
    svc = lab.service("sticky")
    for client in ("client", "client2"):
        seen = {http_get(_client_ns(lab, client), svc.cluster_ip, 80, "/hostname") for _ in range(20)}
        assert len(seen) == 1, f"{client} was spread over {seen}"


def test_nodeport_answers_on_every_node_from_outside(lab):
    client = names.client_netns(lab.name)
    for node in lab.nodes:
        assert http_get(client, node.internal_ip, 30080, "/hostname") in _web_pods(lab)


def test_loadbalancer_answers_from_outside(lab):
    svc = lab.service("public")
    assert svc.load_balancer_ip
    seen = {http_get(names.client_netns(lab.name), svc.load_balancer_ip, 80, "/hostname") for _ in range(15)}
    assert seen <= set(_web_pods(lab)) and seen


def test_service_without_endpoints_is_rejected(lab):
    svc = lab.service("nobody")

    def attempt():
        netns.enter(_client_ns(lab))
        with socket.socket() as s:
            s.settimeout(2)
            try:
                s.connect((svc.cluster_ip, 80))
            except ConnectionRefusedError:
                return "refused"
            except socket.timeout:
                return "timeout"
            return "connected"
    # kube-proxy's filter rule answers with ICMP port unreachable: refused at once, not a timeout.
    assert netns.in_thread(attempt) == "refused"


def test_pod_to_internet_leaves_snatted_to_its_node(lab):
    internet = names.internet_netns(lab.name)
    ready = threading.Event()
    seen: dict = {}

    def listen():
        netns.enter(internet)
        with socket.socket() as srv:
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            srv.bind(("0.0.0.0", 8000))
            srv.listen(1)
            srv.settimeout(5)
            ready.set()
            conn, peer = srv.accept()
            seen["peer"] = peer[0]
            conn.close()
    t = threading.Thread(target=listen)
    t.start()
    ready.wait(5)
    assert tcp_connects(_client_ns(lab), internet_host_ip(lab), 8000, timeout=3)
    t.join(6)
    assert seen["peer"] == lab.node("node1").internal_ip


def test_pod_reaches_itself_through_its_service(lab):
    """Hairpin: the service picks the calling pod itself, and the reply still finds its way."""
    web = lab.pod(_web_pods(lab)[0])
    svc = lab.service("web")
    names_seen = {http_get(lab.pod_netns(web), svc.cluster_ip, 80, "/hostname") for _ in range(30)}
    assert web.meta.name in names_seen


def test_live_apply_and_delete_resync_every_node(lab, tmp_path):
    manifest = tmp_path / "extra.yaml"
    manifest.write_text("""
apiVersion: v1
kind: Service
metadata: {name: extra}
spec:
  selector: {app: web}
  ports: [{port: 81, targetPort: 8080}]
""")
    engine.apply(lab.name, load_objects(manifest))
    cluster = engine.load(lab.name)
    extra = cluster.service("extra")
    assert http_get(_client_ns(cluster), extra.cluster_ip, 81, "/hostname") in _web_pods(cluster)
    chain = kubeproxy.svc_chain("default/extra", "tcp")
    for node in cluster.nodes:
        assert chain in iptables.list_chains(node.netns)
    engine.delete(lab.name, "services", "extra")
    for node in cluster.nodes:
        assert chain not in iptables.list_chains(node.netns)
    assert not tcp_connects(_client_ns(cluster), extra.cluster_ip, 81)


def test_bad_change_leaves_the_lab_unchanged(lab, tmp_path):
    manifest = tmp_path / "clash.yaml"
    manifest.write_text("""
apiVersion: v1
kind: Service
metadata: {name: clash}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, nodePort: 30080}]
""")
    before = engine.load(lab.name).to_state()
    with pytest.raises(LabError, match="30080.*already allocated"):
        engine.apply(lab.name, load_objects(manifest))
    assert engine.load(lab.name).to_state() == before


def test_scaling_an_rc_changes_the_endpoints(lab):
    import copy
    rc = copy.copy(engine.load(lab.name).rcs["default/web"])
    rc.replicas = 1
    engine.apply(lab.name, [rc])
    cluster = engine.load(lab.name)
    assert len(_web_pods(cluster)) == 1
    seen = {http_get(_client_ns(cluster), cluster.service("web").cluster_ip, 80, "/hostname") for _ in range(10)}
    assert seen == set(_web_pods(cluster))
