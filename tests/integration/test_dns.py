"""Service discovery for real: kube-dns (kubedns + the Debian dnsmasq) answering pods, kubelet's
environment variables, and the guestbook writing and reading through both."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
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


# ---------------------------------------------------------------------- issue 10, items 10-14


def netlab_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netlab", *args], capture_output=True, text=True, timeout=60)


def dig(cluster, pod, *args: str) -> str:
    """dig (bind9-dnsutils) inside the pod: through its resolv.conf, i.e. kube-dns's dnsmasq."""
    return in_pod(cluster, pod, "dig", "+time=3", "+tries=1", *args)


def flags(dig_output: str) -> set[str]:
    line = next(l for l in dig_output.splitlines() if l.startswith(";; flags:"))
    return set(line.split(":", 2)[1].split(";")[0].split())


def dig_answers(dig_output: str) -> list[str]:
    """The rdata of each answer line of dig's output."""
    section = dig_output.split(";; ANSWER SECTION:\n", 1)
    if len(section) < 2:
        return []
    return [l.split()[-1] for l in section[1].split("\n\n", 1)[0].splitlines() if l and not l.startswith(";")]


BIG = """
apiVersion: v1
kind: Service
metadata: {name: big}
spec:
  clusterIP: None
  selector: {app: big}
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: ReplicationController
metadata: {name: big}
spec:
  replicas: 40
  selector: {app: big}
  template:
    metadata: {labels: {app: big}}
    spec:
      containers: [{name: sh, image: debian, command: [sleep, "3600"]}]
"""


def test_forty_endpoint_answers_reach_glibc_and_dig_through_dnsmasq(lab, tmp_path):
    """Item 10: an answer bigger than 512 bytes is truncated with the question kept, and the
    client's TCP retry completes through dnsmasq. Before, dnsmasq dropped kubedns's 12-byte
    reply and glibc's getaddrinfo failed after 10 s from 29 ready endpoints."""
    (tmp_path / "big.yaml").write_text(BIG)
    engine.apply(lab.name, load_objects(tmp_path / "big.yaml"))
    cluster = engine.load(lab.name)
    engine.wait_for_pods(cluster, 60)
    ips = sorted(p.pod_ip for p in cluster.pods.values() if p.meta.labels.get("app") == "big")
    shell, name = cluster.pod("shell"), "big.default.svc.cluster.local"
    kubedns = next(p for p in cluster.pods.values() if p.meta.namespace == "kube-system").pod_ip
    # Wait on kubedns itself (over TCP, no cache in between) until the 40 are published.
    deadline = time.monotonic() + 20
    while len(dig_answers(dig(cluster, shell, f"@{kubedns}", "-p", "10053", "+tcp", name))) < 40:
        assert time.monotonic() < deadline, "the 40 endpoints never reached kubedns"
        time.sleep(0.5)
    # No EDNS0 (512 bytes), TC not followed: TC set, the question kept, no half RRset.
    truncated = dig(cluster, shell, "+noedns", "+ignore", name)
    assert "tc" in flags(truncated) and "QUERY: 1," in truncated and dig_answers(truncated) == []
    # glibc (no EDNS0 either) follows TC: TCP to dnsmasq, dnsmasq over TCP to kubedns.
    got = in_pod(cluster, shell, "getent", "ahosts", name)
    assert sorted({line.split()[0] for line in got.splitlines()}) == ips
    # dig without EDNS0 retries over TCP; with its default EDNS0 size (1232) it fits UDP.
    retried = dig(cluster, shell, "+noedns", name)
    assert "Truncated, retrying in TCP mode" in retried and sorted(dig_answers(retried)) == ips
    edns = dig(cluster, shell, name)
    assert "tc" not in flags(edns) and "udp: 1232" in edns and sorted(dig_answers(edns)) == ips
    # 40 SRV records (with glue, ~3.6 kB) over TCP after the truncated UDP answer.
    srv = dig(cluster, shell, "+noedns", f"_http._tcp.{name}", "SRV")
    assert "Truncated, retrying in TCP mode" in srv and len(dig_answers(srv)) == 40
    # kubedns asked directly with a large EDNS0 size answers as much over UDP; never AD (item 14).
    direct = dig(cluster, shell, f"@{kubedns}", "-p", "10053", "+bufsize=4096", "+adflag", f"_http._tcp.{name}", "SRV")
    assert "tc" not in flags(direct) and "ad" not in flags(direct) and "aa" in flags(direct)
    assert len(dig_answers(direct)) == 40


def test_pod_records_answer_any_address_in_insecure_mode(lab):
    """Item 11: a-b-c-d.<ns>.pod.cluster.local for any address, under any namespace that exists."""
    shell, db0 = lab.pod("shell"), lab.pod("db-0", "other")
    dashed = db0.pod_ip.replace(".", "-")
    assert dig_answers(dig(lab, shell, f"{dashed}.other.pod.cluster.local")) == [db0.pod_ip]
    # Another namespace's name for the same pod, and an address no pod has, answer all the same.
    assert in_pod(lab, shell, "getent", "hosts", f"{dashed}.default.pod.cluster.local").split()[0] == db0.pod_ip
    assert in_pod(lab, shell, "getent", "hosts", "192-0-2-7.other.pod.cluster.local").split()[0] == "192.0.2.7"
    for name in ("192-0-2-7.nosuchns.pod.cluster.local", "not-an-ip.default.pod.cluster.local"):
        assert "status: NXDOMAIN" in dig(lab, shell, name), name


def test_pod_records_verified_mode(make_lab):
    cluster = make_lab(manifests="""
apiVersion: netlab/v1
kind: Lab
metadata: {name: ignored}
spec: {nodes: 1, dnsPods: verified}
---
apiVersion: v1
kind: Pod
metadata: {name: shell}
spec:
  containers: [{name: sh, image: debian, command: [sleep, "3600"]}]
""")
    shell = cluster.pod("shell")
    dashed = shell.pod_ip.replace(".", "-")
    assert in_pod(cluster, shell, "getent", "hosts", f"{dashed}.default.pod.cluster.local").split()[0] == shell.pod_ip
    assert "status: NXDOMAIN" in dig(cluster, shell, f"{dashed}.kube-system.pod.cluster.local")
    assert "status: NXDOMAIN" in dig(cluster, shell, "192-0-2-7.default.pod.cluster.local")


def test_outside_names_are_forwarded_to_the_internet_dns_and_curl_works(lab):
    """Item 12: kube-dns's dnsmasq forwards names outside the cluster to the node's resolver,
    the simulated internet's DNS server; curl reaches the internet's web server through SNAT."""
    shell = lab.pod("shell")
    node_ip = lab.node(shell.spec.node_name).internal_ip
    assert in_pod(lab, shell, "getent", "hosts", "www.example.net").split()[:2] == ["203.0.113.10", "www.example.net"]
    seen = in_pod(lab, shell, "curl", "-s", "-m", "5", "http://www.example.net/clientip")
    assert seen.split(":")[0] == node_ip                     # masqueraded to the pod's node
    assert in_pod(lab, shell, "curl", "-s", "-m", "5", "http://web.example.net/").startswith("NOW:")
    cname = dig(lab, shell, "web.example.net")
    assert dig_answers(cname) == ["www.example.net.", "203.0.113.10"]
    nx = dig(lab, shell, "nope.example.net")                 # the upstream's own NXDOMAIN, with its SOA
    assert "status: NXDOMAIN" in nx and "hostmaster.example.net." in nx
    assert "status: REFUSED" in dig(lab, shell, "example.com")   # nothing leaves the lab
    # Reverse names: dnsmasq sends them all to kubedns, which forwards those not its own.
    assert dig_answers(dig(lab, shell, "-x", "203.0.113.10")) in (["www.example.net."], ["example.net."])
    # The kube-dns pod has dnsPolicy Default: the node's resolver, which is the internet's.
    dns_pod = next(p for p in lab.pods.values() if p.meta.namespace == "kube-system")
    assert "nameserver 203.0.113.10" in in_pod(lab, dns_pod, "cat", "/etc/resolv.conf")
    status = netlab_cli("status", "--lab", lab.name).stdout
    assert "daemon: dns/internet running" in status and "daemon: web/internet running" in status


def test_hostname_f_prints_the_fqdn_of_a_pod_with_a_subdomain(lab):
    """Item 13: kubelet's hosts line `IP hostname.subdomain.ns.svc.cluster.local hostname`."""
    db0 = lab.pod("db-0", "other")
    assert in_pod(lab, db0, "hostname", "-f").strip() == "db-0.db.other.svc.cluster.local"
    assert f"{db0.pod_ip}\tdb-0.db.other.svc.cluster.local\tdb-0" in in_pod(lab, db0, "cat", "/etc/hosts")
    assert in_pod(lab, lab.pod("shell"), "hostname", "-f").strip() == "shell"


def test_kube_dns_endpoints_describe_and_negative_ttl(lab):
    """Item 14: the Endpoints list the pod once per port; describe says where kubedns binds;
    NXDOMAIN carries the SOA whose minimum (30 s) is the negative-caching TTL."""
    dns_pod = next(p for p in lab.pods.values() if p.meta.namespace == "kube-system")
    eps = netlab_cli("get", "endpoints", "kube-dns", "-n", "kube-system", "--lab", lab.name).stdout
    assert f"{dns_pod.pod_ip}:53,{dns_pod.pod_ip}:53" in eps
    described = netlab_cli("describe", "pod", dns_pod.meta.name, "-n", "kube-system", "--lab", lab.name).stdout
    assert "0.0.0.0:10053" in described and "127.0.0.1:10053" not in described
    nx = dig(lab, lab.pod("shell"), "+noall", "+authority", "nosuch.default.svc.cluster.local")
    soa = nx.split()
    assert soa[3] == "SOA" and soa[1] == "30" and soa[-1] == "30"


EXTERNAL = """
apiVersion: v1
kind: Service
metadata: {name: ext}
spec: {type: ExternalName, externalName: www.example.net}
---
apiVersion: v1
kind: Service
metadata: {name: outside}
spec:
  clusterIP: None
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: outside}
subsets:
- addresses: [{ip: 203.0.113.10}]
  ports: [{name: http, port: 80}]
"""


def test_external_name_answers_a_cname_that_curl_follows(lab, tmp_path):
    """Item 4's DNS side (spec 2.5): CNAME to the external name, with its address resolved
    upstream in the same answer; and a selectorless headless Service's hand-written Endpoints."""
    (tmp_path / "ext.yaml").write_text(EXTERNAL)
    engine.apply(lab.name, load_objects(tmp_path / "ext.yaml"))
    shell = lab.pod("shell")
    chain = dig(lab, shell, "ext.default.svc.cluster.local")
    assert dig_answers(chain) == ["www.example.net.", "203.0.113.10"]
    assert in_pod(lab, shell, "getent", "hosts", "ext").split()[0] == "203.0.113.10"
    node_ip = lab.node(shell.spec.node_name).internal_ip
    assert in_pod(lab, shell, "curl", "-s", "-m", "5", "http://ext/clientip").split(":")[0] == node_ip
    assert dig_answers(dig(lab, shell, "outside.default.svc.cluster.local")) == ["203.0.113.10"]
    srv = dig(lab, shell, "_http._tcp.outside.default.svc.cluster.local", "SRV")
    assert dig_answers(srv) == ["203-0-113-10.outside.default.svc.cluster.local."]
