"""The lab engine: bring a lab up, take it down, and ask its agent for changes. The CLI is a
thin layer over this.

`up` writes a lab's first state and starts its agent; from then on the agent is the lab's
only writer, and apply/delete/scale/faults here are requests to it. Every step of `up` is
undone if a later one fails or the user presses Ctrl-C (or sends SIGTERM/SIGHUP); `down`
and `clean` act only on what carries a lab's proven mark (the namespace's loopback alias,
the agent's environment and command line), so they work without the lab's files and after
a crash, and never touch anything else.
"""
from __future__ import annotations

import os
import shutil
import signal
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from typing import TYPE_CHECKING

from . import state
from .kernel import netns
from .model import names
from .model.errors import InvalidError, LabError, NotFoundError, StateError
from .runtime import agent_client
from .labs import lab_namespaces, resolve_lab, running_labs  # noqa: F401  (the engine's API too)

if TYPE_CHECKING:      # the model and the builder load where a lab is read or built, not for `down`
    from .model.cluster import Cluster
    from .model.objects import Pod

Progress = Callable[[str, int, int], None]


def _no_progress(phase: str, done: int, total: int) -> None:
    pass


@dataclass
class Timings:
    phases: dict[str, float] = field(default_factory=dict)

    def record(self, phase: str, started: float) -> float:
        now = time.perf_counter()
        self.phases[phase] = self.phases.get(phase, 0.0) + now - started
        return now


def require_root() -> None:
    if os.geteuid() != 0:
        raise StateError("netlab builds network namespaces and needs root: run it with sudo")


# ---------------------------------------------------------------------- discovery


def load(lab: str) -> "Cluster":
    data = state.read_json(state.state_file(lab))
    if data is None:
        raise StateError(f'lab "{lab}" has no state (a crashed `up`?): remove it with `netlab down {lab}`')
    from .model.cluster import Cluster
    return Cluster.from_state(data)


def pod_status(lab: str) -> dict:
    return (state.read_json(state.status_file(lab)) or {}).get("pods", {})


class _StatusPoll:
    """pod_status for a wait loop: status.json parsed again only when the agent has replaced
    it. At 1,000 pods the file is megabytes, and parsing it every 50 ms while pods start took
    a good part of a core from the agent and the pods on a 2-core machine."""

    def __init__(self, lab: str):
        self.path = state.status_file(lab)
        self.stamp: Optional[tuple] = None
        self.pods: dict = {}

    def __call__(self) -> dict:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return {}
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)    # a replaced file is a new inode
        if stamp != self.stamp:
            self.stamp, self.pods = stamp, (state.read_json(self.path) or {}).get("pods", {})
        return self.pods


# ---------------------------------------------------------------------- up


def up(path: str | Path, *, name: Optional[str] = None, nodes: Optional[int] = None,
       backend: Optional[str] = None, proxy_mode: Optional[str] = None,
       progress: Progress = _no_progress, wait: float = 30.0,
       timings: Optional[Timings] = None, wait_ready: bool = False,
       report: Optional[dict] = None) -> Cluster:
    """Build a lab from its directory. On any failure (or Ctrl-C) nothing is left behind.

    `up` waits (at most `wait` seconds) until every pod has started and either serves or has
    settled not ready (a failed readiness probe, a crashed container), with the rules and DNS
    records in sync; the pods that are not ready go into report["notReady"] ({pod: why})
    rather than failing the lab, since a pod may be meant never to be ready. wait_ready=True
    is the strict wait: every pod must serve, or `up` fails and rolls back."""
    check_timeout(wait)
    timings = timings or Timings()
    t = time.perf_counter()
    from .model.loader import load_lab
    from .runtime import changes
    cluster = load_lab(path, name=name, nodes=nodes, backend=backend, proxy_mode=proxy_mode)
    require_root()
    lab = cluster.name
    if cluster.config.dns:
        from .runtime.dnsmasq import dnsmasq_missing
        problem = dnsmasq_missing()
        if problem:
            raise StateError(f"cluster DNS needs dnsmasq: {problem} (or set spec.dns: false)")
    if cluster.config.backend == "calico":
        check_calico(cluster)
    if lab in running_labs():
        raise StateError(f'lab "{lab}" is already up: `netlab down {lab}` first, or pick another --name '
                         f'(if its agent is gone, `netlab agent restart --lab {lab}` picks it up)')
    t = timings.record("load", t)
    # Claiming the name (one mkdir) is atomic and sits outside the rollback: the loser of two
    # `up`s of one name must not tear down the winner's lab. Signals wait until the claim is
    # recorded, so an interrupted `up` always knows whether it has something to roll back.
    owner = None
    masked = _hold_signals()
    try:
        try:
            owner = state.claim_lab(lab)
        except FileExistsError:
            raise StateError(f'lab "{lab}" is already up: `netlab down {lab}` first, or pick another --name') from None
        finally:
            _release_signals(masked)
        # The bootstrap: the lab's first state is written before its agent exists; from the
        # moment the agent runs, it is the lab's only writer.
        changes.save(cluster)
        # The agent starts up while the network is wired, and starts each batch of pods as
        # soon as `up` reports it wired: the two run on separate cores.
        agent = agent_client.launch(lab, defer_sync=True)
        wired: list[str] = []

        def batch_done(pods: list[Pod]) -> None:
            wired.extend(p.meta.key for p in pods)
            agent_client.nudge(lab, {"wired": wired})
        build_network(cluster, progress, timings, on_batch=batch_done)
        t = time.perf_counter()
        progress("starting pods", 0, len(cluster.pods))
        agent_client.wait_started(lab, agent)
        agent_client.call(lab, "POST", "/apis/netlab.io/v1/sync", {"wired": "all"})
        t = timings.record("agent", t)
        if wait:
            # The agent syncs rules and DNS before it reports a pod Ready, so `up` returns with
            # the data plane already matching what the agent reports.
            if wait_ready:
                wait_for_pods(cluster, wait, progress)
            else:
                not_ready = wait_for_started(cluster, wait, progress)
                if report is not None:
                    report["notReady"] = not_ready
            if cluster.config.backend == "calico" and len(cluster.nodes) > 1:
                # Pods answer before BIRD has taught every node the others' blocks: `up`
                # returns when cross-node routes exist, as a calico-node reports ready.
                from .runtime.bird import wait_converged
                progress("BGP routes", 0, 1)
                missing = wait_converged(cluster, min(wait, 30.0))
                if report is not None and missing:
                    report["bgp"] = f"{len(missing)} routes not learned yet ({', '.join(missing[:3])})"
        timings.record("pods", t)
    except BaseException as exc:
        if owner is not None:
            _roll_back(lab, owner["id"], exc)
        raise
    return cluster


def kernel_has_ipip() -> bool:
    """Whether this kernel can make an ipip device (tunl0): the module loaded or built in, or
    installed to be loaded on demand."""
    release = os.uname().release
    return (Path("/sys/module/ipip").exists()
            or any(Path(f"/lib/modules/{release}/kernel/net/ipv4").glob("ipip.ko*")))


def check_calico(cluster: Cluster) -> None:
    """backend calico needs BIRD; an IPIP pool needs the kernel's ipip module."""
    from .runtime.bird import bird_missing
    problem = bird_missing()
    if problem:
        raise StateError(f"backend calico runs BIRD on every node: {problem}")
    mode = cluster.config.calico.ipip_mode
    if mode != "Never":
        if not kernel_has_ipip():
            raise StateError(f"spec.calico.ipipMode {mode} needs the kernel's ipip module for tunl0, and "
                             f"this kernel ({os.uname().release}) has none: use ipipMode: Never, where "
                             f"BGP routes pods straight over the underlay (one L2 segment, as here)")
        raise StateError(f"spec.calico.ipipMode {mode}: netlab does not build tunl0 yet; use ipipMode: Never")


def check_timeout(wait) -> float:
    """A wait is a finite number of seconds, 0 or more (nan would wait forever, -1 build a lab
    only to tear it down)."""
    import math
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not math.isfinite(wait) or wait < 0:
        raise InvalidError(f"--timeout must be a finite number of seconds, 0 or more (got {wait})")
    return float(wait)


_HELD = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _hold_signals():
    return signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)


def _release_signals(previous) -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _roll_back(lab: str, lab_id: str, exc: BaseException) -> None:
    """Undo a failed or interrupted `up`: remove what this `up` created (and only that). A
    failure (not an interrupt) keeps its logs, and its message says where."""
    kept = None
    if isinstance(exc, Exception):
        agent_client.stop(lab)          # its last words belong in the kept log
        try:
            kept = state.keep_failure(lab)
        except OSError:
            kept = None
    teardown(lab, lab_id=lab_id)
    if kept is not None and isinstance(exc, LabError):
        import re
        # The lab's directory is gone: point at the kept logs instead.
        exc.message = re.sub(r";?\s*see (`netlab logs`|\S*agent\.log)", "", exc.message) + \
            f"; logs kept in {kept}/"
        exc.kept_logs = kept


def build_network(cluster: Cluster, progress: Progress = _no_progress,
                  timings: Optional[Timings] = None,
                  on_batch: Callable[[list[Pod]], None] = lambda pods: None) -> None:
    timings = timings or Timings()
    t = time.perf_counter()
    from .kernel.build import Builder
    from .plan import network as netplan
    from .runtime import changes
    infra = netplan.plan_infrastructure(cluster)
    with Builder() as builder:
        progress("building nodes", 0, len(cluster.nodes))
        builder.apply(infra, create_netns=[p.netns for p in infra])
        t = timings.record("nodes", t)
        pods = list(cluster.pods.values())
        for i in range(0, len(pods), 25):
            changes.add_pod_network(cluster, pods[i:i + 25], builder)
            on_batch(pods[i:i + 25])
            progress("wiring pods", min(i + 25, len(pods)), len(pods))
        timings.record("pod network", t)


def ready_from(pods: dict) -> Optional[set[str]]:
    """The Running-and-Ready pods in a status.json `pods` map; None (every pod) if it is empty."""
    return {key for key, st in pods.items() if st.get("ready")} if pods else None


def ready_pods(lab: str) -> Optional[set[str]]:
    """Pods the agent reports Running and Ready; None (every pod) before it has reported."""
    return ready_from(pod_status(lab))


def wait_for_pods(cluster: Cluster, timeout: float, progress: Progress = _no_progress) -> None:
    deadline = time.monotonic() + timeout
    total = len(cluster.pods)
    poll = _StatusPoll(cluster.name)
    while True:
        status = poll()
        serving = sum(1 for k in cluster.pods if status.get(k, {}).get("serving"))
        progress("starting pods", serving, total)
        if serving == total:
            return
        if time.monotonic() > deadline:
            waiting = [k for k in cluster.pods if not status.get(k, {}).get("serving")]
            raise StateError(f"{len(waiting)} pod(s) not serving after {timeout:.0f}s: "
                             f"{', '.join(waiting[:5])}; see `netlab logs`")
        time.sleep(0.05)


def _settled(st: dict) -> Optional[str]:
    """Why a started pod that does not serve is not going to, soon: None while it may still."""
    if st.get("phase") in ("Succeeded", "Failed"):
        return f"phase {st['phase']}"
    for c in st.get("containers", []):
        if c.get("restartCount") or c.get("state") == "Terminated":
            return f"container {c['name']} {c.get('reason') or c.get('state')} (restarts: {c.get('restartCount', 0)})"
    for event in reversed(st.get("events", [])):
        if event.get("reason") == "Unhealthy":
            return event.get("message", "Unhealthy")
    return None


def _started(st: dict) -> bool:
    containers = st.get("containers", [])
    return bool(st.get("holderPid")) and bool(containers) and all(
        c.get("startedAt") or c.get("state") != "Waiting" or c.get("restartCount") for c in containers)


def wait_for_started(cluster: Cluster, timeout: float, progress: Progress = _no_progress) -> dict[str, str]:
    """Wait until every pod has started and serves or has settled not ready; return the pods
    that are not ready, each with why. Fails only if some pod never started at all."""
    deadline = time.monotonic() + timeout
    total = len(cluster.pods)
    poll = _StatusPoll(cluster.name)
    while True:
        status = poll()
        pods = {k: status.get(k, {}) for k in cluster.pods}
        serving = {k for k, st in pods.items() if st.get("serving")}
        progress("starting pods", len(serving), total)
        settled = {k: _settled(st) for k, st in pods.items() if k not in serving and _started(st)}
        if all(k in serving or settled.get(k) for k in pods):
            return {k: why for k, why in settled.items() if why}
        if time.monotonic() > deadline:
            never = [k for k, st in pods.items() if not _started(st)]
            if never:
                raise StateError(f"{len(never)} pod(s) not started after {timeout:.0f}s: "
                                 f"{', '.join(never[:5])}; see `netlab logs`")
            return {k: settled.get(k) or ("Ready, but its declared ports are not listening"
                                          if pods[k].get("ready") else "not ready yet")
                    for k in pods if k not in serving}
        time.sleep(0.05)


# ---------------------------------------------------------------------- down / clean


def owned_namespaces(lab: str, lab_id: Optional[str] = None) -> tuple[dict[str, int], list[str], list[str]]:
    """This lab's namespaces, proven by their mark: ({name: inode}, placeholders, foreign).

    A namespace is the lab's if it carries netlab's mark for this lab (and for lab_id, when
    given: a rolled-back `up` removes only what it created). A placeholder is the empty file
    a crash between creating a name and mounting the namespace on it leaves. Everything else
    named like the lab (someone else's namespace, the host's own bind-mounted) is foreign."""
    owned, placeholders, foreign = {}, [], []
    protected = netns.protected_inodes()
    spaces = []
    for name in lab_namespaces(lab):
        if netns.is_netns(name):
            spaces.append(name)
            continue
        try:
            st = os.lstat(netns.netns_path(name))
        except FileNotFoundError:
            continue
        (placeholders if stat.S_ISREG(st.st_mode) and st.st_size == 0 else foreign).append(name)
    marks = netns.read_marks(spaces)
    for name in spaces:
        ino = netns.inode(name)
        mark = netns.parse_mark(marks[name])
        if ino and ino not in protected and mark and mark[0] == lab and (lab_id is None or mark[1] == lab_id):
            owned[name] = ino
        else:
            foreign.append(name)
    return owned, placeholders, foreign


# netlab's own long-running programs of a lab: the agent, and the lab API's listeners, forks
# of it with its command line (the loopback one for kubectl lives in the host's namespace, so
# no namespace's removal takes it along).
LAB_PROGRAMS = ("netlab.runtime.agent",)


def lab_agents(lab: Optional[str] = None) -> list[int]:
    """PIDs of netlab's agents and API listeners (one lab's, or any lab's): marked with
    NETLAB_LAB in the environment *and* running one of LAB_PROGRAMS for that lab (a shell
    that merely exported NETLAB_LAB is not one)."""
    found = []
    for pid in agent_client.marked_processes(lab):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if not set(LAB_PROGRAMS) & {a.decode(errors="replace") for a in argv}:
            continue
        try:
            their_lab = argv[argv.index(b"--lab") + 1].decode(errors="replace")
        except (ValueError, IndexError):
            continue
        if f"{state.LAB_ENV}={their_lab}".encode() in env and (lab is None or their_lab == lab):
            found.append(pid)
    return found


def teardown(lab: str, lab_id: Optional[str] = None) -> dict:
    """Remove every trace of one lab, acting only on what is provably the lab's (see
    owned_namespaces); absent pieces are fine. Returns what was removed and what was left."""
    agent_client.stop(lab)
    for pid in lab_agents(lab):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    spaces, placeholders, foreign = owned_namespaces(lab, lab_id)
    killed = netns.kill_processes(spaces.values())
    for name in spaces:
        netns.delete(name)
    for name in placeholders:
        try:
            os.unlink(netns.netns_path(name))
        except FileNotFoundError:
            pass
    for name in list(spaces) + placeholders:
        shutil.rmtree(state.ETC_NETNS / name, ignore_errors=True)
    _sweep_etc_netns(f"{names.PREFIX}{lab}.")
    state.remove_lab_dir(lab)
    return {"lab": lab, "namespaces": len(spaces), "processes": killed, "skipped": foreign}


def _sweep_etc_netns(prefix: str) -> None:
    """Remove /etc/netns/<name> directories netlab wrote for namespaces that no longer exist
    (a pod's hosts and resolv.conf, nothing else)."""
    if not state.ETC_NETNS.exists():
        return
    for etc in state.ETC_NETNS.iterdir():
        if not etc.name.startswith(prefix) or not names.lab_of_netns(etc.name) or netns.exists(etc.name):
            continue
        try:
            if etc.is_symlink() or not etc.is_dir() or not {p.name for p in etc.iterdir()} <= {"hosts", "resolv.conf"}:
                continue
        except OSError:
            continue
        shutil.rmtree(etc, ignore_errors=True)


def down(lab: str) -> dict:
    require_root()
    if lab not in running_labs():
        raise NotFoundError(f'lab "{lab}" is not running')
    return teardown(lab)


def clean(lab: Optional[str] = None) -> list[dict]:
    """Remove everything any netlab lab left on this machine, and nothing else: labs with
    state, namespaces carrying a lab's mark, netlab agents, and stale /etc/netns entries.
    With `lab`, only that lab's (also when its state is gone: by its marks)."""
    require_root()
    if lab is not None:
        problem = names.check_dns_label(lab, names.LAB_NAME_MAX)
        if problem:
            raise InvalidError(f"not a lab name: {problem}", value=lab)
        removed = teardown(lab)
        _sweep_etc_netns(f"{names.PREFIX}{lab}.")
        return [removed]
    labs = set(state.labs_with_state())
    for name, mark in netns.read_marks(netns.list_names(names.PREFIX)).items():
        mark = netns.parse_mark(mark)
        if mark and mark[0] == names.lab_of_netns(name):
            labs.add(mark[0])
    for pid in lab_agents():
        lab = _agent_lab(pid)
        if lab:
            labs.add(lab)
    # Names come from directories and command lines: only a lab name (a DNS label) is one.
    labs = {lab for lab in labs if names.check_dns_label(lab, names.LAB_NAME_MAX) is None}
    removed = [teardown(lab) for lab in sorted(labs)]
    _sweep_etc_netns(names.PREFIX)
    return removed


def _agent_lab(pid: int) -> Optional[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        return argv[argv.index(b"--lab") + 1].decode(errors="replace")
    except (OSError, ValueError, IndexError):
        return None


# ---------------------------------------------------------------------- live changes
# Clients of the lab's agent, which validates, applies to the kernel and commits each change.

_PATHS = {"pods": "pods", "services": "services", "rcs": "replicationcontrollers"}


def api_manifest(obj) -> dict:
    """An object as a request body: the manifest as written, its file in an annotation."""
    import copy
    doc = copy.deepcopy(obj.meta.raw) or {"apiVersion": "v1", "kind": obj.kind}
    md = doc.setdefault("metadata", {})
    md["name"] = obj.meta.name
    if obj.kind != "Namespace":
        md["namespace"] = obj.meta.namespace
    if obj.meta.source:
        md["annotations"] = dict(md.get("annotations") or {}, **{"netlab/source": obj.meta.source})
    if obj.kind == "ReplicationController":
        doc.setdefault("spec", {})["replicas"] = obj.replicas
    return doc


def apply(lab: str, objects: list) -> list[str]:
    """Create or update objects in a running lab, all or nothing; kubectl-style result lines."""
    reply = agent_client.call(lab, "POST", "/apis/netlab.io/v1/apply",
                              {"kind": "List", "apiVersion": "v1", "items": [api_manifest(o) for o in objects]})
    return reply["lines"]


def delete(lab: str, kind: str, name: str, namespace: str = "default") -> list[str]:
    """Delete one object (kind: pods, services, rcs, namespaces); dependents follow."""
    from urllib.parse import quote
    if kind == "namespaces":
        path = f"/api/v1/namespaces/{quote(name, safe='')}"
    elif kind == "nodes":
        path = f"/api/v1/nodes/{quote(name, safe='')}"      # drained, then removed
    elif kind in _PATHS:
        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/{_PATHS[kind]}/{quote(name, safe='')}"
    elif kind in ("ingresses", "secrets", "ingressclasses"):
        group = "/api/v1" if kind == "secrets" else "/apis/networking.k8s.io/v1"
        where = "" if kind == "ingressclasses" else f"/namespaces/{quote(namespace, safe='')}"
        path = f"{group}{where}/{kind}/{quote(name, safe='')}"
    elif kind in ("deployments", "replicasets", "daemonsets", "statefulsets"):
        path = f"/apis/apps/v1/namespaces/{quote(namespace, safe='')}/{kind}/{quote(name, safe='')}"
    elif kind == "networkpolicies":
        path = (f"/apis/networking.k8s.io/v1/namespaces/{quote(namespace, safe='')}/networkpolicies/"
                f"{quote(name, safe='')}")
    else:
        raise StateError(f"cannot delete {kind}")
    return [agent_client.call(lab, "DELETE", path)["message"]]


def scale(lab: str, name: str, replicas: int, namespace: str = "default", kind: str = "rcs") -> str:
    """Set the replicas of an RC (kind rcs) or of deployments, replicasets, statefulsets."""
    from urllib.parse import quote
    where = (f"/api/v1/namespaces/{quote(namespace, safe='')}/replicationcontrollers" if kind == "rcs"
             else f"/apis/apps/v1/namespaces/{quote(namespace, safe='')}/{kind}")
    reply = agent_client.call(lab, "PUT", f"{where}/{quote(name, safe='')}/scale", {"spec": {"replicas": replicas}})
    return reply["message"]


def inject_fault(lab: str, kind: str, target: str, namespace: str = "default",
                 container: Optional[str] = None, grace: float = 10.0) -> str:
    """Ask the agent to inject a fault (see netlab/faults.py); returns what it did."""
    from .faults import check_grace
    body = {"kind": kind, "target": target, "namespace": namespace, "container": container,
            "grace": check_grace(grace)}
    return agent_client.call(lab, "POST", "/apis/netlab.io/v1/faults", body)["message"]


def heal_faults(lab: str) -> list[str]:
    return agent_client.call(lab, "DELETE", "/apis/netlab.io/v1/faults")["lines"]


def add_node(lab: str, name: Optional[str] = None, labels: Optional[dict] = None,
             wait: float = 30.0) -> dict:
    """Ask the agent to add a node to a running lab (runtime/nodechanges.py); returns the v1
    Node. Then wait (at most `wait` seconds) until its node daemons run and, under calico,
    every node has learned every other node's blocks over BGP; what is still missing then
    goes into the reply's "notConverged"."""
    check_timeout(wait)
    md = {"labels": dict(labels or {})}
    if name is not None:
        md["name"] = name
    node = agent_client.call(lab, "POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": md})
    name = node["metadata"]["name"]
    deadline = time.monotonic() + wait
    while wait:
        daemons = [d for d in agent_client.live_status(lab).get("daemons", {}).values() if d["node"] == name]
        if daemons and all(d["state"] == "Running" for d in daemons) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    cluster = load(lab)
    if wait and cluster.config.backend == "calico":
        from .runtime.bird import wait_converged
        missing = wait_converged(cluster, max(0.0, deadline - time.monotonic()))
        if missing:
            node["notConverged"] = missing
    return node


def remove_node(lab: str, name: str) -> list[str]:
    """Ask the agent to drain a node and remove it; returns the pods deleted with it."""
    from urllib.parse import quote
    reply = agent_client.call(lab, "DELETE", f"/api/v1/nodes/{quote(name, safe='')}")
    return reply["details"].get("evicted", [])


def restart_agent(lab: str) -> int:
    """Start a new agent for a running lab; the network stays, pod processes start afresh.

    A dead agent's children were re-parented away from us, so the new agent cannot supervise
    them: they are stopped and started again (same names, same addresses)."""
    require_root()
    cluster = load(lab)
    agent_client.stop(lab)
    # Pods' processes and the userspace proxies (in the nodes' namespaces) go with the old agent.
    spaces = [cluster.pod_netns(p) for p in cluster.pods.values()] + [n.netns for n in cluster.nodes]
    netns.kill_processes([i for i in (netns.inode(ns) for ns in spaces) if i])
    pid = agent_client.start(lab)
    wait_for_pods(cluster, 60)
    return pid


def rolling_update(lab: str, old_name: str, new_rc, namespace: str = "default",
                   say: Callable[[str], None] = lambda line: None, timeout: float = 60.0) -> None:
    """kubectl rolling-update: the new RC goes up one pod at a time and the old one down one at
    a time (never more than replicas+1 pods), each step after the new pod serves."""
    import copy
    from .model.errors import InvalidError
    require_root()
    cluster = load(lab)
    old = cluster.rcs.get(f"{namespace}/{old_name}")
    if old is None:
        raise NotFoundError(f'replicationcontrollers "{old_name}" not found in namespace "{namespace}"')
    where = {"file": new_rc.meta.source, "obj": f"ReplicationController/{new_rc.meta.name}"}
    if new_rc.meta.name == old.meta.name or new_rc.meta.namespace != namespace:
        raise InvalidError(f"must be a new controller in namespace {namespace} with another name",
                           field="metadata.name", **where)
    if any(new_rc.selector.matches(p.meta.labels) for p in cluster.rc_pods(old)):
        raise InvalidError("must select none of the old controller's pods (use a key with another value)",
                           field="spec.selector", **where)
    target = new_rc.replicas

    def step(rc, replicas: int) -> None:
        scale(lab, rc.meta.name, replicas, namespace)
        wait_for_pods(load(lab), timeout)

    new_rc = copy.copy(new_rc)
    new_rc.replicas = 0
    apply(lab, [new_rc])
    say(f"Created {new_rc.meta.name}")
    up_count, down_count = 0, old.replicas
    while up_count < target or down_count > 0:
        if up_count < target:
            up_count += 1
            say(f"Scaling {new_rc.meta.name} up to {up_count}")
            step(new_rc, up_count)
        if down_count > 0 and (up_count >= target or down_count + up_count > target):
            down_count -= 1
            say(f"Scaling {old.meta.name} down to {down_count}")
            step(old, down_count)
    delete(lab, "rcs", old.meta.name, namespace)
    say(f'Update succeeded. Deleting {old.meta.name}\n'
        f'replicationcontroller "{old.meta.name}" rolling updated to "{new_rc.meta.name}"')
