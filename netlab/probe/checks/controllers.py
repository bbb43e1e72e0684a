"""Control-loop claims: they need something broken on purpose, so they are disruptive checks,
run only when asked for (`netlab verify --disruptive` or by id). Each builds its own small
workload in the namespace `netlab-verify`, breaks that, and removes it again: the lab's own
pods are never touched."""
from __future__ import annotations

import contextlib
import time
from typing import Iterator

from ... import engine, faults
from ...model.objects import parse_object
from ...model.services import endpoints_for
from .. import sockets
from ..catalog import check
from ..lab import LabView
from ..result import SOCKET, Evidence
from . import DOC000, DOC002

NAMESPACE = "netlab-verify"
SOURCE = "<verify>"
ATTEMPTS = 16          # new connections per measurement; each bounded by its timeout


def _workload(readiness: bool) -> list:
    container = {"name": "web", "image": "netlab/netexec", "ports": [{"containerPort": 8080, "name": "http"}]}
    if readiness:
        container["readinessProbe"] = {"tcpSocket": {"port": "http"}, "periodSeconds": 1, "failureThreshold": 1}
    docs = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "web", "namespace": NAMESPACE},
         "spec": {"replicas": 2, "selector": {"app": "verify-web"},
                  "template": {"metadata": {"labels": {"app": "verify-web"}}, "spec": {"containers": [container]}}}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client", "namespace": NAMESPACE},
         "spec": {"containers": [{"name": "c", "image": "netlab/netexec", "ports": [{"containerPort": 9000}]}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": NAMESPACE},
         "spec": {"selector": {"app": "verify-web"}, "ports": [{"port": 80, "targetPort": "http"}]}},
    ]
    return [parse_object(d, SOURCE) for d in docs]


@contextlib.contextmanager
def _scratch(view: LabView, readiness: bool = False) -> Iterator:
    """The check's own workload, removed afterwards whatever happens."""
    lab = view.name
    if NAMESPACE in engine.load(lab).namespaces:
        engine.delete(lab, "namespaces", NAMESPACE)       # left by an interrupted run
    engine.apply(lab, _workload(readiness))
    try:
        cluster = engine.load(lab)
        engine.wait_for_pods(cluster, 30)
        yield cluster
    finally:
        engine.delete(lab, "namespaces", NAMESPACE)


def _web(cluster) -> list:
    return sorted((p for p in cluster.pods.values() if p.meta.namespace == NAMESPACE
                   and p.meta.labels.get("app") == "verify-web"), key=lambda p: p.meta.name)


def _connections(cluster, timeout: float) -> list[sockets.Outcome]:
    client = cluster.pod("client", NAMESPACE)
    ip = cluster.service("web", NAMESPACE).cluster_ip
    return sockets.in_netns(cluster.pod_netns(client),
                            lambda: [sockets.attempt_http(ip, 80, "/hostname", timeout) for _ in range(ATTEMPTS)])


@contextlib.contextmanager
def _silenced(cluster, pod) -> Iterator:
    """The pod keeps running but its server answers nothing (incoming SYNs dropped)."""
    ns = cluster.pod_netns(pod)
    rule = ["INPUT", "-p", "tcp", "--syn", "-m", "comment", "--comment", faults.FAULT_COMMENT, "-j", "DROP"]
    faults.pod_iptables(ns, "-I", *rule)
    try:
        yield
    finally:
        faults.pod_iptables(ns, "-D", *rule)


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@check("rc-replaces-pod",
       claim="A ReplicationController keeps `replicas` pods: a deleted pod is replaced by a new one "
             "with a new name and address, and the Service's endpoints follow.",
       source=f"{DOC002} (RC: 确保当前集群上始终有且仅有replicas个Pod实例在运行)",
       needs="--disruptive (it deletes a pod of its own workload)",
       applies=lambda view: True, disruptive=True, evidence=SOCKET)
def rc_replaces_pod(view: LabView, ev: Evidence) -> str:
    with _scratch(view) as cluster:
        victim = _web(cluster)[0]
        engine.delete(view.name, "pods", victim.meta.name, NAMESPACE)
        now = engine.load(view.name)
        engine.wait_for_pods(now, 30)
        pods = _web(now)
        fresh = [p for p in pods if p.meta.name != victim.meta.name and p.meta.key not in cluster.pods]
        ev.read("netlab delete pod", victim.meta.key, "delete", f"{len(pods)} pods, new: "
               f"{', '.join(f'{p.meta.name} {p.pod_ip}' for p in fresh) or 'none'}",
               len(pods) == 2 and len(fresh) == 1 and fresh[0].pod_ip != victim.pod_ip,
               "2 pods again, one of them new with another address")
        eps = {e.ip for lst in endpoints_for(now.service("web", NAMESPACE), now.pods.values(),
                                             engine.ready_pods(view.name)).values() for e in lst}
        ev.read("Endpoints", f"{NAMESPACE}/web", "read", ", ".join(sorted(eps)),
               eps == {p.pod_ip for p in pods}, "exactly the two live pods")
        answered = {o.body for o in _connections(now, 1.0) if o.ok}
        ev.add(f"pod {NAMESPACE}/client", "the service", f"{ATTEMPTS} HTTP /hostname",
               ", ".join(sorted(answered)), answered == {p.meta.name for p in pods}, "both live pods answer")
    return "the RC replaced the deleted pod (new name, new address) and Endpoints followed"


@check("proxy-retry",
       claim="When the chosen pod does not answer, kube-proxy's iptables mode cannot retry another "
             "pod (a share of new connections fail), while the userspace proxy retries and succeeds.",
       source=f"{DOC000} §5 (iptables代理不能自动重试另一个Pod)",
       needs="--disruptive (it silences a pod of its own workload)",
       applies=lambda view: True, disruptive=True, evidence=SOCKET)
def proxy_retry(view: LabView, ev: Evidence) -> str:
    userspace = view.cluster.config.proxy_mode == "userspace"
    with _scratch(view) as cluster:
        victim = _web(cluster)[0]
        with _silenced(cluster, victim):
            outcomes = _connections(cluster, 3.0 if userspace else 0.5)
        failed = sum(1 for o in outcomes if not o.ok)
        seen = f"{ATTEMPTS - failed} answered, {failed} failed"
        if userspace:
            ev.add(f"pod {NAMESPACE}/client", "the service, one pod silent", f"{ATTEMPTS} new connections",
                   seen, failed == 0, "every connection answered (the proxy retries)")
            return "the userspace proxy retried past the silent pod every time"
        # Random choice over two endpoints: P(no connection picks the silent one) = 2^-16.
        ev.add(f"pod {NAMESPACE}/client", "the service, one pod silent", f"{ATTEMPTS} new connections",
               seen, 0 < failed < ATTEMPTS, "some connections fail: iptables mode does not retry")
    return "iptables mode sent a share of new connections to the silent pod, which failed"


@check("readiness-recovers",
       claim="With a readiness probe, a pod that stops answering leaves the Service's endpoints, "
             "and kube-proxy's iptables mode then succeeds every time.",
       source=f"{DOC000} §5 (因此它取决于具有工作准备就绪探测)",
       needs="--disruptive (it silences a pod of its own workload)",
       applies=lambda view: True, disruptive=True, evidence=SOCKET)
def readiness_recovers(view: LabView, ev: Evidence) -> str:
    with _scratch(view, readiness=True) as cluster:
        victim = _web(cluster)[0]
        with _silenced(cluster, victim):
            gone = _wait(lambda: victim.meta.key not in (engine.ready_pods(view.name) or set()), 10)
            ev.read("readiness probe", victim.meta.key, "tcpSocket every 1s", "not ready" if gone else "still ready",
                   gone, "the pod turns unready")
            time.sleep(0.5)        # the agent re-syncs the rules right after it publishes
            outcomes = _connections(cluster, 1.0)
            failed = sum(1 for o in outcomes if not o.ok)
            ev.add(f"pod {NAMESPACE}/client", "the service, one pod silent", f"{ATTEMPTS} new connections",
                   f"{ATTEMPTS - failed} answered, {failed} failed", failed == 0, "every connection answered")
    return "the silent pod left Endpoints and every connection went to the live one"
