"""Service discovery for real: kube-dns (kubedns + the Debian dnsmasq) answering pods, kubelet's
environment variables, and the guestbook writing and reading through both."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from dnslib import RCODE, DNSRecord

from netlab import engine
from netlab.kernel import netns
from netlab.model import names
from netlab.model.loader import load_objects

from .netutil import http_get

pytestmark = pytest.mark.root

LAB = """
apiVersion: netlab/v1
kind: Lab
metadata: {name: ignored}
spec: {nodes: 2}
---
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: other}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: pg, port: 5432}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, labels: {app: web}}
spec:
  containers: [{name: web, image: example/web, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: other, labels: {app: db}}
spec:
  hostname: db-0
  subdomain: db
  containers: [{name: db, image: example/db, ports: [{containerPort: 5432}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: shell}
spec:
  containers: [{name: sh, image: debian, command: [sleep, "3600"]}]
"""


@pytest.fixture
def lab(make_lab):
    return make_lab(manifests=LAB)


def query(cluster, pod, name: str, qtype: str = "A", timeout: float = 2.0) -> DNSRecord:
    """Ask the cluster DNS service from inside a pod's network namespace (UDP)."""
    ns = cluster.pod_netns(pod)
    packet = DNSRecord.question(name, qtype).pack()

    def ask():
        netns.enter(ns)
        return DNSRecord.parse(DNSRecord.parse(packet).send(cluster.config.dns_ip, 53, timeout=timeout))
    return netns.in_thread(ask)


def answers(record: DNSRecord) -> list[str]:
    return sorted(str(rr.rdata) for rr in record.rr)


def in_pod(cluster, pod, *command: str) -> str:
    """Run a command inside the pod, as `netlab exec` does: the pod's resolv.conf applies."""
    holder = engine.pod_status(cluster.name)[pod.meta.key]["holderPid"]
    return subprocess.run(["nsenter", f"--target={holder}", "--net", "--uts", "--ipc", "--pid",
                           "--mount", *command], capture_output=True, text=True, timeout=10).stdout


def test_names_resolve_short_qualified_and_fully_qualified(lab):
    shell, web = lab.pod("shell"), lab.service("web")
    resolv = in_pod(lab, shell, "cat", "/etc/resolv.conf")
    assert "nameserver 10.96.0.10" in resolv
    assert "search default.svc.cluster.local svc.cluster.local cluster.local" in resolv
    assert "options ndots:5" in resolv
    # Through the pod's own resolver and its search path, as an application would.
    assert in_pod(lab, shell, "getent", "hosts", "web").split()[0] == web.cluster_ip
    assert in_pod(lab, shell, "getent", "hosts", "web.default").split()[0] == web.cluster_ip
    assert answers(query(lab, shell, "web.default.svc.cluster.local")) == [web.cluster_ip]
    # A service in another namespace needs its namespace in the name.
    db_ip = lab.pod("db-0", "other").pod_ip
    assert in_pod(lab, shell, "getent", "hosts", "db.other").split()[0] == db_ip
    assert query(lab, shell, "db.default.svc.cluster.local").header.rcode == RCODE.NXDOMAIN


def test_srv_headless_ptr_pod_and_nxdomain(lab):
    shell, web, db0 = lab.pod("shell"), lab.service("web"), lab.pod("db-0", "other")
    srv = query(lab, shell, "_http._tcp.web.default.svc.cluster.local", "SRV")
    assert [(rr.rdata.port, str(rr.rdata.target)) for rr in srv.rr] == [(80, "web.default.svc.cluster.local.")]
    # Headless: the pods themselves, and a name per endpoint from hostname/subdomain.
    assert answers(query(lab, shell, "db.other.svc.cluster.local")) == [db0.pod_ip]
    assert answers(query(lab, shell, "db-0.db.other.svc.cluster.local")) == [db0.pod_ip]
    reverse = ".".join(reversed(web.cluster_ip.split("."))) + ".in-addr.arpa"
    assert answers(query(lab, shell, reverse, "PTR")) == ["web.default.svc.cluster.local."]
    dashed = shell.pod_ip.replace(".", "-")
    assert answers(query(lab, shell, f"{dashed}.default.pod.cluster.local")) == [shell.pod_ip]
    assert query(lab, shell, "nothing.default.svc.cluster.local").header.rcode == RCODE.NXDOMAIN
    # Nothing outside the cluster zone is forwarded off the machine.
    assert query(lab, shell, "example.com").header.rcode == RCODE.REFUSED


def test_dnsmasq_cache_answers_while_kubedns_is_frozen(lab):
    shell, web = lab.pod("shell"), lab.service("web")
    name = "web.default.svc.cluster.local"
    assert answers(query(lab, shell, name)) == [web.cluster_ip]          # now cached by dnsmasq
    dns_pod = next(p for p in lab.pods.values() if p.meta.namespace == "kube-system")
    containers = engine.pod_status(lab.name)[dns_pod.meta.key]["containers"]
    kubedns = next(c["pid"] for c in containers if c["name"] == "kubedns")
    os.kill(kubedns, signal.SIGSTOP)           # alive but deaf: the agent does not restart it
    try:
        assert answers(query(lab, shell, name)) == [web.cluster_ip]
        # A name dnsmasq has not cached needs kubedns: no answer (dnsmasq waits for it) or an error.
        try:
            uncached = query(lab, shell, "_http._tcp.web.default.svc.cluster.local", "SRV", timeout=3)
        except TimeoutError:
            uncached = None
        assert uncached is None or uncached.header.rcode != RCODE.NOERROR
    finally:
        os.kill(kubedns, signal.SIGCONT)


def _environ(cluster, pod) -> dict:
    pid = engine.pod_status(cluster.name)[pod.meta.key]["containers"][0]["pid"]
    with open(f"/proc/{pid}/environ", "rb") as f:
        return dict(kv.decode().split("=", 1) for kv in f.read().split(b"\0") if b"=" in kv)


def test_environment_has_services_created_before_the_pod_only(lab, tmp_path):
    before = _environ(lab, lab.pod("shell"))
    web = lab.service("web")
    assert before["WEB_SERVICE_HOST"] == web.cluster_ip
    assert before["WEB_SERVICE_PORT"] == "80" and before["WEB_SERVICE_PORT_HTTP"] == "80"
    assert before["WEB_PORT_80_TCP"] == f"tcp://{web.cluster_ip}:80"
    assert "DB_SERVICE_HOST" not in before          # other namespace: not visible
    (tmp_path / "late.yaml").write_text("""
apiVersion: v1
kind: Service
metadata: {name: late-svc}
spec:
  selector: {app: web}
  ports: [{port: 81, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: shell2}
spec:
  containers: [{name: sh, image: debian, command: [sleep, "3600"]}]
""")
    engine.apply(lab.name, load_objects(tmp_path / "late.yaml"))
    cluster = engine.load(lab.name)
    engine.wait_for_pods(cluster, 20)
    late_ip = cluster.service("late-svc").cluster_ip
    assert "LATE_SVC_SERVICE_HOST" not in _environ(cluster, cluster.pod("shell"))
    assert _environ(cluster, cluster.pod("shell2"))["LATE_SVC_SERVICE_HOST"] == late_ip


def test_guestbook_round_trip_from_outside(make_lab):
    from ..conftest import LABS
    cluster = make_lab(LABS / "guestbook")
    client = names.client_netns(cluster.name)
    message = f"hello-{os.getpid()}"
    first, second = cluster.nodes[0].internal_ip, cluster.nodes[1].internal_ip
    assert http_get(client, first, 30001, f"/guestbook.php?cmd=set&key=messages&value={message}") \
        == '{"message": "Updated"}'
    # Read back through the other node; the slaves replicate from the master asynchronously.
    deadline = time.monotonic() + 10
    while True:
        got = http_get(client, second, 30001, "/guestbook.php?cmd=get&key=messages")
        if message in got or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert got == '{"data": "%s"}' % message
