"""Failures on purpose, the ones the documents talk about, and their undoing.

    kill         the container's process dies (SIGKILL); its restartPolicy decides what next
    stop-server  the pod stays up but its server answers nothing: incoming TCP SYNs are
                 dropped inside the pod's namespace, so a client's connect times out
    cut-link     the node's cable to the underlay is pulled (its port on br0 goes down)
    node-down    the node stops: link cut and every pod process on it frozen (SIGSTOP)
    heal         undo all of the above

Node faults are recorded in faults.json; the agent's node controller marks such a node
NotReady and, after the grace period, evicts its pods so their controllers replace them on
the nodes that are left (kube-controller-manager's pod eviction, with a lab-sized timeout).
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Optional

from . import engine, state
from .kernel import netns
from .model import names
from .model.errors import LabError, StateError

FAULT_COMMENT = "netlab-fault"
FAULT_KINDS = ("kill", "stop-server", "cut-link", "node-down")


def faults_file(lab: str):
    return state.lab_dir(lab) / "faults.json"


def read(lab: str) -> dict:
    return state.read_json(faults_file(lab)) or {"nodes": {}, "pods": {}}


def _container_pid(lab: str, key: str, container: Optional[str]) -> int:
    st = engine.pod_status(lab).get(key)
    if not st:
        raise StateError(f"pod {key} has no running processes")
    running = [c for c in st["containers"] if c.get("pid") and (container is None or c["name"] == container)]
    if not running:
        raise StateError(f"pod {key}: no running container{' ' + container if container else ''}")
    return running[0]["pid"]


def pod_iptables(ns: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", f"--net=/run/netns/{ns}", "iptables-legacy", "-w", *args],
                          capture_output=True, text=True, timeout=10)


def _link(ns: str, dev: str, up: bool) -> None:
    handle = netns.open_netlink(ns)
    try:
        idx = handle.link_lookup(ifname=dev)
        if not idx:
            raise StateError(f"{dev} not found in {ns}")
        handle.link("set", index=idx[0], state="up" if up else "down")
    finally:
        handle.close()


def _signal_pods_on(lab: str, cluster, node: str, sig: int) -> int:
    count = 0
    status = engine.pod_status(lab)
    for pod in cluster.pods_on(node):
        st = status.get(pod.meta.key, {})
        for pid in [st.get("holderPid")] + [c.get("pid") for c in st.get("containers", [])]:
            if pid:
                try:
                    os.kill(pid, sig)
                    count += 1
                except ProcessLookupError:
                    pass
    return count


def inject(lab: str, kind: str, target: str, namespace: str = "default",
           container: Optional[str] = None, grace: float = 10.0) -> str:
    engine.require_root()
    cluster = engine.load(lab)
    faults = read(lab)
    if kind == "kill":
        pod = cluster.pod(target, namespace)
        pid = _container_pid(lab, pod.meta.key, container)
        os.kill(pid, signal.SIGKILL)
        return f"killed the container process {pid} of pod {pod.meta.key}"
    if kind == "stop-server":
        pod = cluster.pod(target, namespace)
        ns = cluster.pod_netns(pod)
        rule = ["INPUT", "-p", "tcp", "--syn", "-m", "comment", "--comment", FAULT_COMMENT, "-j", "DROP"]
        if pod_iptables(ns, "-C", *rule).returncode != 0:
            pod_iptables(ns, "-I", *rule)
        faults["pods"][pod.meta.key] = {"kind": kind, "since": time.time()}
        state.write_json(faults_file(lab), faults)
        return f"pod {pod.meta.key} now drops every incoming TCP connection (its server looks dead)"
    if kind in ("cut-link", "node-down"):
        node = cluster.node(target)
        if node.name in faults["nodes"]:
            raise StateError(f"node {node.name} already has a fault ({faults['nodes'][node.name]['kind']}); "
                             f"`netlab fault heal` first")
        others = [n for n in cluster.nodes if n.name != node.name and n.name not in faults["nodes"]]
        if not others:
            raise StateError("refusing to take down the last Ready node")
        _link(names.underlay_netns(lab), names.uplink(node.name), up=False)
        frozen = _signal_pods_on(lab, cluster, node.name, signal.SIGSTOP) if kind == "node-down" else 0
        faults["nodes"][node.name] = {"kind": kind, "since": time.time(), "grace": grace, "evicted": False}
        state.write_json(faults_file(lab), faults)
        what = f", {frozen} pod processes frozen" if frozen else ""
        return (f"node {node.name}: {kind}{what}; its pods are evicted and replaced on other nodes "
                f"after {grace:g}s unless healed")
    raise LabError(f"unknown fault {kind!r} (choose from {', '.join(FAULT_KINDS)})")


def heal(lab: str) -> list[str]:
    """Undo every fault netlab injected in this lab (killed processes were restarted already)."""
    engine.require_root()
    cluster = engine.load(lab)
    faults = read(lab)
    done = []
    for key in list(faults["pods"]):
        ns_, name = key.split("/", 1)
        try:
            ns = cluster.pod_netns(cluster.pod(name, ns_))
        except LabError:
            continue          # the pod is gone
        rule = ["INPUT", "-p", "tcp", "--syn", "-m", "comment", "--comment", FAULT_COMMENT, "-j", "DROP"]
        while pod_iptables(ns, "-D", *rule).returncode == 0:
            pass
        done.append(f"pod {key} serves again")
    for node, fault in faults["nodes"].items():
        _link(names.underlay_netns(lab), names.uplink(node), up=True)
        if fault["kind"] == "node-down":
            _signal_pods_on(lab, cluster, node, signal.SIGCONT)
        done.append(f"node {node} is back")
    if cluster.not_ready:
        cluster.not_ready.clear()
        engine.save(cluster)
    state.write_json(faults_file(lab), {"nodes": {}, "pods": {}})
    return done or ["no faults to heal"]
