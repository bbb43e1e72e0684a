"""Failures on purpose, the ones the documents talk about, and their undoing.

    kill         the container's process dies (SIGKILL); its restartPolicy decides what next
    stop-server  the pod stays up but its server answers nothing: incoming TCP SYNs are
                 dropped inside the pod's namespace, so a client's connect times out
    cut-link     the node's cable to the underlay is pulled (its port on br0 goes down)
    node-down    the node stops: link cut and every pod process on it frozen (SIGSTOP)
    heal         undo all of the above

Faults are injected by the lab's agent (the one writer of a lab), which acts only on the
processes it supervises itself, and records them in faults.json; its node controller marks such a node
NotReady and, after the grace period, evicts its pods so their controllers replace them on
the nodes that are left (kube-controller-manager's pod eviction, with a lab-sized timeout).
"""
from __future__ import annotations

import math
import os
import signal
import subprocess
import time
from typing import Callable, Optional

from . import state
from .kernel import netns
from .model import names
from .model.errors import InvalidError, LabError, StateError

FAULT_COMMENT = "netlab-fault"
FAULT_KINDS = ("kill", "stop-server", "cut-link", "node-down")
_STOP_RULE = ["INPUT", "-p", "tcp", "--syn", "-m", "comment", "--comment", FAULT_COMMENT, "-j", "DROP"]

# The agent's live processes of a pod: (pod key, container or None) -> PIDs it supervises.
PidsOf = Callable[[str, Optional[str]], list]


def faults_file(lab: str):
    return state.lab_dir(lab) / "faults.json"


def read(lab: str) -> dict:
    return state.read_json(faults_file(lab)) or {"nodes": {}, "pods": {}}


def check_grace(grace) -> float:
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not math.isfinite(grace) \
            or grace < 0 or grace > 86400:
        raise InvalidError("must be a number of seconds from 0 to 86400", value=grace, field="--grace")
    return float(grace)


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


def _signal_pods_on(cluster, node: str, pids_of: PidsOf, sig: int) -> int:
    count = 0
    for pod in cluster.pods_on(node):
        for pid in pids_of(pod.meta.key, None):
            try:
                os.kill(pid, sig)
                count += 1
            except ProcessLookupError:
                pass
    return count


def inject(cluster, recorded: dict, pids_of: PidsOf, kind: str, target: str,
           namespace: str = "default", container: Optional[str] = None, grace: float = 10.0) -> str:
    """Inject one fault (run by the agent); `recorded` (faults.json's content) is updated."""
    if kind == "kill":
        pod = cluster.pod(target, namespace)
        names_in_pod = [c.name for c in pod.spec.containers]
        if container and container not in names_in_pod:
            raise LabError(f"container {container} is not valid for pod {target} "
                           f"(containers: {', '.join(names_in_pod)})")
        pids = pids_of(pod.meta.key, container or names_in_pod[0])
        if not pids:
            raise StateError(f"pod {pod.meta.key}: container {container or names_in_pod[0]} is not running")
        os.kill(pids[0], signal.SIGKILL)      # our own child: the PID cannot have been reused
        return f"killed the container process {pids[0]} of pod {pod.meta.key}"
    if kind == "stop-server":
        pod = cluster.pod(target, namespace)
        ns = cluster.pod_netns(pod)
        if pod_iptables(ns, "-C", *_STOP_RULE).returncode != 0:
            result = pod_iptables(ns, "-I", *_STOP_RULE)
            if result.returncode != 0:
                raise StateError(f"pod {pod.meta.key}: cannot add the drop rule: {result.stderr.strip()}")
        recorded["pods"][pod.meta.key] = {"kind": kind, "since": time.time()}
        return f"pod {pod.meta.key} now drops every incoming TCP connection (its server looks dead)"
    if kind in ("cut-link", "node-down"):
        grace = check_grace(grace)
        node = cluster.node(target)
        if node.name in recorded["nodes"]:
            raise StateError(f"node {node.name} already has a fault ({recorded['nodes'][node.name]['kind']}); "
                             f"`netlab fault heal` first")
        others = [n for n in cluster.nodes if n.name != node.name and n.name not in recorded["nodes"]]
        if not others:
            raise StateError("refusing to take down the last Ready node")
        _link(names.underlay_netns(cluster.name), names.uplink(node.name), up=False)
        frozen = _signal_pods_on(cluster, node.name, pids_of, signal.SIGSTOP) if kind == "node-down" else 0
        recorded["nodes"][node.name] = {"kind": kind, "since": time.time(), "grace": grace, "evicted": False}
        what = f", {frozen} pod processes frozen" if frozen else ""
        return (f"node {node.name}: {kind}{what}; its pods are evicted and replaced on other nodes "
                f"after {grace:g}s unless healed")
    raise LabError(f"unknown fault {kind!r} (choose from {', '.join(FAULT_KINDS)})")


def heal(cluster, recorded: dict, pids_of: PidsOf) -> list[str]:
    """Undo every fault in `recorded` (run by the agent; killed processes restarted already)."""
    done = []
    for key in list(recorded["pods"]):
        pod = cluster.pods.get(key)
        if pod is not None:
            ns = cluster.pod_netns(pod)
            while pod_iptables(ns, "-D", *_STOP_RULE).returncode == 0:
                pass
            done.append(f"pod {key} serves again")
        del recorded["pods"][key]
    for node, fault in list(recorded["nodes"].items()):
        _link(names.underlay_netns(cluster.name), names.uplink(node), up=True)
        if fault["kind"] == "node-down":
            _signal_pods_on(cluster, node, pids_of, signal.SIGCONT)
        done.append(f"node {node} is back")
        del recorded["nodes"][node]
    return done or ["no faults to heal"]
