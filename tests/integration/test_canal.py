"""Canal on real labs: a flannel backend (vxlan; host-gw too) whose pods Calico's CNI plugin
wires and Felix's chains police. labs/canal comes up once for the module, as the README brings
it up, and is always torn down; the tests that change it put it back. A host-gw and a udp
Canal lab are built once each for their own test."""
from __future__ import annotations

import ipaddress
import shlex
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from netlab import engine
from netlab.kernel import netns
from netlab.model import names
from netlab.probe import catalog, matrix, runner, sockets
from netlab.probe.capture import capture
from netlab.probe.checks.overlay import vxlan_frame
from netlab.probe.lab import LabView
from netlab.probe.result import Status
from netlab.probe.trace import trace

from .netutil import root_links

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]


def netlab_cli(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "netlab", *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


def in_ns(ns: str, *argv: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, check=True).stdout


def attempt(cluster, src: str, dst: str, port: int = 8080):
    """A TCP connect from pod src to pod dst ("ns/name" or a name in default), 1 s timeout."""
    def pod(ref):
        ns, _, name = ref.rpartition("/")
        return cluster.pod(name, ns or "default")
    return sockets.in_netns(cluster.pod_netns(pod(src)), sockets.attempt_tcp, pod(dst).pod_ip, port, 1.0)


def leaked(cluster, before: set[str]) -> set[str]:
    """Interfaces of this lab that turned up in the host's namespace since `before` (the safety
    rule). Only the lab's own names count: other labs on this machine come and go meanwhile."""
    own = {names.host_veth(p.meta.namespace, p.meta.name, calico=True) for p in cluster.pods.values()}
    own |= {names.uplink(n.name) for n in cluster.nodes} | {"flannel.1", "flannel0", "cni0", "br0", "inet0"}
    return (root_links() - before) & own


def up(source: Path, name: str):
    try:
        netlab_cli("up", str(source), "--name", name)
        return engine.load(name)
    except BaseException:
        engine.teardown(name)
        raise


def down(name: str) -> None:
    engine.teardown(name)
    assert not engine.lab_namespaces(name), engine.lab_namespaces(name)


@pytest.fixture(scope="module")
def host_links():
    return root_links()


@pytest.fixture(scope="module")
def canal(host_links):
    """labs/canal (vxlan), up once for the module under a cn- name; torn down pass or fail."""
    name = "cn-vx-" + uuid.uuid4().hex[:6]
    cluster = up(REPO / "labs" / "canal", name)
    try:
        yield cluster
    finally:
        down(name)
    assert not leaked(cluster, host_links)


def test_pods_wired_as_calico_over_flannel_vxlan(canal):
    n1, n2 = canal.nodes
    links = in_ns(n1.netns, "ip", "-o", "link")
    assert "cni0" not in links and "flannel.1" in links and links.count(": cali") == 2
    web = canal.pod("web")
    veth = names.host_veth("default", "web", calico=True)
    routes = in_ns(n1.netns, "ip", "route")
    # The pod's /32 to its cali veth; the other node's flannel subnet through flannel.1.
    assert f"{web.pod_ip} dev {veth} proto static scope link" in routes
    assert f"{n2.pod_cidr} via {n2.vtep_ip} dev flannel.1 proto static onlink" in routes
    assert n1.pod_cidr not in routes                  # no subnet route of its own: only /32s
    assert ipaddress.ip_address(web.pod_ip) in ipaddress.ip_network(n1.pod_cidr)   # flannel's subnet
    assert in_ns(n1.netns, "sysctl", "-n", f"net.ipv4.conf.{veth}.proxy_arp").strip() == "1"
    assert "ee:ee:ee:ee:ee:ee" in in_ns(n1.netns, "ip", "link", "show", veth)
    pod_ns = canal.pod_netns(web)
    assert f"inet {web.pod_ip}/32" in in_ns(pod_ns, "ip", "-4", "addr", "show", "eth0")
    assert "default via 169.254.1.1 dev eth0 proto static onlink" in in_ns(pod_ns, "ip", "route")
    # `netlab status --audit` finds the cali veths it expects, and nothing else.
    from netlab.audit import audit
    found = audit(canal, set(canal.pods))
    assert not found["orphan veths"] and not found["missing veths"], found


def test_cross_node_pod_traffic_is_vxlan_on_the_underlay(canal):
    reader, web = canal.pod("reader"), canal.pod("web")
    a, b = canal.node(reader.spec.node_name), canal.node(web.spec.node_name)
    ports = [names.uplink(a.name), names.uplink(b.name)]
    out, frames = capture(names.underlay_netns(canal.name), ports, vxlan_frame,
                          lambda: sockets.in_netns(canal.pod_netns(reader), sockets.attempt_tcp, web.pod_ip, 8080, 2.0),
                          count=8, timeout=3.0)
    assert out.ok, out.seen
    there = [f for f in frames if (f["outer_src"], f["outer_dst"], f["inner_src"], f["inner_dst"])
             == (a.internal_ip, b.internal_ip, reader.pod_ip, web.pod_ip)]
    back = [f for f in frames if (f["outer_src"], f["outer_dst"], f["inner_src"], f["inner_dst"])
            == (b.internal_ip, a.internal_ip, web.pod_ip, reader.pod_ip)]
    assert there and back, [f["line"] for f in frames]
    assert {(f["udp_dport"], f["vni"]) for f in there + back} == {(8472, 1)}


def test_ingress_and_egress_policies_allow_and_deny(canal):
    # Ingress of web: role=client pods of default (reader, across nodes) and any team=a pod.
    assert attempt(canal, "reader", "web").ok
    assert attempt(canal, "team-a/visitor", "web").ok                  # namespaceSelector
    denied = attempt(canal, "team-b/stranger", "web")                  # same node, not selected
    assert not denied.ok and denied.seen.startswith("no answer"), denied.seen   # dropped, not refused
    # Egress of db: only to team=a namespaces (a namespaceSelector).
    assert attempt(canal, "db", "team-a/visitor").ok
    out = attempt(canal, "db", "team-b/stranger")                      # across nodes, stranger is open
    assert not out.ok and out.seen.startswith("no answer"), out.seen
    assert attempt(canal, "web", "team-b/stranger").ok                 # web's egress is not isolated
    assert attempt(canal, "team-b/stranger", "db", 6379).ok           # db's ingress is not isolated


def test_verify_passes_with_the_policy_check_and_matrix(canal):
    view = LabView.load(canal.name)
    results = {r.id: r for r in runner.run(view, catalog.select([]))}
    ran = {k: r for k, r in results.items() if r.status != Status.NA}
    assert all(r.status == Status.PASS for r in ran.values()), {k: r.summary for k, r in ran.items()
                                                                if r.status != Status.PASS}
    assert {"policy", "vxlan-encap", "node-routes", "pod-cross-node", "pod-same-node", "egress-snat"} <= ran.keys()
    # The policy check probed every pair the policies speak of, denied ones among them.
    from netlab.probe.checks.calico import policy_targets
    verdicts = [t[4].allowed for t in policy_targets(view)]
    probes = results["policy"].probes
    assert len(probes) == len(verdicts) and True in verdicts and False in verdicts
    assert sum(p.seen.startswith("no answer") for p in probes) == verdicts.count(False)
    m = matrix.run(LabView.load(canal.name))
    assert not m.failed(), [(x.src, x.dst, x.seen) for x in m.failed()]
    assert m.cells[("team-b/stranger", "default/web")].policy == "denied"
    assert m.cells[("default/db", "team-b/stranger")].policy == "denied"
    assert m.cells[("default/reader", "default/web")].policy == "allowed"


def test_trace_names_the_dropping_rule(canal):
    ingress = trace(LabView.load(canal.name), "team-b/stranger", "default/web:8080")
    assert ingress.confirmed and [b.outcome for b in ingress.branches] == ["dropped"]
    end = ingress.branches[0].end
    assert "dropped by NetworkPolicy on node1: cali-tw-cali" in end and "web-from-clients" in end, end
    egress = trace(LabView.load(canal.name), "default/db", "team-b/stranger:8080")
    assert egress.confirmed and [b.outcome for b in egress.branches] == ["dropped"]
    end = egress.branches[0].end
    assert "dropped by NetworkPolicy on node2: cali-fw-cali" in end and "db-to-team-a" in end, end
    passed = trace(LabView.load(canal.name), "default/reader", "default/web:8080")
    assert passed.confirmed and passed.branches[0].outcome == "delivered", passed.branches[0].end


def test_graph_draws_calico_wiring_over_flannel(canal):
    from netlab import graph
    topo = graph.describe(LabView.load(canal.name))
    dot, mermaid = graph.to_dot(topo), graph.to_mermaid(topo)
    assert "backend vxlan + Calico policy (Canal)" in dot and "flannel.1" in dot
    assert "cali veths, proxy_arp" in dot and "cni0" not in dot
    assert "cali veths, proxy_arp" in mermaid and "cni0" not in mermaid


DB_AS_CLIENT = """apiVersion: v1
kind: Pod
metadata: {name: db, labels: {role: client}}
spec: {nodeName: node2, containers: [{name: db, image: netexec, ports: [{containerPort: 6379, name: redis}]}]}
"""


READER = """apiVersion: v1
kind: Pod
metadata: {name: reader, labels: {role: client}}
spec: {nodeName: node2, containers: [{name: reader, image: netexec, ports: [{containerPort: 8080}]}]}
"""


def test_live_changes_through_netlab_apply(canal, tmp_path):
    lab = canal.name
    assert not attempt(canal, "db", "team-b/stranger").ok
    # A second egress policy: the union lets db reach team-b.
    netlab_cli("apply", "-f", "labs/canal-policies/db-to-team-b.yaml", "--lab", lab)
    assert attempt(canal, "db", "team-b/stranger").ok and not attempt(canal, "db", "web").ok
    netlab_cli("delete", "networkpolicy", "db-to-team-b", "--lab", lab)
    assert not attempt(canal, "db", "team-b/stranger").ok
    # Labels: db relabelled role=client leaves db-to-team-a (not egress-isolated any more) and
    # joins web's allowed clients; relabelled back, both policies hold again.
    relabel = tmp_path / "db.yaml"
    relabel.write_text(DB_AS_CLIENT)
    netlab_cli("apply", "-f", str(relabel), "--lab", lab)
    assert attempt(canal, "db", "web").ok and attempt(canal, "db", "team-b/stranger").ok
    relabel.write_text(DB_AS_CLIENT.replace("{role: client}", "{app: db}"))
    netlab_cli("apply", "-f", str(relabel), "--lab", lab)
    assert not attempt(canal, "db", "web").ok and not attempt(canal, "db", "team-b/stranger").ok
    assert engine.load(lab).pod("db").meta.labels == {"app": "db"}
    # A pod deleted and made again (new veth, maybe a new address): web's selector set and the
    # node's dispatch chains follow, and the old cali veth is gone.
    reader = engine.load(lab).pod("reader")
    old_veth = names.host_veth("default", "reader", calico=True)
    node2 = engine.load(lab).node("node2")
    netlab_cli("delete", "pod", "reader", "--lab", lab)
    assert old_veth not in in_ns(node2.netns, "ip", "-o", "link")
    relabel.write_text(READER)
    netlab_cli("apply", "-f", str(relabel), "--lab", lab)
    again = engine.load(lab)
    assert again.pod("reader").pod_ip != reader.pod_ip        # host-local's next address, not the freed one
    assert attempt(again, "reader", "web").ok and not attempt(again, "team-b/stranger", "web").ok


def test_readme_commands(canal):
    """Every command of the README's Canal section runs as written (with --lab), on this lab.
    Last in the module: it leaves db-to-team-b applied."""
    section = (REPO / "README.md").read_text().split("## Canal: flannel between nodes")[1].split("\n## ")[0]
    block = section.split("```sh\n")[1].split("```")[0]
    lab = canal.name
    outputs = []
    for line in block.splitlines():
        words = shlex.split(line.split("  #")[0].strip())
        assert words[:2] == ["sudo", "netlab"], line
        words = words[2:]
        if words[0] == "up":
            assert words == ["up", "labs/canal"]                  # the fixture brought it up so
            continue
        at = words.index("--") if "--" in words else len(words)
        outputs.append(netlab_cli(*words[:at], "--lab", lab, *words[at:]).stdout)
    text = "\n".join(outputs)
    veth = names.host_veth("default", "web", calico=True)
    n2 = canal.node("node2")
    assert f"{canal.pod('web').pod_ip} dev {veth} proto static scope link" in text
    assert f"{n2.pod_cidr} via {n2.vtep_ip} dev flannel.1 proto static onlink" in text
    assert " 0 failed" in text and "vxlan-encap" in text
    assert "dropped by NetworkPolicy on node1: cali-tw-cali" in text
    assert "dropped by NetworkPolicy on node2: cali-fw-cali" in text
    assert "networkpolicy/db-to-team-b created" in text
    # The matrix after the change: db reaches team-b/stranger, web still denies db.
    m = matrix.run(LabView.load(lab))
    assert not m.failed()
    assert m.cells[("default/db", "team-b/stranger")].policy == "allowed"
    assert m.cells[("default/db", "default/web")].policy == "denied"


ROUTED = """apiVersion: netlab/v1
kind: Lab
metadata: {name: canal-other}
spec: {nodes: 2, dns: false, backend: %s, networkPolicy: calico}
---
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec: {nodeName: node1, containers: [{name: c, image: netexec, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {role: client}}
spec: {nodeName: node2, containers: [{name: c, image: netexec, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: other, labels: {app: other}}
spec: {nodeName: node2, containers: [{name: c, image: netexec, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: other}
spec: {selector: {app: other}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-client}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{podSelector: {matchLabels: {role: client}}}]}]
"""


def tun_tx_packets(node_ns: str) -> int:
    """Packets the node's kernel has handed to flanneld through flannel0."""
    return int(in_ns(node_ns, "cat", "/sys/class/net/flannel0/statistics/tx_packets"))


def send_udp(ns: str, ip: str) -> None:
    def send() -> None:
        netns.enter(ns)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"x", (ip, 9))
    netns.in_thread(send)


@pytest.mark.parametrize("backend", ["host-gw", "udp"])
def test_canal_on_host_gw_and_udp(backend, tmp_path, host_links):
    source = tmp_path / "canal-other"
    source.mkdir()
    (source / "lab.yaml").write_text(ROUTED % backend)
    name = f"cn-{backend[:2]}-" + uuid.uuid4().hex[:6]
    cluster = up(source, name)
    try:
        n1, n2 = cluster.nodes
        routes = in_ns(n1.netns, "ip", "route")
        assert "cni0" not in routes and f"{n1.pod_cidr} " not in routes
        if backend == "host-gw":
            assert f"{n2.pod_cidr} via {n2.internal_ip} dev eth0" in routes
        else:
            # flannel0's prefix route covers the cluster CIDR; each local pod's /32 wins over it.
            assert f"{cluster.config.cluster_cidr} dev flannel0" in routes
            web = cluster.pod("web")
            assert f"dev {names.host_veth('default', 'web', calico=True)}" in in_ns(
                n1.netns, "ip", "route", "get", web.pod_ip)
            # An unused address of node1's own subnet also matches that route: flanneld drops
            # it instead of sending it to itself, round and round until the TTL runs out.
            unused = str(ipaddress.ip_network(n1.pod_cidr).network_address + 250)
            before = tun_tx_packets(n1.netns)
            send_udp(cluster.pod_netns(web), unused)
            time.sleep(0.5)
            assert tun_tx_packets(n1.netns) - before <= 2
        assert attempt(cluster, "client", "web").ok
        denied = attempt(cluster, "other", "web")
        assert not denied.ok and denied.seen.startswith("no answer"), denied.seen
        # A pod through its own Service (hairpin): out and back in by its cali veth,
        # masqueraded to the node's address, which trace predicts and the probe confirms.
        svc_ip = cluster.services["default/other"].cluster_ip
        assert sockets.in_netns(cluster.pod_netns(cluster.pod("other")), sockets.attempt_tcp, svc_ip, 80, 1.0).ok
        hairpin = trace(LabView.load(name), "default/other", "other:80")
        assert hairpin.confirmed and hairpin.branches[0].outcome == "delivered", hairpin.branches[0].end
        assert f"from {n2.internal_ip}" in hairpin.branches[0].end
        checks = ["policy", "node-routes", "pod-cross-node", "pod-same-node", "egress-snat"]
        checks += ["udp-encap"] if backend == "udp" else []
        results = {r.id: r.status for r in runner.run(LabView.load(name), catalog.select(checks))}
        assert set(results.values()) == {Status.PASS} and len(results) == len(checks), results
    finally:
        down(name)
    assert not leaked(cluster, host_links)
