"""The per-lab agent: the lab's API server, its controllers and its kubelet in one process.

Started by `netlab up`, stopped by `netlab down`. It is the only writer of the lab's state
(state.json, faults.json, status.json) and of its data plane (rules, DNS records, faults):
CLI commands are clients of its HTTP API on a Unix socket (runtime/apiserver.py), and every
change goes validate -> apply to the kernel -> commit (runtime/changes.py). Requests are
served one at a time, which is what makes concurrent commands safe.

Single-threaded on purpose: it forks pods, containers and probes, and forking a threaded
process is asking for deadlocks. Nothing in its loop blocks for long: probes run in forked
children with deadlines, clients are read without waiting, and kernel calls are bounded.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

from .. import faults as faultops, state
from ..model.cluster import Cluster
from ..model.objects import Pod
from . import api, changes, daemons, nsops, pods as podproc, procs
from ..kernel.netns import tcp_listening_many
from ..model.dns import pod_etc_files
from .probes import ProbeState, run_probe
from .spawner import Spawner

RESTART_BACKOFF_MAX = 300.0     # kubelet's CrashLoopBackOff cap
RESTART_BACKOFF_START = 10.0
STARTUP_GRACE = 1.0             # seconds a new container's failing first readiness probe is retried
STARTUP_RETRY = 0.1             # ... this often, before its failure counts
SHUTDOWN_GRACE = 0.3            # seconds daemons get to exit on SIGTERM when the agent stops
CLIENT_TIMEOUT = 10.0           # a client that has not sent its whole request by then is dropped


@dataclass
class ContainerRun:
    name: str
    pid: int = 0                    # the container's process, the agent's child
    state: str = "Waiting"          # Waiting | Running | Terminated
    reason: str = "ContainerCreating"
    exit_code: Optional[int] = None
    restarts: int = 0
    started: float = 0.0
    next_start: float = 0.0         # back-off deadline while waiting to restart
    ticks: Optional[int] = None     # the process's start time: proof of identity
    env: dict = field(default_factory=dict)   # as set at start: `exec` gives the same one
    probes: list = field(default_factory=list)  # ProbeState for readiness and liveness

    @property
    def ready(self) -> bool:
        """kubelet's container readiness: running, and every readiness probe has passed."""
        return self.state == "Running" and all(p.ok for p in self.probes if p.kind == "readiness")

    def to_json(self, with_env: bool = True) -> dict:
        out = {"name": self.name, "pid": self.pid, "state": self.state, "reason": self.reason,
               "ready": self.ready,
               "exitCode": self.exit_code, "restartCount": self.restarts, "startedAt": self.started,
               "startTicks": self.ticks}
        if with_env:
            out["env"] = self.env
        return out


@dataclass
class PodRun:
    key: str
    holder: int = 0
    holder_ticks: Optional[int] = None                 # its start time: proof of identity for `exec`
    containers: dict[str, ContainerRun] = field(default_factory=dict)
    events: list[dict] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)     # declared TCP ports, to see them serve
    listening: bool = False                            # all of them seen listening once
    listen_check: tuple = (0.0, 0.02)                  # (next look at its socket table, then the wait after)
    security: object = None                            # its PodSecurity, parsed once at its start

    def event(self, reason: str, message: str, kind: str = "Normal") -> None:
        self.events.append({"time": time.time(), "type": kind, "reason": reason, "message": message})
        del self.events[:-50]


class Agent:
    def __init__(self, lab: str):
        self.lab = lab
        self.cluster: Optional[Cluster] = None
        self.pods: dict[str, PodRun] = {}
        self.by_pid: dict[int, tuple[str, str]] = {}    # holder or container pid -> (pod key, container; '' = holder)
        self.running = True
        self.dirty = True
        self.published_ready: Optional[set[str]] = None   # what the data plane last saw
        self.daemons: dict[str, daemons.DaemonRun] = {}    # "name/node" -> its run (kube-proxy, ...)
        self.starting = True                               # some pod is not serving yet
        self.faults: dict = {"nodes": {}, "pods": {}}
        self.wired: Optional[set[str]] = None              # while `up` wires: the pods it has wired
        self.pods_reported = False                         # `up` reported wired pods not started yet
        self.clients: dict[int, tuple[socket.socket, bytearray, float]] = {}
        self.probing: dict[int, tuple] = {}                # result fd -> (pod key, container, ProbeState, pid, deadline)
        self.ready_since: dict[str, float] = {}            # pod key -> when it was first published Ready
        self.spawner: Optional[Spawner] = None             # forks the pods' processes (runtime/spawner.py)
        # A new lab whose nodes have no Service rules yet. Not derivable from `wired`: `up`'s
        # "all wired" may arrive before the first batch has started, and clears it.
        self.services_unsynced = False

    # ---------------------------------------------------------------- pods

    def load(self) -> None:
        data = state.read_json(state.state_file(self.lab))
        if data is None:
            raise SystemExit(f"agent: lab {self.lab} has no state.json")
        self.cluster = Cluster.from_state(data)
        self.faults = faultops.read(self.lab)

    def bootstrap_sync(self, wired) -> bool:
        """`up` says which pods it has wired (a list, cumulative) or that all are: start those.

        A list only records them (True: started later): while the agent starts one batch,
        `up` wires and reports the next ones, and the loop then starts everything reported
        meanwhile at once (one sync, one status publish) rather than batch after batch."""
        if wired == "all":
            self.wired, self.pods_reported = None, False
            self.sync_pods()
            return False
        self.wired = set(wired) | (self.wired or set())
        self.pods_reported = True
        return True

    def sync_pods(self) -> None:
        """Make the running pods match the cluster: start new ones, stop vanished ones."""
        desired = self.cluster.pods
        for key in [k for k in self.pods if k not in desired]:
            self.stop_pod(key)
        # All sandboxes first, then all containers: the holders set themselves up on the
        # other core while the spawner forks the next ones. While `up` is still wiring, only
        # the pods it has reported wired start (a namespace exists before its devices are
        # configured). Everything the forks need is worked out here, so that the spawner's
        # forks follow one another with little in between: every page a process writes
        # after a fork is copied, and Python work between forks wrote about 200 pages a fork.
        new = [pod for pod in desired.values() if pod.meta.key not in self.pods
               and (self.wired is None or pod.meta.key in self.wired)]
        if new and self.services_unsynced:
            # `up`'s first pods: the Services exist before any pod, as in a cluster, so each
            # node's kube-proxy has their rules (no endpoints yet: REJECT) before a pod can
            # connect to one. A redis replica that started first sent its SYN to a ClusterIP
            # nothing translated; the node masqueraded it to the underlay, conntrack kept that
            # flow un-DNATed, and every retransmit followed it until redis's 60 s repl-timeout.
            self.services_unsynced = not self.sync_dataplane(set())
        sandboxes = [(pod, args) for pod in new for args in [self._prepare_sandbox(pod)] if args]
        holders = self._spawn("holders", [args for _, args in sandboxes])
        containers = []
        for (pod, _), holder in zip(sandboxes, holders):
            run = self.pods[pod.meta.key]
            if isinstance(holder, OSError):
                run.event("FailedCreatePodSandBox", str(holder), "Warning")
                continue
            run.holder, ready = holder
            self.by_pid[run.holder] = (run.key, "")
            run.event("Scheduled", f"Successfully assigned {pod.meta.key} to {pod.spec.node_name}")
            if not ready:
                run.event("FailedCreatePodSandBox", "the pod sandbox did not come up; see its POD log",
                          "Warning")
                continue
            run.holder_ticks = procs.start_ticks(run.holder)
            for c in pod.spec.containers:
                run.containers[c.name] = ContainerRun(c.name)
                containers.append((run, c, self._prepare_container(pod, run, c)))
        pids = self._spawn("containers", [args for _, _, args in containers])
        for (run, container, args), pid in zip(containers, pids):
            self._container_forked(run, container, args, pid)
        self.dirty = True

    def _spawn(self, kind: str, args: list[tuple]) -> list:
        """Holders or containers forked by the pod spawner (runtime/spawner.py): one result
        each, an OSError for those that failed."""
        if not args:
            return []
        try:
            if self.spawner is None or self.spawner.gone:
                self.spawner = Spawner()
            return getattr(self.spawner, kind)(args)
        except OSError as exc:             # it died on the way: say so; the next sync has a new one
            print(f"agent: {exc}", file=sys.stderr, flush=True)
            return [exc] * len(args)

    def ready_pods(self) -> set[str]:
        """Pods whose endpoints the data plane may use: those last published Ready."""
        return set(self.published_ready or ())

    def pids_of(self, key: str, container: Optional[str]) -> list[int]:
        """The live PIDs of a pod (holder and containers), or of one container: our children."""
        run = self.pods.get(key)
        if run is None:
            return []
        pids = [c.pid for c in run.containers.values()
                if c.pid and c.state == "Running" and (container is None or c.name == container)]
        return pids + ([run.holder] if container is None and run.holder else [])

    def _prepare_sandbox(self, pod: Pod) -> Optional[tuple]:
        """The pod's run, and spawn_holder's arguments (None if its spec is refused)."""
        run = PodRun(pod.meta.key, ports=sorted({p.container_port for c in pod.spec.containers
                                                  for p in c.ports if p.protocol == "TCP"}))
        self.pods[pod.meta.key] = run
        log = state.container_log(self.lab, pod.meta.namespace, pod.meta.name, "POD")
        try:
            run.security = podproc.security_of(pod, self.lab)
        except OSError as exc:
            run.event("FailedCreatePodSandBox", str(exc), "Warning")
            return None
        return (f"/run/netns/{self.cluster.pod_netns(pod)}", pod.hostname, pod_etc_files(self.cluster, pod),
                str(log), run.security)

    def start_container(self, pod: Pod, run: PodRun, name: str) -> None:
        container = next(c for c in pod.spec.containers if c.name == name)
        args = self._prepare_container(pod, run, container)
        self._container_forked(run, container, args, self._spawn("containers", [args])[0])

    def _prepare_container(self, pod: Pod, run: PodRun, container) -> tuple:
        """spawn_container's arguments: the container's argv, environment and log."""
        from . import workloads
        from ..model.envvars import container_env
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "HOSTNAME": pod.hostname}
        env.update(container_env(self.cluster, pod, container))
        argv = workloads.resolve(container.image, container.command, container.args,
                                 [(p.container_port, p.protocol, p.name) for p in container.ports], env)
        log = state.container_log(self.lab, pod.meta.namespace, pod.meta.name, container.name)
        return (run.holder, argv, env, str(log), workloads.run_builtin,
                run.security or podproc.security_of(pod, self.lab), container.name)

    def _container_forked(self, run: PodRun, container, args: tuple, pid: "int | OSError") -> None:
        cr = run.containers[container.name]
        if isinstance(pid, OSError):
            cr.state, cr.reason = "Waiting", "CreateContainerError"
            run.event("Failed", f"Error: {pid}", "Warning")
            return
        cr.pid = pid
        self.by_pid[cr.pid] = (run.key, container.name)
        cr.ticks = procs.start_ticks(cr.pid)
        cr.env = args[2]
        run.listening, run.listen_check = False, (0.0, 0.02)
        now = time.monotonic()
        cr.probes = [ProbeState(kind, probe, now + probe.initial_delay)
                     for kind, probe in (("readiness", container.readiness_probe),
                                         ("liveness", container.liveness_probe)) if probe]
        cr.state, cr.reason, cr.started, cr.exit_code = "Running", "", time.time(), None
        run.event("Started", f"Started container {container.name}")
        self.dirty = True

    def stop_pod(self, key: str) -> None:
        run = self.pods.pop(key, None)
        if run is None:
            return
        pids = [c.pid for c in run.containers.values() if c.state == "Running"] + [run.holder]
        for pid in pids:
            if pid:
                try:
                    os.kill(pid, signal.SIGTERM)
                    os.kill(pid, signal.SIGCONT)     # a frozen (node-down) process must see it
                except ProcessLookupError:
                    pass
        for pid in pids:
            self.by_pid.pop(pid, None)

    def reap(self) -> None:
        """Exits of our children (daemons, probes, pods whose spawner died) and of the pods
        the spawner reports."""
        if self.spawner is not None:
            try:
                for pid, status in self.spawner.exits():
                    self._exited(pid, status)
            except OSError as exc:
                print(f"agent: the pod spawner died ({exc}); its pods are ours now", file=sys.stderr, flush=True)
        for pid, status in procs.exited_children():
            self._exited(pid, status)

    def _exited(self, pid: int, status: int) -> None:
        owner = self.by_pid.pop(pid, None)
        if owner is None:
            return
        key, name = owner
        if not key:        # a node daemon died: keep_daemons starts it again after its back-off
            self._daemon_exited(name, status)
            return
        run = self.pods.get(key)
        if run is None:
            return
        code = os.waitstatus_to_exitcode(status)
        code = 128 - code if code < 0 else code
        if not name:
            run.event("SandboxChanged", f"Pod sandbox exited with {code}", "Warning")
            run.holder = 0
            return
        cr = run.containers[name]
        cr.state, cr.exit_code, cr.pid = "Terminated", code, 0
        cr.reason = "Completed" if code == 0 else "Error"
        run.event("Died" if code else "Completed", f"Container {name} exited with code {code}",
                  "Warning" if code else "Normal")
        self._maybe_restart(run, cr, code)
        self.dirty = True

    def _maybe_restart(self, run: PodRun, cr: ContainerRun, code: int) -> None:
        pod = self.cluster.pods.get(run.key)
        if pod is None or not run.holder:
            return
        policy = pod.spec.restart_policy
        if policy == "Never" or (policy == "OnFailure" and code == 0):
            return
        # kubelet's back-off: 10s, 20s, 40s ... capped at 5 minutes; reset after a long run.
        ran_for = time.time() - cr.started
        delay = 0.0 if ran_for > RESTART_BACKOFF_MAX or cr.restarts == 0 else \
            min(RESTART_BACKOFF_START * 2 ** (cr.restarts - 1), RESTART_BACKOFF_MAX)
        cr.next_start = time.time() + delay
        cr.state, cr.reason = "Waiting", "CrashLoopBackOff" if delay else "Restarting"

    def restart_due(self) -> None:
        now = time.time()
        for run in list(self.pods.values()):
            for cr in run.containers.values():
                if cr.state == "Waiting" and cr.next_start and cr.next_start <= now:
                    pod = self.cluster.pods.get(run.key)
                    cr.next_start = 0.0
                    cr.restarts += 1
                    if pod is not None and run.holder:
                        self.start_container(pod, run, cr.name)

    # ---------------------------------------------------------------- status

    def pod_status(self, run: PodRun, with_env: bool = True) -> dict:
        containers = [c.to_json(with_env) for c in run.containers.values()]
        states = [c.state for c in run.containers.values()]
        if not run.holder:
            phase = "Pending" if not states or "Running" not in states else "Unknown"
        elif states and all(s == "Running" for s in states):
            phase = "Running"
        elif states and all(s == "Terminated" for s in states):
            phase = "Succeeded" if all(c.exit_code == 0 for c in run.containers.values()) else "Failed"
        else:
            phase = "Running" if "Running" in states else "Pending"
        if self._listen_check_due(run):
            self._check_listening([run])
        serving = run.listening
        ready = phase == "Running" and all(c.ready for c in run.containers.values())
        return {"phase": phase, "ready": ready, "serving": serving and ready, "holderPid": run.holder,
                "holderStartTicks": run.holder_ticks,
                "containers": containers, "events": run.events}

    @staticmethod
    def _listen_check_due(run: PodRun) -> bool:
        return not run.listening and bool(run.holder) and time.monotonic() >= run.listen_check[0]

    def _check_listening(self, runs: Optional[list[PodRun]] = None) -> None:
        """Do the pods' declared TCP ports listen yet? Each pod's socket table is read only
        until its ports have shown up once, and less often the longer it takes (20 ms,
        40 ms ... 0.5 s): with hundreds of pods starting, reading every table on every
        round was most of the agent's time. All due pods are looked at in one go."""
        runs = [r for r in (self.pods.values() if runs is None else runs) if self._listen_check_due(r)]
        checks = []
        for run in runs:
            pod = self.cluster.pods.get(run.key)
            if not run.ports:
                run.listening = True
            elif pod is not None:
                checks.append((run, pod.pod_ip))
        found = tcp_listening_many([(run.holder, run.ports, ip) for run, ip in checks]) if checks else []
        for (run, _), ports in zip(checks, found):
            run.listening = set(run.ports) <= ports
        for run in runs:
            wait = run.listen_check[1]
            run.listen_check = (time.monotonic() + wait, min(wait * 2, 0.5))

    # ---------------------------------------------------------------- probes

    def run_probes(self) -> None:
        """Start the probes that are due, each in a forked child that reports on a pipe."""
        now = time.monotonic()
        for run in list(self.pods.values()):
            pod = self.cluster.pods.get(run.key)
            if pod is None or not run.holder:
                continue
            node = self.cluster.node(pod.spec.node_name)
            for cr in run.containers.values():
                if cr.state != "Running":
                    continue
                container = next(c for c in pod.spec.containers if c.name == cr.name)
                for ps in cr.probes:
                    if ps.next_at <= now:
                        ps.next_at = float("inf")      # until its result is in
                        self._fork_probe(run, cr, ps, pod, container, node.netns)

    def _fork_probe(self, run: PodRun, cr: ContainerRun, ps: ProbeState, pod: Pod, container, netns: str) -> None:
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                podproc.forget_agent_signals()
                os.closerange(3, read_fd)          # the listening socket and clients stay ours
                os.closerange(read_fd, write_fd)
                passed, detail = run_probe(ps.probe, pod, container, netns, run.holder, self.lab)
                os.write(write_fd, json.dumps([passed, detail[:500]]).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write_fd)
        # The probe bounds itself by timeoutSeconds; a child that hangs past that is killed.
        self.probing[read_fd] = (run.key, cr.name, ps, pid, time.monotonic() + ps.probe.timeout + 2)

    def collect_probes(self, readable) -> None:
        now = time.monotonic()
        for fd, (key, name, ps, pid, deadline) in list(self.probing.items()):
            if fd in readable:
                try:
                    passed, detail = json.loads(os.read(fd, 4096) or b"[false, \"the probe died\"]")
                except ValueError:
                    passed, detail = False, "the probe died"
            elif now > deadline:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                passed, detail = False, f"{ps.probe.kind}: no answer within {ps.probe.timeout:g}s"
            else:
                continue
            os.close(fd)
            del self.probing[fd]
            self._probe_result(key, name, ps, passed, detail)

    def _probe_result(self, key: str, name: str, ps: ProbeState, passed: bool, detail: str) -> None:
        run = self.pods.get(key)
        cr = run.containers.get(name) if run else None
        if cr is None or ps not in cr.probes:
            return                 # the pod or the container run it probed is gone
        if (not passed and ps.kind == "readiness" and ps.successes == ps.failures == 0
                and time.time() - cr.started < STARTUP_GRACE):
            # kubelet's first probe comes at its prober's next tick, not the moment the
            # container starts; netlab probes at once, so that `up` returns sooner, and must
            # not take a server that is still starting (kube-dns before its dnsmasq answers)
            # for a failure that costs a whole period: it looks again shortly, quietly.
            ps.next_at = time.monotonic() + STARTUP_RETRY
            return
        if not passed:
            run.event("Unhealthy", f"{ps.kind.capitalize()} probe failed: {detail}", "Warning")
        if ps.record(passed, detail):
            self.dirty = True
            if ps.kind == "liveness" and ps.ok is False and cr.pid:
                run.event("Killing", f"Container {cr.name} failed liveness probe, will be restarted", "Normal")
                try:
                    os.kill(cr.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    # ---------------------------------------------------------------- node daemons

    @property
    def proxies(self) -> dict[str, int]:
        """userspace mode: node -> the PID of its kube-proxy (our child)."""
        return self.daemon_pids("kube-proxy")

    def daemon_pids(self, name: str) -> dict[str, int]:
        return {run.spec.node: run.pid for run in self.daemons.values() if run.spec.name == name and run.pid}

    def keep_daemons(self) -> None:
        """Every wanted node daemon runs (after its back-off); unwanted ones are stopped."""
        wanted = daemons.wanted(self.cluster)
        for key in [k for k in self.daemons if k not in wanted]:
            daemons.stop(self.daemons.pop(key))
        now = time.time()
        for key, spec in wanted.items():
            run = self.daemons.setdefault(key, daemons.DaemonRun(spec))
            if run.pid or run.stopped or run.next_start > now:
                continue
            try:
                run.pid = daemons.spawn(self.lab, spec)
            except OSError as exc:
                print(f"agent: cannot start {key}: {exc}", file=sys.stderr, flush=True)
                run.next_start = now + daemons.RESTART_BACKOFF_MAX
                continue
            self.by_pid[run.pid] = ("", key)
            run.state, run.started = "Running", now
            self.dirty = True

    def _daemon_exited(self, key: str, status: int) -> None:
        run = self.daemons.get(key)
        if run is None:
            return
        code = os.waitstatus_to_exitcode(status)
        run.pid, run.last_exit = 0, code
        if run.stopped:
            run.state = "Stopped"
        else:
            now = time.time()
            run.next_start = now + daemons.backoff(run, now)
            run.restarts += 1
            run.state = "Waiting"
            print(f"agent: {key} exited ({code}); starting it again", flush=True)
        self.dirty = True

    def stop_daemon(self, node: str, name: str) -> str:
        run = self.daemons.get(f"{name}/{node}")
        if run is None:
            have = sorted({r.spec.name for r in self.daemons.values() if r.spec.node == node})
            raise changes.NotFoundError(f'node {node} runs no daemon "{name}"'
                                        + (f" (it runs: {', '.join(have)})" if have else " (it runs none)"))
        run.stopped = True
        daemons.stop(run)
        self.faults.setdefault("daemons", {})[run.spec.key] = {"kind": "stop-daemon", "since": time.time()}
        self.save_faults()
        return f"{name} on node {node} stopped; it stays down until `netlab fault heal`"

    def node_controller(self) -> None:
        """Evict the pods of nodes that have been down longer than their grace period."""
        changed = False
        for node, fault in self.faults["nodes"].items():
            if fault.get("evicted") or time.time() - fault["since"] < fault["grace"]:
                continue
            try:
                gone = changes.evict_node(self.cluster, node, self)
            except Exception as exc:  # keep supervising; report and retry next round
                print(f"agent: evicting node {node} failed: {exc}", file=sys.stderr, flush=True)
                continue
            print(f"agent: node {node} NotReady for {fault['grace']:g}s: evicted {', '.join(gone) or 'nothing'}",
                  flush=True)
            fault["evicted"] = True
            changed = True
        if changed:
            self.save_faults()

    def available_pods(self) -> set[str]:
        """Ready pods that have been ready for their controller's minReadySeconds."""
        now, avail = time.time(), set()
        for key in self.ready_pods():
            pod = self.cluster.pods.get(key)
            if pod is None:
                continue
            kind, _, name = pod.owner.partition("/")
            owner = self.cluster.apps.get(f"{kind}/{pod.meta.namespace}/{name}")
            if now - self.ready_since.get(key, now) >= (owner.min_ready if owner else 0):
                avail.add(key)
        return avail

    def run_controllers(self) -> None:
        """The apps/v1 controllers (Deployment, ReplicaSet, DaemonSet, StatefulSet): one step per
        round, gated on what the data plane serves (runtime/changes.step_controllers)."""
        if not self.cluster.apps or self.wired is not None:
            return
        try:
            lines = changes.step_controllers(self.cluster, self, self.ready_pods(), self.available_pods())
        except Exception as exc:  # keep supervising; report and retry next round
            print(f"agent: controllers: {exc}", file=sys.stderr, flush=True)
            return
        if lines:
            print("agent: " + "; ".join(lines), flush=True)
            self.dirty = True

    def save_faults(self) -> None:
        state.write_json(faultops.faults_file(self.lab), self.faults)

    def follow_readiness(self, status: dict) -> None:
        """Endpoints follow readiness: re-sync rules and DNS when the set of ready pods changes."""
        ready = {key for key, st in status["pods"].items() if st["ready"]}
        if ready == self.published_ready:
            return
        if self.sync_dataplane(ready):
            now = time.time()
            self.ready_since = {k: self.ready_since.get(k, now) for k in ready}

    def sync_dataplane(self, ready: set[str]) -> bool:
        """Rules and DNS for these ready pods on every node; False if it failed (said on stderr)."""
        from ..dataplane import sync
        try:
            sync(self.cluster, ready, self.proxies, self.pids_of)
        except Exception as exc:  # keep supervising; the next round retries
            print(f"agent: data plane sync failed: {exc}", file=sys.stderr, flush=True)
            return False
        self.published_ready = ready
        return True

    def status(self, with_env: bool = True) -> dict:
        """The live process facts; containers' environments only on request (`exec` wants them,
        status.json leaves them out: they are most of its size, and it is rewritten often)."""
        self._check_listening()
        return {"agentPid": os.getpid(), "updated": time.time(), "proxies": self.proxies,
                "daemons": {k: run.to_json() for k, run in self.daemons.items()},
                "pods": {k: self.pod_status(r, with_env) for k, r in self.pods.items()}}

    def publish(self) -> dict:
        """Compute the pods' status, bring the data plane in line, then write status.json: a
        client that sees a pod Ready there also finds its endpoints in the rules."""
        status = self.status(with_env=False)
        if self.wired is None:              # not while `up` is still wiring
            self.follow_readiness(status)
        state.write_json(state.status_file(self.lab), status, compact=True)
        self.dirty = False
        # Starting: `up` is still wiring, a wanted pod has no run yet, or one does not serve.
        # Decided at every publish, the API's included: one that left it False while a pod
        # had yet to listen made the next look wait a second (a 10-pod up took 1.3 s, not 0.4).
        self.starting = (self.wired is not None or len(status["pods"]) < len(self.cluster.pods)
                         or not all(st["serving"] for st in status["pods"].values()))
        return status

    # ---------------------------------------------------------------- the API's verbs

    def apply(self, objects: list, mode: str = "apply") -> list[str]:
        lines = changes.apply(self.cluster, objects, self, mode)
        self.dirty = True
        return lines

    def delete(self, kind: str, name: str, namespace: str) -> list[str]:
        lines = changes.delete(self.cluster, kind, name, namespace, self)
        self.dirty = True
        return lines

    def scale(self, name: str, namespace: str, replicas, kind: str = "rcs") -> str:
        line = changes.scale(self.cluster, name, namespace, replicas, self, kind)
        self.dirty = True
        return line

    def add_node(self, name=None, labels=None):
        """A node joins (runtime/nodechanges.py); its daemons start now, and the others'
        follow: BIRD reconfigured with the new peer, flanneld re-reads its table."""
        from . import nodechanges
        node = nodechanges.add_node(self.cluster, self, name, labels)
        self.dirty = True
        self._node_set_changed(exclude=node.name)
        return node

    def remove_node(self, name: str) -> list[str]:
        """A node is drained and leaves; returns the pods deleted with it."""
        from . import nodechanges
        gone = nodechanges.remove_node(self.cluster, self, name)
        self.dirty = True
        self.faults["nodes"].pop(name, None)          # a fault on a node that is gone is no fault
        for key in [k for k in self.faults.get("daemons", {}) if k.endswith(f"/{name}")]:
            del self.faults["daemons"][key]
        self.save_faults()
        self._node_set_changed()
        return gone

    def _node_set_changed(self, exclude: str = "") -> None:
        """Start and stop node daemons for the new node set now, and tell the flanneld that
        were running already to re-read their table (a new one installs its signal handler
        only once it runs: it reads the table at start)."""
        before = {k for k, run in self.daemons.items() if run.pid}
        self.keep_daemons()
        for key, run in self.daemons.items():
            if run.spec.name == "flanneld" and run.pid and key in before and run.spec.node != exclude:
                procs.wait_for_handler(run.pid, signal.SIGHUP, time.monotonic() + 2.0)
                try:
                    os.kill(run.pid, signal.SIGHUP)
                except ProcessLookupError:
                    pass

    def inject_fault(self, kind: str = "", target: str = "", namespace: str = "default",
                     container: Optional[str] = None, grace: float = 10.0) -> str:
        if kind == "stop-daemon":            # target: the node; container: the daemon's name
            return self.stop_daemon(target, container or "")
        line = faultops.inject(self.cluster, self.faults, self.pids_of, kind, target, namespace,
                               container, grace)
        self.save_faults()
        return line

    def heal_faults(self) -> list[str]:
        try:
            lines = []
            for key in list(self.faults.get("daemons", {})):
                run = self.daemons.get(key)
                if run is not None:
                    run.stopped, run.restarts, run.next_start = False, 0, 0.0
                    lines.append(f"{run.spec.name} on node {run.spec.node} runs again")
                del self.faults["daemons"][key]
            healed = faultops.heal(self.cluster, self.faults, self.pids_of)
            return lines + [line for line in healed if line != "no faults to heal" or not lines]
        finally:
            self.save_faults()
            changes.mark_ready(self.cluster, self)

    def stored(self, obj):
        """The stored version of an object just written (with what the server filled in)."""
        if obj.kind == "Namespace":
            return self.cluster.namespaces[obj.meta.name]
        if obj.kind in ("Deployment", "ReplicaSet", "DaemonSet", "StatefulSet"):
            return self.cluster.apps[obj.ref]
        return {"Pod": self.cluster.pods, "Service": self.cluster.services,
                "ReplicationController": self.cluster.rcs, "Endpoints": self.cluster.endpoints,
                "EndpointSlice": self.cluster.slices}[obj.kind][obj.meta.key]

    def object_view(self, obj) -> dict:
        """The object as the API serves it (runtime/kubeobjects.py: full v1 metadata and status)."""
        from .kuberoutes import state as kube_state
        return kube_state(self)[0].of(obj)

    def node_object(self, node) -> dict:
        from .kuberoutes import state as kube_state
        return kube_state(self)[0].node(node)

    # ---------------------------------------------------------------- loop

    def serve(self, defer_sync: bool = False) -> int:
        nsops.set_child_subreaper()
        os.umask(0o077)           # the socket is created owner-only: no window before a chmod
        self.spawner = Spawner()  # before the lab is loaded, and before our sockets exist
        self.load()
        sock_path = state.agent_socket(self.lab)
        try:
            sock_path.unlink()
        except FileNotFoundError:
            pass
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(sock_path))
        server.listen(socket.SOMAXCONN)
        server.setblocking(False)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_term)
        state.agent_pidfile(self.lab).write_text(str(os.getpid()))
        if self.cluster.config.dns:      # the kube-dns pod mounts it: it must exist first
            from ..model.addons import records_path
            os.makedirs(os.path.dirname(records_path(self.lab)), mode=0o700, exist_ok=True)
        from . import ingress           # and the ingress controller's configuration, to start with
        ingress.sync(self.cluster, {})
        if defer_sync:          # `up` is still wiring pods; it says which as batches are ready
            self.wired = set()
            self.services_unsynced = True
        self.sync_pods()
        self.publish()
        last_publish = time.monotonic()
        while self.running:
            watched = [server, wake_r, *self.clients, *self.probing]
            if self.spawner is not None and not self.spawner.gone:
                watched.append(self.spawner)          # it reports the pods' exits
            readable, _, _ = select.select(watched, [], [], 0.05 if self.starting else 0.25)
            if wake_r in readable:
                os.read(wake_r, 4096)
            self.reap()
            self.collect_probes(readable)
            self.keep_daemons()
            self.restart_due()
            self.run_probes()
            if server in readable:
                self._accept(server)
            for fd in [fd for fd in self.clients if fd in readable]:
                self._read_client(fd)
            if self.pods_reported:
                self.pods_reported = False
                self.sync_pods()
            self._drop_slow_clients()
            # Re-publish now and then: "serving" changes without any event we would see; often
            # while pods are still coming up, since `up` is waiting for exactly that.
            # A big lab's status.json is megabytes: then it is rewritten at most four times a second.
            big = len(self.pods) > 200
            interval = (0.5 if big else 0.1) if self.starting else 1.0
            since = time.monotonic() - last_publish
            if (self.dirty and since >= (0.25 if big else 0.0)) or since > interval:
                self.node_controller()
                self.publish()
                self.run_controllers()
                last_publish = time.monotonic()
        self.shutdown()
        return 0

    def _on_term(self, *_):
        self.running = False

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                conn, _ = server.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            # Only root (or the agent's own user) may talk to the lab's API.
            uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[2]
            if uid not in (0, os.geteuid()):
                self._send(conn, *api.status_of(api.ApiError(403, "Forbidden", f"uid {uid} may not use this lab")))
                continue
            conn.setblocking(False)
            self.clients[conn.fileno()] = (conn, bytearray(), time.monotonic())

    def _read_client(self, fd: int) -> None:
        conn, buf, since = self.clients[fd]
        try:
            chunk = conn.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            del self.clients[fd]
            conn.close()
            return
        buf += chunk
        try:
            req = api.parse_request(bytes(buf))
        except api.ApiError as exc:
            del self.clients[fd]
            self._send(conn, *api.status_of(exc))
            return
        if req is None:
            return
        del self.clients[fd]
        self._send(conn, *self.handle(req))

    def handle(self, req) -> tuple[int, object]:
        from .apiserver import dispatch
        try:
            return dispatch(self, req)
        except Exception as exc:  # one bad request must not take the lab's agent down
            if not isinstance(exc, api.LabError):
                import traceback
                traceback.print_exc()
            return api.status_of(exc)

    @staticmethod
    def _send(conn: socket.socket, code: int, body) -> None:
        try:
            conn.setblocking(True)
            conn.settimeout(5)
            conn.sendall(api.encode_response(code, body))
        except OSError:
            pass          # a nudge: the sender did not wait for the answer
        finally:
            conn.close()

    def _drop_slow_clients(self) -> None:
        now = time.monotonic()
        for fd, (conn, _, since) in list(self.clients.items()):
            if now - since > CLIENT_TIMEOUT:
                del self.clients[fd]
                self._send(conn, *api.status_of(api.ApiError(400, "BadRequest", "request not received in time")))

    def shutdown(self) -> None:
        """Stop every pod and daemon. The lab is going away (or a new agent starts its pods
        afresh), so pods get no grace: SIGKILL, as `kind delete cluster` removes its nodes.
        Daemons get SIGTERM and a short grace, then SIGKILL. (At 100 pods, SIGTERM and each
        container's own shutdown added about 0.05 s to `netlab down`.)"""
        children = set(self.by_pid)
        for pid, (pod_key, _) in self.by_pid.items():
            if pod_key:                   # a daemon's entry has no pod
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.pods.clear()
        if self.spawner is not None:
            # It reports the exits it has reaped, then exits; pods not reaped yet pass to us.
            children -= {pid for pid, _ in self.spawner.close()}
        for run in self.daemons.values():
            daemons.stop(run)
        _reap_until(time.monotonic() + SHUTDOWN_GRACE, children)
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _reap_until(time.monotonic() + 2, children)
        try:
            state.agent_socket(self.lab).unlink()
        except FileNotFoundError:
            pass


def _reap_until(deadline: float, children: set[int]) -> None:
    """Reap exited children until every one of `children` is gone or the deadline passes."""
    while children and time.monotonic() < deadline:
        try:
            pid = os.waitpid(-1, os.WNOHANG)[0]
        except ChildProcessError:
            return
        if pid:
            children.discard(pid)
        else:
            time.sleep(0.01)


def _preload() -> None:
    """Import the built-in workloads once, so each forked container starts without imports;
    and the API's routes, which `up`'s first report of wired pods would otherwise wait for
    (about 40 ms, while the agent has nothing else to do before that report)."""
    from .workloads import guestbook, netexec, pause  # noqa: F401
    from . import apiserver  # noqa: F401


def main(argv: Optional[list[str]] = None) -> int:
    _preload()
    parser = argparse.ArgumentParser(prog="netlab-agent", description="netlab's per-lab agent")
    parser.add_argument("--lab", required=True)
    parser.add_argument("--defer-sync", action="store_true",
                        help="start no pods until asked to sync (up is still wiring them)")
    args = parser.parse_args(argv)
    return Agent(args.lab).serve(defer_sync=args.defer_sync)


if __name__ == "__main__":
    code = main()
    # Every pod is gone and the socket removed: skip tearing down the interpreter's objects
    # one by one (about 30 ms at 100 pods that `netlab down` waited for).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
