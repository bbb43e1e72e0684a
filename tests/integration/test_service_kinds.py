"""Issue 10, Services: traffic policies, the load-balancer firewall, Services without a
selector, ExternalName and several load-balancer addresses, with real clients: the outside
client (192.168.56.2), the simulated internet host (203.0.113.10) and pods."""
from __future__ import annotations

import socket

import pytest

from netlab import engine
from netlab.cli.get_cmds import external_ip
from netlab.kernel import iptables
from netlab.model import names
from netlab.probe import sockets
from netlab.plan.network import client_ip, internet_host_ip

from .netutil import http_get, tcp_connects

pytestmark = pytest.mark.root

LAB = """
apiVersion: netlab/v1
kind: Lab
metadata: {name: ignored}
spec: {nodes: 2, dns: false}
---
apiVersion: v1
kind: Pod
metadata: {name: web-a, labels: {app: web}}
spec:
  nodeName: node1
  containers: [{name: web, image: example/web, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client1, labels: {role: client}}
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
metadata: {name: local}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, nodePort: 30081}]
---
apiVersion: v1
kind: Service
metadata: {name: fenced}
spec:
  type: LoadBalancer
  loadBalancerSourceRanges: [192.168.56.0/24]
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata:
  name: multi
  annotations: {metallb.universe.tf/loadBalancerIPs: "198.51.100.9,198.51.100.10"}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: nodelocal}
spec:
  internalTrafficPolicy: Local
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: upstream}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: upstream}
subsets:
- addresses: [{ip: 203.0.113.10}]
  ports: [{name: http, port: 8099}]
---
apiVersion: v1
kind: Service
metadata: {name: sliced}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: sliced-1
  labels: {kubernetes.io/service-name: sliced}
addressType: IPv4
endpoints:
- addresses: [203.0.113.10]
  conditions: {ready: true}
ports: [{name: http, port: 8099, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: docs}
spec:
  type: ExternalName
  externalName: www.example.net
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from netlab import engine as eng
    import uuid
    src = tmp_path_factory.mktemp("kinds")
    (src / "lab.yaml").write_text(LAB)
    name = "t" + uuid.uuid4().hex[:8]
    try:
        cluster = eng.up(src, name=name, wait=60)
        yield cluster
    finally:
        eng.teardown(name)
        assert not eng.lab_namespaces(name)


def _raw_get(ns: str, ip: str, port: int, path: str = "/") -> tuple[str, str]:
    def fetch():
        from netlab.kernel import netns
        netns.enter(ns)
        with socket.create_connection((ip, port), timeout=2) as s:
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return head.split(b"\r\n")[0].decode(), body.decode()
    from netlab.kernel import netns
    return netns.in_thread(fetch)


def test_external_traffic_policy_local_keeps_the_client_and_drops_without_local_endpoints(lab):
    client = names.client_netns(lab.name)
    node1, node2 = lab.nodes
    # node1 runs the pod: the pod sees the outside client's own address, not node1's.
    seen = http_get(client, node1.internal_ip, 30081, "/clientip")
    assert seen.rsplit(":", 1)[0] == client_ip(lab)
    # node2 has no local endpoint: kube-proxy drops (no answer at all, not a refusal).
    assert not tcp_connects(client, node2.internal_ip, 30081, timeout=1.0)
    rules = iptables.save(node2.netns)
    assert '"default/local has no local endpoints"' in rules and "-j DROP" in rules
    # Pods are short-circuited to the Cluster chain: the NodePort works from a pod on node2.
    assert http_get(lab.pod_netns(lab.pod("client2")), node2.internal_ip, 30081, "/hostname") == "web-a"


def test_verify_proves_the_local_policy_node_by_node(lab):
    """verify's nodeport-local: node1 (its pod) serves with the client's address kept, node2
    drops; and it fails when node2's DROP rule is gone (its NodePort would answer then)."""
    import json
    import subprocess
    import sys
    run = [sys.executable, "-m", "netlab", "verify", "nodeport-local", "--lab", lab.name, "-o", "json"]

    def verify() -> tuple[int, str]:
        proc = subprocess.run(run, capture_output=True, text=True, timeout=120)
        return proc.returncode, {c["id"]: c for c in json.loads(proc.stdout)["checks"]}["nodeport-local"]["status"]
    assert verify() == (0, "pass")
    node2 = lab.nodes[1]
    saved = iptables.save(node2.netns, "filter")      # kube-proxy's DROP is a filter rule
    drops = [line.replace("-A ", "-D ", 1) for line in saved.splitlines()
             if "default/local" in line and "has no local endpoints" in line and "-j DROP" in line]
    assert drops
    try:
        iptables.restore(node2.netns, "*filter\n" + "\n".join(drops) + "\nCOMMIT\n")
        assert verify() == (1, "fail")
    finally:
        iptables.restore(node2.netns, saved, noflush=False)


def test_health_check_node_port_answers_with_the_local_endpoint_count(lab):
    client = names.client_netns(lab.name)
    node1, node2 = lab.nodes
    port = lab.service("local").health_check_node_port
    assert 30000 <= port <= 32767 and port != 30081
    import time
    deadline = time.monotonic() + 10
    while True:
        try:
            status1, body1 = _raw_get(client, node1.internal_ip, port)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    import json
    assert status1.endswith("200 OK")
    assert json.loads(body1) == {"service": {"namespace": "default", "name": "local"}, "localEndpoints": 1,
                                 "serviceProxyHealthy": True}
    status2, body2 = _raw_get(client, node2.internal_ip, port)
    assert status2.endswith("503 Service Unavailable") and json.loads(body2)["localEndpoints"] == 0
    saved = iptables.save(node2.netns, "filter")
    assert "default/local health check node port" in saved and f"--dport {port} -j ACCEPT" in saved


def test_load_balancer_source_ranges_admit_the_client_and_drop_the_internet(lab):
    lb = lab.service("fenced").load_balancer_ips[0]
    assert tcp_connects(names.client_netns(lab.name), lb, 80)
    assert not tcp_connects(names.internet_netns(lab.name), lb, 80, timeout=1.0)
    rules = iptables.save(lab.nodes[0].netns)
    assert "KUBE-PROXY-FIREWALL" in rules and "traffic not accepted by KUBE-FW-" in rules


def test_internal_traffic_policy_local(lab):
    ip = lab.service("nodelocal").cluster_ip
    assert http_get(lab.pod_netns(lab.pod("client1")), ip, 80, "/hostname") == "web-a"
    assert not tcp_connects(lab.pod_netns(lab.pod("client2")), ip, 80, timeout=1.0)


@pytest.mark.parametrize("service", ["upstream", "sliced"])
def test_a_service_without_selector_reaches_its_written_endpoints(lab, service):
    ip = lab.service(service).cluster_ip
    with sockets.Listener(names.internet_netns(lab.name), internet_host_ip(lab), port=8099, limit=1):
        out = sockets.in_netns(lab.pod_netns(lab.pod("client1")), sockets.ask_listener, ip, 80)
    assert out.ok, out.seen
    # Egress to the internet is masqueraded to the pod's node, as for any pod traffic.
    assert out.body.rsplit(":", 1)[0] == lab.nodes[0].internal_ip
    from netlab.cli import get_cmds  # noqa: F401  (the CLI shows them as `get endpoints` would)
    from netlab.model.services import service_endpoints
    assert [str(e) for e in service_endpoints(lab, lab.service(service))["http"]] == ["203.0.113.10:8099"]


def test_external_name_has_no_rules_and_shows_its_name(lab):
    svc = engine.load(lab.name).service("docs")
    assert svc.type == "ExternalName" and not svc.cluster_ip and external_ip(svc) == "www.example.net"
    assert "default/docs" not in iptables.save(lab.nodes[0].netns)


def test_several_load_balancer_addresses(lab):
    svc = engine.load(lab.name).service("multi")
    assert svc.load_balancer_ips == ["198.51.100.9", "198.51.100.10"]
    assert external_ip(svc, wide=True) == "198.51.100.9,198.51.100.10"
    assert external_ip(svc) == "198.51.100.9,..."
    for ip in svc.load_balancer_ips:
        assert http_get(names.client_netns(lab.name), ip, 80, "/hostname") == "web-a"


NEVER_READY = """
apiVersion: netlab/v1
kind: Lab
metadata: {name: ignored}
spec: {nodes: 1, dns: false}
---
apiVersion: v1
kind: Pod
metadata: {name: shy, labels: {app: web}}
spec:
  containers:
  - name: c
    image: example/web
    ports: [{containerPort: 8080}]
    readinessProbe: {httpGet: {path: /never, port: 8080}, periodSeconds: 1, failureThreshold: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: keen, labels: {app: web}}
spec:
  containers: [{name: c, image: example/web, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""


def test_up_reports_a_pod_that_is_never_ready_instead_of_failing(make_lab):
    """Issue 10 item 9: `up` waits for pods started and rules in sync, not for readiness."""
    import time
    from netlab.model.services import service_endpoints
    report: dict = {}
    started = time.monotonic()
    cluster = make_lab(manifests=NEVER_READY, wait=30, report=report)
    assert time.monotonic() - started < 20                   # well before the timeout
    assert list(report["notReady"]) == ["default/shy"]
    assert "Readiness probe failed" in report["notReady"]["default/shy"]
    # Only the ready pod is an endpoint, and the rules say so already.
    ready = engine.ready_pods(cluster.name)
    eps = service_endpoints(cluster, cluster.service("web"), ready)[""]
    assert [e.pod for e in eps] == ["default/keen"]
    ip = cluster.service("web").cluster_ip
    for _ in range(4):
        assert http_get(cluster.nodes[0].netns, ip, 80, "/hostname") == "keen"


def test_wait_ready_is_the_strict_wait(make_lab):
    from netlab.model.errors import StateError
    with pytest.raises(StateError, match="not serving"):
        make_lab(manifests=NEVER_READY, wait=3, wait_ready=True)
