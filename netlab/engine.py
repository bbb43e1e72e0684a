"""The lab engine: bring a lab up, change it, take it down. The CLI is a thin layer over this.

Every step of `up` is undone if a later one fails or the user presses Ctrl-C; `down` and
`clean` find what to remove by netlab's marks (namespace names, the agent's environment),
so they work without the lab's files and after a crash.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

from . import state
from .kernel import netns
from .kernel.build import Builder
from .model import names
from .model.cluster import Cluster
from .model.errors import NotFoundError, StateError
from .model.loader import load_lab
from .model.objects import Pod
from .plan import network as netplan
from .runtime import agent_client

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


def running_labs() -> list[str]:
    """Labs with state or with namespaces on this machine."""
    labs = set(state.labs_with_state())
    for name in netns.list_names(names.PREFIX):
        lab = names.lab_of_netns(name)
        if lab:
            labs.add(lab)
    return sorted(labs)


def resolve_lab(lab: Optional[str]) -> str:
    """The lab a command acts on: the one named, or the only one running."""
    labs = running_labs()
    if lab:
        if lab not in labs:
            raise NotFoundError(f'lab "{lab}" is not running' +
                                (f" (running: {', '.join(labs)})" if labs else ""))
        return lab
    if not labs:
        raise NotFoundError("no lab is running; start one with `netlab up LABDIR`")
    if len(labs) > 1:
        raise StateError(f"several labs are running ({', '.join(labs)}): choose one with --lab")
    return labs[0]


def load(lab: str) -> Cluster:
    data = state.read_json(state.state_file(lab))
    if data is None:
        raise StateError(f'lab "{lab}" has no state (a crashed `up`?): remove it with `netlab down {lab}`')
    return Cluster.from_state(data)


def save(cluster: Cluster) -> None:
    state.write_json(state.state_file(cluster.name), cluster.to_state())


def pod_status(lab: str) -> dict:
    return (state.read_json(state.status_file(lab)) or {}).get("pods", {})


# ---------------------------------------------------------------------- up


def up(path: str | Path, *, name: Optional[str] = None, nodes: Optional[int] = None,
       backend: Optional[str] = None, proxy_mode: Optional[str] = None,
       progress: Progress = _no_progress, wait: float = 30.0,
       timings: Optional[Timings] = None) -> Cluster:
    """Build a lab from its directory. On any failure (or Ctrl-C) nothing is left behind."""
    timings = timings or Timings()
    t = time.perf_counter()
    cluster = load_lab(path, name=name, nodes=nodes, backend=backend, proxy_mode=proxy_mode)
    require_root()
    lab = cluster.name
    if cluster.config.dns:
        from .runtime.dnsmasq import dnsmasq_missing
        problem = dnsmasq_missing()
        if problem:
            raise StateError(f"cluster DNS needs dnsmasq: {problem} (or set spec.dns: false)")
    if lab in running_labs():
        raise StateError(f'lab "{lab}" is already up: `netlab down {lab}` first, or pick another --name '
                         f'(if its agent is gone, `netlab agent restart --lab {lab}` picks it up)')
    t = timings.record("load", t)
    try:
        state.lab_dir(lab).mkdir(parents=True)
        state.log_dir(lab).mkdir()
        save(cluster)
        # The agent starts up while the network is wired, and starts each batch of pods as
        # soon as it is wired: the two run on separate cores.
        agent = agent_client.launch(lab, defer_sync=True)
        build_network(cluster, progress, timings, on_batch=lambda: agent_client.nudge(lab))
        t = time.perf_counter()
        sync_dataplane(cluster)
        t = timings.record("rules", t)
        progress("starting pods", 0, len(cluster.pods))
        agent_client.wait_started(lab, agent)
        agent_client.request(lab, "sync")
        t = timings.record("agent", t)
        if wait:
            wait_for_pods(cluster, wait, progress)
            # Rules and DNS for exactly the pods that are ready now, so `up` returns with the
            # data plane already matching what the agent reports.
            sync_dataplane(cluster)
        timings.record("pods", t)
    except BaseException:
        teardown(lab)
        raise
    return cluster


def build_network(cluster: Cluster, progress: Progress = _no_progress,
                  timings: Optional[Timings] = None, on_batch: Callable[[], None] = lambda: None) -> None:
    timings = timings or Timings()
    t = time.perf_counter()
    infra = netplan.plan_infrastructure(cluster)
    with Builder() as builder:
        progress("building nodes", 0, len(cluster.nodes))
        builder.apply(infra, create_netns=[p.netns for p in infra])
        t = timings.record("nodes", t)
        pods = list(cluster.pods.values())
        for i in range(0, len(pods), 25):
            add_pod_network(cluster, pods[i:i + 25], builder)
            on_batch()
            progress("wiring pods", min(i + 25, len(pods)), len(pods))
        timings.record("pod network", t)


def add_pod_network(cluster: Cluster, pods: Iterable[Pod], builder: Builder) -> None:
    plans, created = [], []
    for pod in pods:
        plans.extend(netplan.plan_pod(cluster, pod))
        created.append(cluster.pod_netns(pod))
        write_pod_files(cluster, pod)
    builder.apply(plans, create_netns=created)
    for ns in created:     # pods are many; don't hold a socket per pod open
        builder.forget(ns)


def write_pod_files(cluster: Cluster, pod: Pod) -> None:
    """/etc/netns/<pod netns>/: the files the pod sees as /etc/hosts (and resolv.conf)."""
    etc = state.ETC_NETNS / cluster.pod_netns(pod)
    etc.mkdir(parents=True, exist_ok=True)
    hostname = pod.spec.hostname or pod.meta.name
    (etc / "hosts").write_text(
        "# Kubernetes-managed hosts file (netlab).\n127.0.0.1\tlocalhost\n"
        f"::1\tlocalhost ip6-localhost ip6-loopback\n{pod.pod_ip}\t{hostname}\n")
    try:
        from .model.dns import resolv_conf
    except ImportError:      # cluster DNS not built yet: keep the host's resolver file
        return
    (etc / "resolv.conf").write_text(resolv_conf(cluster, pod, None))


def ready_from(pods: dict) -> Optional[set[str]]:
    """The Running-and-Ready pods in a status.json `pods` map; None (every pod) if it is empty."""
    return {key for key, st in pods.items() if st.get("ready")} if pods else None


def ready_pods(lab: str) -> Optional[set[str]]:
    """Pods the agent reports Running and Ready; None (every pod) before it has reported."""
    return ready_from(pod_status(lab))


def sync_dataplane(cluster: Cluster) -> None:
    """kube-proxy's and kube-dns's job: rules on every node and DNS records, for ready pods."""
    from . import dataplane
    reported = pod_status(cluster.name)
    ready = ready_from(reported)
    if ready is not None:
        # Pods the agent has not seen yet (just applied) count as ready until it reports.
        ready |= {key for key in cluster.pods if key not in reported}
    dataplane.sync(cluster, ready)


def wait_for_pods(cluster: Cluster, timeout: float, progress: Progress = _no_progress) -> None:
    deadline = time.monotonic() + timeout
    total = len(cluster.pods)
    while True:
        status = pod_status(cluster.name)
        serving = sum(1 for k in cluster.pods if status.get(k, {}).get("serving"))
        progress("starting pods", serving, total)
        if serving == total:
            return
        if time.monotonic() > deadline:
            waiting = [k for k in cluster.pods if not status.get(k, {}).get("serving")]
            raise StateError(f"{len(waiting)} pod(s) not serving after {timeout:.0f}s: "
                             f"{', '.join(waiting[:5])}; see `netlab logs`")
        time.sleep(0.05)


# ---------------------------------------------------------------------- down / clean


def lab_namespaces(lab: str) -> list[str]:
    return netns.list_names(f"{names.PREFIX}{lab}.")


def teardown(lab: str) -> dict:
    """Remove every trace of one lab; absent pieces are fine. Returns what was removed."""
    agent_client.stop(lab)
    spaces = lab_namespaces(lab)
    inodes = [i for i in (netns.inode(n) for n in spaces) if i]
    killed = netns.kill_processes(inodes)
    for pid in agent_client.marked_processes(lab):
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    for name in spaces:
        netns.delete(name)
    for etc in state.ETC_NETNS.glob(f"{names.PREFIX}{lab}.*") if state.ETC_NETNS.exists() else []:
        shutil.rmtree(etc, ignore_errors=True)
    state.remove_lab_dir(lab)
    return {"lab": lab, "namespaces": len(spaces), "processes": killed}


def down(lab: str) -> dict:
    require_root()
    if lab not in running_labs():
        raise NotFoundError(f'lab "{lab}" is not running')
    return teardown(lab)


def clean() -> list[dict]:
    """Remove everything any netlab lab left on this machine, and nothing else."""
    require_root()
    removed = [teardown(lab) for lab in running_labs()]
    for pid in agent_client.marked_processes():
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    return removed


# ---------------------------------------------------------------------- live changes


def _replace_service(cluster: Cluster, new) -> None:
    """kubectl apply on an existing Service: keep its ClusterIP and nodePorts unless changed."""
    from .model.errors import LabError
    old = cluster.services[new.meta.key]
    if not new.cluster_ip:
        new.cluster_ip = old.cluster_ip
    if new.type == old.type:
        for port in new.ports:
            before = next((p for p in old.ports if (p.name, p.port) == (port.name, port.port)), None)
            if before and not port.node_port:
                port.node_port = before.node_port
        if not new.load_balancer_ip:
            new.load_balancer_ip = old.load_balancer_ip
    cluster.remove_service(old.meta.key)
    try:
        cluster.admit([new])
    except LabError:
        cluster.service_alloc.restore(old)
        cluster.services[old.meta.key] = old
        raise


def apply(lab: str, objects: list) -> list[str]:
    """Create or update objects in a running lab; on a bad object the lab stays as it was.

    Returns kubectl-style lines ("service/frontend created").
    """
    from .model.errors import InvalidError
    from .model.objects import ReplicationController, Service
    require_root()
    cluster = load(lab)
    snapshot = cluster.snapshot()
    before = set(cluster.pods)
    results = []
    try:
        fresh = []
        for obj in objects:
            if isinstance(obj, Service) and obj.meta.key in cluster.services:
                _replace_service(cluster, obj)
                results.append(f"service/{obj.meta.name} configured")
            elif isinstance(obj, ReplicationController) and obj.meta.key in cluster.rcs:
                cluster.rcs[obj.meta.key] = obj
                _scale_to(cluster, obj)
                results.append(f"replicationcontroller/{obj.meta.name} configured")
            elif isinstance(obj, Pod) and obj.meta.key in cluster.pods:
                raise InvalidError("a pod's spec is immutable here: delete the pod and apply it again",
                                   file=obj.meta.source, obj=f"Pod/{obj.meta.name}", field="spec")
            else:
                fresh.append(obj)
        cluster.admit(fresh)
        results += [f"{o.kind.lower()}/{o.meta.name} created" for o in fresh]
    except BaseException:
        cluster.restore(snapshot)
        raise
    _converge(cluster, snapshot, added=[cluster.pods[k] for k in cluster.pods if k not in before],
              removed=[k for k in before if k not in cluster.pods])
    return results


def _scale_to(cluster: Cluster, rc) -> None:
    """The replication manager's job: create or delete pods until `replicas` match."""
    mine = cluster.rc_pods(rc)
    for pod in mine[rc.replicas:][::-1] if len(mine) > rc.replicas else []:
        cluster.remove_pod(pod.meta.key)
    cluster.reconcile_rc(rc)


def delete(lab: str, kind: str, name: str, namespace: str = "default") -> list[str]:
    require_root()
    cluster = load(lab)
    snapshot = cluster.snapshot()
    before = set(cluster.pods)
    results = []
    if kind == "services":
        cluster.service(name, namespace)
        cluster.remove_service(f"{namespace}/{name}")
        results.append(f'service "{name}" deleted')
    elif kind == "rcs":
        key = f"{namespace}/{name}"
        rc = cluster.rcs.get(key)
        if rc is None:
            raise NotFoundError(f'replicationcontrollers "{name}" not found in namespace "{namespace}"')
        for pod in cluster.rc_pods(rc):
            cluster.remove_pod(pod.meta.key)
        del cluster.rcs[key]
        results.append(f'replicationcontroller "{name}" deleted')
    elif kind == "pods":
        pod = cluster.pod(name, namespace)
        cluster.remove_pod(pod.meta.key)
        results.append(f'pod "{name}" deleted')
        # Its controller notices at once and makes a replacement with a new name and IP.
        for rc in cluster.rcs.values():
            if rc.meta.namespace == namespace and rc.selector.matches(pod.meta.labels):
                cluster.reconcile_rc(rc)
    elif kind == "namespaces":
        if name in ("default", "kube-system"):
            raise StateError(f'namespace "{name}" cannot be deleted')
        if name not in cluster.namespaces:
            raise NotFoundError(f'namespaces "{name}" not found')
        for key in [k for k in cluster.pods if k.startswith(name + "/")]:
            cluster.remove_pod(key)
        for key in [k for k in cluster.services if k.startswith(name + "/")]:
            cluster.remove_service(key)
        for key in [k for k in cluster.rcs if k.startswith(name + "/")]:
            del cluster.rcs[key]
        del cluster.namespaces[name]
        results.append(f'namespace "{name}" deleted')
    else:
        raise StateError(f"cannot delete {kind}")
    _converge(cluster, snapshot, added=[cluster.pods[k] for k in cluster.pods if k not in before],
              removed=[k for k in before if k not in cluster.pods])
    return results


def _converge(cluster: Cluster, snapshot: dict, added: list[Pod], removed: list[str],
              agent_sync: Optional[Callable[[], None]] = None) -> None:
    """Make the kernel and the agent follow a changed cluster: new pods wired, gone pods
    unwired, rules re-synced on every node. If wiring fails, the previous state returns.
    The agent itself passes `agent_sync` (it cannot ask its own socket)."""
    old = Cluster.from_state(snapshot)
    try:
        with Builder() as builder:
            add_pod_network(cluster, added, builder)
    except BaseException:
        for pod in added:
            netns.delete(cluster.pod_netns(pod))
        raise
    save(cluster)
    if agent_sync is not None:
        agent_sync()
    elif agent_client.agent_pid(cluster.name):
        agent_client.request(cluster.name, "sync")      # stops removed pods, starts new ones
    gone = [old.pod_netns(old.pods[key]) for key in removed]
    netns.kill_processes([i for i in (netns.inode(ns) for ns in gone) if i])
    with Builder() as builder:
        for key in removed:
            pod = old.pods[key]
            builder.remove_links(old.node(pod.spec.node_name).netns,
                                 [names.host_veth(pod.meta.namespace, pod.meta.name)])
    for ns in gone:
        netns.delete(ns)
        shutil.rmtree(state.ETC_NETNS / ns, ignore_errors=True)
    sync_dataplane(cluster)


def evict_node(lab: str, node: str, agent_sync: Callable[[], None]) -> list[str]:
    """The node controller's eviction: the node is NotReady, its pods are deleted, and their
    controllers recreate them on the nodes that are left. Returns the evicted pods."""
    cluster = load(lab)
    snapshot = cluster.snapshot()
    cluster.not_ready.add(node)
    gone = [p.meta.key for p in cluster.pods_on(node)]
    for key in gone:
        cluster.remove_pod(key)
    before = set(cluster.pods)
    for rc in cluster.rcs.values():
        cluster.reconcile_rc(rc)
    _converge(cluster, snapshot, added=[cluster.pods[k] for k in cluster.pods if k not in before],
              removed=gone, agent_sync=agent_sync)
    return gone


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

    def scale(rc, replicas: int) -> None:
        scaled = copy.copy(rc)
        scaled.replicas = replicas
        apply(lab, [scaled])
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
            scale(new_rc, up_count)
        if down_count > 0 and (up_count >= target or down_count + up_count > target):
            down_count -= 1
            say(f"Scaling {old.meta.name} down to {down_count}")
            scale(old, down_count)
    delete(lab, "rcs", old.meta.name, namespace)
    say(f'Update succeeded. Deleting {old.meta.name}\n'
        f'replicationcontroller "{old.meta.name}" rolling updated to "{new_rc.meta.name}"')
