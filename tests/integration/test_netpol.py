"""NetworkPolicy on a real calico lab, enforced by Felix-style chains and ipsets: default deny,
podSelector, namespaceSelector, named ports and endPort, egress with an ipBlock and except,
several policies as a union, changes applied live, and verify's `policy` check and matrix."""
from __future__ import annotations

import subprocess

import pytest
import yaml

from netlab import engine
from netlab.model.objects import parse_object
from netlab.probe import catalog, matrix, runner, sockets
from netlab.probe.lab import LabView
from netlab.probe.result import Status

pytestmark = pytest.mark.root

LAB = """apiVersion: netlab/v1
kind: Lab
metadata: {name: netpol}
spec: {nodes: 2, dns: false, backend: calico}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-a, labels: {team: a}}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-b, labels: {team: b}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec: {nodeName: node1, containers: [{name: c, image: netexec, ports: [{containerPort: 8080, name: http}, {containerPort: 9090}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db, labels: {app: db}}
spec: {nodeName: node2, containers: [{name: c, image: netexec, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {role: client}}
spec: {nodeName: node2, containers: [{name: c, image: netexec, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: a1, namespace: team-a, labels: {app: x}}
spec: {nodeName: node1, containers: [{name: c, image: netexec, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b1, namespace: team-b, labels: {app: x}}
spec: {nodeName: node2, containers: [{name: c, image: netexec, ports: [{containerPort: 8080}]}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny}
spec: {podSelector: {}, policyTypes: [Ingress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-client}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{podSelector: {matchLabels: {role: client}}}], ports: [{port: http}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-team-a}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: a}}}]
    ports: [{port: 9000, endPort: 9100}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-egress}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Egress]
  egress: [{to: [{ipBlock: {cidr: 0.0.0.0/0, except: [203.0.113.0/24]}}]}]
"""


def attempt(cluster, src: str, dst: str, port: int, ns: str = "default", dst_ns: str = "default"):
    return sockets.in_netns(cluster.pod_netns(cluster.pod(src, ns)), sockets.attempt_tcp,
                            cluster.pod(dst, dst_ns).pod_ip, port, 1.0)


def to_internet(cluster, src: str):
    return sockets.in_netns(cluster.pod_netns(cluster.pod(src)), sockets.attempt_tcp, "203.0.113.10", 80, 1.0)


def objects(text: str) -> list:
    return [parse_object(d, "<test>") for d in yaml.safe_load_all(text) if d]


@pytest.fixture
def lab(make_lab):
    return make_lab(manifests=LAB)


def test_policies_enforced_as_felix_does(lab):
    c = lab
    # podSelector + named port: client reaches web on http (8080), not on 9090.
    assert attempt(c, "client", "web", 8080).ok
    denied = attempt(c, "client", "web", 9090)
    assert not denied.ok and denied.seen.startswith("no answer")         # dropped, not refused
    # namespaceSelector + endPort: team-a reaches web on 9090 (9000-9100), not on 8080.
    assert attempt(c, "a1", "web", 9090, ns="team-a").ok
    assert not attempt(c, "a1", "web", 8080, ns="team-a").ok
    assert not attempt(c, "b1", "web", 9090, ns="team-b").ok
    # default deny in default: db and client accept nobody; team-b's pod is not isolated.
    assert not attempt(c, "web", "db", 8080).ok and not attempt(c, "a1", "client", 8080, ns="team-a").ok
    assert attempt(c, "db", "b1", 8080, dst_ns="team-b").ok
    # egress: db may go anywhere but the internet's 203.0.113.0/24; web's egress is open.
    assert not to_internet(c, "db").ok and to_internet(c, "web").ok
    # The rules are Felix's: per-interface and per-policy chains, selector ipsets.
    node1 = c.node("node1")
    rules = subprocess.run(["ip", "netns", "exec", node1.netns, "iptables-legacy-save", "-t", "filter"],
                           capture_output=True, text=True).stdout
    assert "-A FORWARD -m comment --comment \"cali:wUHhoiAYhphO9Mso\" -j cali-FORWARD" in rules
    assert ":cali-tw-cali" in rules and ":cali-fw-cali" in rules and ":cali-pi-_" in rules
    assert "Drop if no policies passed packet" in rules
    sets = subprocess.run(["ip", "netns", "exec", node1.netns, "ipset", "list", "-n"],
                          capture_output=True, text=True).stdout.split()
    assert any(s.startswith("cali40s:") for s in sets) and any(s.startswith("cali40n:") for s in sets)
    results = {r.id: r for r in runner.run(LabView.load(c.name), catalog.select(
        ["policy", "pod-same-node", "pod-cross-node", "bgp-routes"]))}
    assert all(r.status == Status.PASS for r in results.values()), {k: r.summary for k, r in results.items()}
    denied_probes = [p for p in results["policy"].probes if "dropped" in p.seen or "no answer" in p.seen]
    assert denied_probes
    # trace walks Felix's chains with the node's ipsets and names the rule that dropped.
    from netlab.probe.trace import trace
    dropped = trace(LabView.load(c.name), "web", "db:8080")
    assert dropped.confirmed and [b.outcome for b in dropped.branches] == ["dropped"]
    assert "dropped by NetworkPolicy on node2: cali-tw-cali" in dropped.branches[0].end
    assert "ingress policies of default/db: default-deny" in dropped.branches[0].end
    passed = trace(LabView.load(c.name), "team-a/a1", "default/web:9090")
    assert passed.confirmed and passed.branches[0].outcome == "delivered", passed.branches[0].end
    m = matrix.run(LabView.load(c.name))
    assert not m.failed(), [(x.src, x.dst, x.seen) for x in m.failed()]
    assert m.cells[("default/client", "default/db")].policy == "denied"
    assert m.cells[("default/client", "default/web")].policy == "allowed"


def test_changes_apply_live(lab):
    c = lab
    name = c.name
    assert not attempt(c, "client", "db", 8080).ok
    # A new policy opens db to the client: the union of policies.
    engine.apply(name, objects("""apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-client}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {role: client}}}]}]
"""))
    assert attempt(c, "client", "db", 8080).ok and not attempt(c, "web", "db", 8080).ok
    # A new pod labelled role=client is in the selector's ipset at once.
    engine.apply(name, objects("""apiVersion: v1
kind: Pod
metadata: {name: client2, labels: {role: client}}
spec: {nodeName: node1, containers: [{name: c, image: netexec, ports: [{containerPort: 8080}]}]}
"""))
    c = engine.load(name)
    assert attempt(c, "client2", "db", 8080).ok and attempt(c, "client2", "web", 8080).ok
    # Deleting the default deny opens what no other policy isolates (client), not web.
    engine.delete(name, "networkpolicies", "default-deny")
    assert attempt(c, "web", "client", 8080).ok
    assert not attempt(c, "db", "web", 9090).ok
    # Stale chains and sets go with the policies that needed them.
    engine.delete(name, "networkpolicies", "db-egress")
    assert to_internet(c, "db").ok
    node2 = c.node("node2")
    rules = subprocess.run(["ip", "netns", "exec", node2.netns, "iptables-legacy-save", "-t", "filter"],
                           capture_output=True, text=True).stdout
    from netlab.plan.netpol import _hash
    assert f":cali-po-_{_hash('default/knp.default.db-egress', 19)} " not in rules
    assert ":cali-po-_" not in rules            # no egress policy is left
    assert engine.load(name).policies.keys() == {"default/web-from-client", "default/web-from-team-a",
                                                 "default/db-from-client"}
