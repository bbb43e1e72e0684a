"""Node daemons: the per-node processes a lab's agent runs and supervises, as systemd or a
DaemonSet would on a real node (kube-proxy in userspace mode, flanneld of the udp backend, BIRD of the calico backend).

A provider says which daemons a lab wants (one DaemonSpec per daemon and node); the agent
starts each in its node's network namespace, restarts it with back-off when it dies, stops
the ones no longer wanted, and reports them in its status. A daemon is either netlab's own
Python entry point ("module:function", run in the forked child with no new interpreter) or
an external program (argv, exec'd). SIGHUP asks a daemon to re-read its configuration.
"""
from __future__ import annotations

import importlib
import os
import signal
from dataclasses import dataclass
from typing import Callable, Optional

from .. import state

RESTART_BACKOFF_START = 1.0
RESTART_BACKOFF_MAX = 30.0
RESET_AFTER = 60.0              # a daemon that ran this long starts its back-off afresh


@dataclass(frozen=True)
class DaemonSpec:
    name: str                   # kube-proxy, flanneld, ...
    node: str
    netns: str                  # where it runs: its node's network namespace
    entry: str = ""             # "package.module:function", called with *args; returns an exit code
    args: tuple = ()
    argv: tuple = ()            # or an external program

    @property
    def key(self) -> str:
        return f"{self.name}/{self.node}"


@dataclass
class DaemonRun:
    spec: DaemonSpec
    pid: int = 0
    state: str = "Waiting"      # Running | Waiting (back-off) | Stopped (a fault)
    restarts: int = 0
    started: float = 0.0
    next_start: float = 0.0
    last_exit: Optional[int] = None
    stopped: bool = False       # by `netlab fault stop-daemon`: not restarted until healed

    def to_json(self) -> dict:
        return {"name": self.spec.name, "node": self.spec.node, "pid": self.pid, "state": self.state,
                "restartCount": self.restarts, "lastExitCode": self.last_exit}


Provider = Callable[["object"], list]
PROVIDERS: list[Provider] = []


def provider(fn: Provider) -> Provider:
    """Register a function cluster -> [DaemonSpec] (the daemons a lab wants)."""
    PROVIDERS.append(fn)
    return fn


def wanted(cluster) -> dict[str, DaemonSpec]:
    return {spec.key: spec for fn in PROVIDERS for spec in fn(cluster)}


def log_path(lab: str, spec: DaemonSpec):
    return state.lab_dir(lab) / f"{spec.name}-{spec.node}.log"


def backoff(run: DaemonRun, now: float) -> float:
    """Seconds to wait before the next start: 0 the first time, then 1, 2, 4 ... 30."""
    if run.restarts == 0 or now - run.started > RESET_AFTER:
        return 0.0
    return min(RESTART_BACKOFF_START * 2 ** (run.restarts - 1), RESTART_BACKOFF_MAX)


def spawn(lab: str, spec: DaemonSpec) -> int:
    """Fork the daemon into its node's namespace; return its PID (the caller's child)."""
    from . import pods as podproc
    log = os.open(str(log_path(lab, spec)), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    pid = os.fork()
    if pid != 0:
        os.close(log)
        return pid
    code = 1
    try:
        podproc.forget_agent_signals()
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        os.dup2(log, 1)
        os.dup2(log, 2)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        # Inherited sockets (the agent's, pods' listeners) must not live on in the daemon.
        os.closerange(3, 65536)
        os.setsid()
        from ..kernel import netns as netns_mod
        if spec.netns:            # "" only for the kubectl listener: see kubeapi_daemons.py
            netns_mod.enter(spec.netns)
        if spec.argv:
            os.execvp(spec.argv[0], list(spec.argv))
        module, _, function = spec.entry.partition(":")
        code = int(getattr(importlib.import_module(module), function)(*spec.args) or 0)
    except BaseException as exc:  # noqa: BLE001 - reported in the daemon's log
        try:
            os.write(2, f"netlab: {spec.key}: {exc}\n".encode())
        except OSError:
            pass
    finally:
        os._exit(code)


def stop(run: DaemonRun) -> None:
    if run.pid:
        try:
            os.kill(run.pid, signal.SIGTERM)
            os.kill(run.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


# ---------------------------------------------------------------------- the daemons netlab has


@provider
def userspace_proxies(cluster) -> list[DaemonSpec]:
    """kube-proxy in userspace mode: one proxy per node, reading its config file."""
    if cluster.config.proxy_mode != "userspace":
        return []
    from ..dataplane import proxy_config_file
    return [DaemonSpec("kube-proxy", n.name, n.netns, "netlab.runtime.userspace_proxy:run",
                       (str(proxy_config_file(cluster.name, n.name)),)) for n in cluster.nodes]


@provider
def flanneld(cluster) -> list[DaemonSpec]:
    """flannel's udp backend: one flanneld per node, forwarding by the lab's subnet table.

    The table follows the lab's nodes: rewritten here whenever it differs from the nodes, and
    re-read by every flanneld when the file changes. A node's flanneld is wanted once the
    node's namespace exists (`up` builds it while the agent already runs)."""
    if cluster.config.backend != "udp":
        return []
    from ..kernel import netns
    from ..plan.network import TUN_DEV, UDP_PORT, udp_subnets
    from .flanneld import subnets_file, write_table
    write_table(cluster.name, udp_subnets(cluster))
    table = str(subnets_file(cluster.name))
    return [DaemonSpec("flanneld", n.name, n.netns, "netlab.runtime.flanneld:run",
                       (table, n.internal_ip, str(UDP_PORT), TUN_DEV))
            for n in cluster.nodes if netns.is_netns(n.netns)]


# Providers kept in modules of their own register when imported.
from . import internet as _internet  # noqa: E402,F401  (the simulated internet host's dns and web)


# Daemons defined next to their own code register themselves when imported.
from . import healthcheck  # noqa: E402,F401
from . import bird as _bird  # noqa: E402,F401  (backend calico's BGP daemon)
from . import kubeapi_daemons as _kubeapi  # noqa: E402,F401  (the lab API's HTTPS front-ends)
