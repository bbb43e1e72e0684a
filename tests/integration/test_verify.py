"""netlab verify against real labs, healthy and broken on purpose.

Each test builds its own lab, breaks one thing the way an operator could (a route, an FDB
entry, a container, a nat table) and asserts that exactly the checks about that thing fail
while the others still pass. A few checks are marked "either" where the outcome depends on a
random choice the kernel makes (which endpoint a ClientIP service sticks to; which node the
underlay's ECMP hash sends the load-balancer traffic to): they are asserted not to be n/a.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest
import yaml

from netlab import engine
from netlab.model.objects import parse_object
from netlab.probe import catalog, matrix, runner
from netlab.probe.lab import LabView, load_settled
from netlab.probe.result import Status

pytestmark = pytest.mark.root

# Node1: a (two containers), b, idle. Node2: c, lone (its server is the one we stop).
# web: LoadBalancer over a, b, c (so ClusterIP, NodePort and LB); sticky: ClientIP affinity
# over the same pods; empty: selects nothing.
LAB = """
apiVersion: netlab/v1
kind: Lab
metadata: {name: ignored}
spec: {nodes: 2, backend: %(backend)s}
---
apiVersion: v1
kind: Pod
metadata: {name: a, labels: {app: web}}
spec:
  nodeName: node1
  containers:
  - {name: web, image: example/web, ports: [{containerPort: 8080}, {containerPort: 8081, protocol: UDP}]}
  - {name: sidecar, image: example/sidecar, ports: [{containerPort: 9090}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, labels: {app: web}}
spec:
  nodeName: node1
  containers: [{name: web, image: example/web, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: idle, labels: {role: client}}
spec:
  nodeName: node1
  containers: [{name: c, image: example/client, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: c, labels: {app: web}}
spec:
  nodeName: node2
  containers: [{name: web, image: example/web, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: lone, labels: {role: victim}}
spec:
  nodeName: node2
  restartPolicy: Never
  containers: [{name: web, image: example/web, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: sticky}
spec:
  selector: {app: web}
  sessionAffinity: ClientIP
  ports: [{port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: empty}
spec:
  selector: {app: nothing}
  ports: [{port: 80}]
"""

BASE = {"container-localhost", "pod-shared-namespaces", "pod-ip-unique", "node-routes",
        "pod-same-node", "pod-cross-node", "vxlan-encap", "service-clusterip", "service-from-node",
        "service-lb-spread", "session-affinity", "no-endpoints-reject", "nodeport-outside",
        "loadbalancer-outside", "egress-snat", "env-service-vars"}
# With the kube-dns add-on the lab has a second namespace and a DNS service.
DISCOVERY = {"env-namespace-scoped", "dns-service-fqdn", "dns-short-name", "dns-other-namespace"}
DNS = {"dns-service-fqdn", "dns-short-name", "dns-other-namespace"}
OVERLAY_BROKEN = {"pod-cross-node", "vxlan-encap", "service-clusterip", "service-from-node",
                  "service-lb-spread", "nodeport-outside", "loadbalancer-outside"}


def has_dns(lab: str) -> bool:
    return LabView.load(lab).dns_service is not None


def dns_pods_nodes(cluster) -> set[str]:
    view = LabView.load(cluster.name)
    svc = view.dns_service
    return {ep.node for port in svc.ports for ep in view.endpoints(svc, port)} if svc else set()


class Statuses(dict):
    """check id -> Status, keeping each check's summary for the assertion messages."""
    summaries: dict[str, str]


def verify(lab: str) -> Statuses:
    results = runner.run(LabView.load(lab), catalog.select())
    statuses = Statuses({r.id: r.status for r in results})
    statuses.summaries = {r.id: r.summary for r in results}
    return statuses


def assert_outcome(statuses: dict[str, Status], fail: set[str], either: frozenset[str] = frozenset(),
                   applicable: set[str] = BASE) -> None:
    failed = {k for k, s in statuses.items() if s == Status.FAIL}
    passed = {k for k, s in statuses.items() if s == Status.PASS}
    why = "; ".join(f"{k}: {getattr(statuses, 'summaries', {}).get(k)}" for k in sorted(failed ^ fail))
    assert failed - either == fail, f"failed: {sorted(failed)}; {why}"
    assert passed | failed == applicable, f"n/a that should apply: {sorted(applicable - passed - failed)}"
    assert passed - either == applicable - fail - either


def applicable(lab: str) -> set[str]:
    return BASE | (DISCOVERY if has_dns(lab) else set())


def overlay_broken(cluster) -> set[str]:
    """The DNS checks ask from pod a on node1: they break with node1's overlay only when the
    scheduler put kube-dns on the other node."""
    return OVERLAY_BROKEN | (DNS if dns_pods_nodes(cluster) - {"node1"} else set())


def node_ns(cluster, name: str) -> str:
    return cluster.node(name).netns


def sh(ns: str, *argv: str) -> None:
    subprocess.run(["nsenter", f"--net=/run/netns/{ns}", *argv], check=True, capture_output=True, timeout=10)


def break_rules(cluster, nodes: list[str], *commands: tuple[str, ...], gone: str = "-A KUBE-SERVICES ") -> None:
    """Run iptables commands in the nodes' namespaces until their effect stays: the agent
    re-syncs the rules when readiness changes (it may still be catching up with the pods'
    first readiness right after `up`), which would quietly repair the break. `gone` is what
    must stay absent from the nodes' nat tables."""
    for _ in range(10):
        for name in nodes:
            for argv in commands:
                subprocess.run(["ip", "netns", "exec", node_ns(cluster, name), "iptables-legacy", *argv],
                               check=True, capture_output=True, timeout=10)
        time.sleep(1.0)
        saved = [subprocess.run(["ip", "netns", "exec", node_ns(cluster, name), "iptables-legacy-save", "-t", "nat"],
                                check=True, capture_output=True, text=True, timeout=10).stdout for name in nodes]
        if not any(gone in text for text in saved):
            return
    raise AssertionError(f"the agent kept restoring {gone}")


def settled(cluster):
    """The lab once its rules send to every ready pod: the agent re-syncs them when readiness
    changes, and a sync after a break would quietly repair it."""
    assert load_settled(cluster.name, timeout=10)[1], "the lab's rules never caught up with its ready pods"
    return cluster


@pytest.fixture
def lab(make_lab):
    return settled(make_lab(manifests=LAB % {"backend": "vxlan"}))


def test_healthy_lab_passes_every_applicable_check(lab):
    assert_outcome(verify(lab.name), fail=set(), applicable=applicable(lab.name))


def test_missing_cross_node_route(lab):
    node2 = lab.node("node2")
    sh(node_ns(lab, "node1"), "ip", "route", "del", node2.pod_cidr)
    assert_outcome(verify(lab.name), fail={"node-routes"} | overlay_broken(lab),
                   either=frozenset({"session-affinity"}), applicable=applicable(lab.name))


def test_missing_vxlan_fdb_entry(lab):
    node2 = lab.node("node2")
    sh(node_ns(lab, "node1"), "bridge", "fdb", "del", node2.vtep_mac, "dev", "flannel.1", "dst", node2.internal_ip)
    # The routes are intact (node-routes passes): the overlay has nowhere to send the frames.
    assert_outcome(verify(lab.name), fail=overlay_broken(lab), either=frozenset({"session-affinity"}),
                   applicable=applicable(lab.name))


def _stop_container(lab_name: str, key: str) -> None:
    os.kill(engine.pod_status(lab_name)[key]["containers"][0]["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 5
    while engine.pod_status(lab_name)[key]["containers"][0]["state"] != "Terminated":
        assert time.monotonic() < deadline, "the agent did not see the container die"
        time.sleep(0.05)


def test_stopped_pod_server(lab):
    _stop_container(lab.name, "default/lone")
    # lone is nobody's endpoint: only the pod-to-pod checks that send to it fail.
    assert_outcome(verify(lab.name), fail={"pod-same-node", "pod-cross-node"}, applicable=applicable(lab.name))
    m = matrix.run(LabView.load(lab.name))
    assert {(c.src, c.dst) for c in m.failed()} == {(p, "default/lone") for p in m.sources if p != "default/lone"}


def test_flushed_nat_table_on_one_node(lab):
    break_rules(lab, ["node1"], ("-t", "nat", "-F"))
    # The REJECT for a service without endpoints lives in the filter table: it still works.
    # The DNS checks ask from pod a on node1, whose kube-dns ClusterIP is no longer translated.
    # Every service check reads node1's rules first, so the load-balancer check fails too,
    # whichever node the underlay's hash picks.
    statuses = verify(lab.name)
    assert_outcome(statuses,
                   fail={"service-clusterip", "service-from-node", "service-lb-spread", "session-affinity",
                         "nodeport-outside", "loadbalancer-outside", "egress-snat"}
                   | (DNS if has_dns(lab.name) else set()),
                   applicable=applicable(lab.name))
    assert "node node1" in statuses.summaries["loadbalancer-outside"]


SERVICE_CHECKS = ("service-clusterip", "service-from-node", "service-lb-spread", "session-affinity",
                  "nodeport-outside", "loadbalancer-outside")


def test_service_checks_fail_without_kube_proxy_rules(lab):
    """Whether a service check applies comes from the model (services with ready pods), not
    from the kernel: rules gone everywhere is a broken data plane, so the checks fail (they
    used to turn n/a, and verify passed)."""
    break_rules(lab, [n.name for n in lab.nodes], ("-t", "nat", "-F"), ("-t", "nat", "-X"))
    statuses = verify(lab.name)
    for check in (*SERVICE_CHECKS, "egress-snat", *(DNS if has_dns(lab.name) else ())):
        assert statuses[check] == Status.FAIL, f"{check}: {statuses.summaries[check]}"
    for check in SERVICE_CHECKS:
        assert "KUBE-SERVICES is missing" in statuses.summaries[check], statuses.summaries[check]
    assert Status.NA not in {statuses[c] for c in applicable(lab.name)}
    assert statuses["no-endpoints-reject"] == Status.PASS       # the filter table is intact
    assert statuses["pod-cross-node"] == Status.PASS


def test_flushed_kube_services_chain_fails_verify(lab):
    """Regression (issue 9): one node's KUBE-SERVICES emptied must make `netlab verify` fail,
    saying which rule is missing. The agent re-syncs the rules when readiness changes, so the
    chain is flushed right before verify runs."""
    break_rules(lab, ["node1"], ("-t", "nat", "-F", "KUBE-SERVICES"))
    out = _cli("verify", "--lab", lab.name, "-o", "json")
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr
    by_id = {c["id"]: c for c in json.loads(out.stdout)["checks"]}
    for check in SERVICE_CHECKS:
        assert by_id[check]["status"] == "fail", f"{check}: {by_id[check]['summary']}"
        assert "node node1" in by_id[check]["summary"] and "no rule for" in by_id[check]["summary"]
        reads = [p for p in by_id[check]["probes"] if p["kind"] == "state"]
        assert reads and not all(p["ok"] for p in reads)
    assert by_id["node-routes"]["status"] == "pass" and by_id["node-routes"]["evidence"] == "state"


def test_env_vars_come_from_the_containers_not_the_agents_record(lab):
    """The environment compared is the container's own: wiping the agent's record changes
    nothing; a Service created after the pods started is rightly absent from them; a PID
    that is not the pod's process is a failure."""
    engine.apply(lab.name, [parse_object(yaml.safe_load(LATE_SERVICE), "<test>")])
    view = LabView.load(lab.name)
    assert view.cluster.service("late")
    for st in view.status.values():
        for c in st.get("containers", []):
            c["env"] = {}
    env_check = catalog.select(["env-service-vars"])[0]
    result = env_check.run(view)
    assert result.status == Status.PASS, result.summary
    assert result.evidence.value == "state"
    reads = {p.src: p for p in result.probes}
    assert "GET /env" in reads["container default/a/web"].sent
    # Absent from the pods' environments: created after they started.
    assert "default/late" in reads["container default/a/web"].seen or "created after" in result.summary

    if has_dns(lab.name):
        # Point kube-dns's dnsmasq (an exec'd process: /proc/PID/environ) at another pod's process.
        key = next(k for k in view.status if k.startswith("kube-system/kube-dns"))
        other = view.status["default/a"]["containers"][0]["pid"]
        for c in view.status[key]["containers"]:
            if c["name"] == "dnsmasq":
                c["pid"] = other
        result = env_check.run(view)
        assert result.status == Status.FAIL and "not the pod's net" in result.summary, result.summary


LATE_SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: late}
spec:
  selector: {app: web}
  ports: [{port: 9999, targetPort: 8080}]
"""


def test_host_gw_has_no_overlay_to_check(make_lab):
    cluster = settled(make_lab(manifests=LAB % {"backend": "host-gw"}))
    statuses = verify(cluster.name)
    assert statuses["vxlan-encap"] == Status.NA
    assert_outcome(statuses, fail=set(), applicable=applicable(cluster.name) - {"vxlan-encap"})


def test_userspace_proxy_mode(make_lab):
    cluster = settled(make_lab(manifests=LAB % {"backend": "vxlan"}, proxy_mode="userspace"))
    # The proxy connects on the client's behalf; a service without endpoints gets no REJECT
    # rule in this mode (the historical proxy accepted and closed), so that check is n/a.
    statuses = verify(cluster.name)
    assert statuses["no-endpoints-reject"] == Status.NA
    assert_outcome(statuses, fail=set(), applicable=applicable(cluster.name) - {"no-endpoints-reject"})


def test_matrix_on_a_healthy_lab(lab):
    view = LabView.load(lab.name)
    m = matrix.run(view)
    assert not m.failed()
    pods = len(view.pods)
    # Services with endpoints are columns (empty is left out, with a note).
    services = sum(1 for s, p in view.service_ports("TCP") if view.endpoints(s, p))
    assert services >= 2 and any("empty" in note for note in m.notes)
    assert m.counts(False) == (pods * (pods - 1),) * 2 and m.counts(True) == (pods * services,) * 2
    http = {c.key for c in m.columns if c.how == "http"}
    # netexec pods are asked /hostname, so a wrong pod answering would show.
    assert {"default/a", "default/b", "default/c", "default/idle", "default/lone"} <= http


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netlab", *args], capture_output=True, text=True, timeout=120)


def test_cli_formats_and_exit_codes(lab):
    out = _cli("verify", "--lab", lab.name, "-o", "junit", "pod-*", "dns-*")
    assert out.returncode == 0, out.stderr
    suite = ET.fromstring(out.stdout)
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert set(cases) == {"pod-shared-namespaces", "pod-ip-unique", "pod-same-node", "pod-cross-node",
                          "dns-service-fqdn", "dns-short-name", "dns-other-namespace"}
    assert suite.get("failures") == "0" and suite.get("tests") == "7"
    assert "server saw" in cases["pod-same-node"].find("system-out").text
    skipped = suite.get("skipped") == "0" if has_dns(lab.name) else suite.get("skipped") == "3"
    assert skipped and (cases["dns-short-name"].find("skipped") is None) == has_dns(lab.name)

    _stop_container(lab.name, "default/lone")
    out = _cli("verify", "--lab", lab.name, "-o", "json", "pod-same-node", "container-localhost")
    assert out.returncode == 1
    report = json.loads(out.stdout)
    by_id = {c["id"]: c for c in report["checks"]}
    assert by_id["pod-same-node"]["status"] == "fail" and by_id["container-localhost"]["status"] == "pass"
    assert "connection refused" in by_id["pod-same-node"]["summary"]
    assert _cli("verify", "--lab", lab.name, "no-such-check").returncode == 2
