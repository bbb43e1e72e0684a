"""exec and logs: step inside a pod, a node, the outside client or the internet host."""
from __future__ import annotations

import os
from typing import List, Optional

import typer

from .common import LabOption, NamespaceOption, lab_name
from .main import app

# The namespaces `exec` enters, as nsenter's options name them, and /proc/PID/ns/<file>.
POD_NAMESPACES = (("net", "net"), ("uts", "uts"), ("ipc", "ipc"), ("pid", "pid"), ("mount", "mnt"))


def open_pod_namespaces(pid: int, start_ticks: Optional[int], netns_inode: Optional[int]) -> dict[str, int]:
    """Descriptors of a pod holder's namespaces and root, proven to be that pod's.

    A PID names a process only until it exits. The holder must still be the process the
    agent started (same start time) and sit in the pod's network namespace; the descriptors
    are opened first and the start time checked again afterwards, so they belong to that
    process even if the PID is reused a moment later. They are inheritable (no O_CLOEXEC):
    nsenter opens them as /proc/self/fd/N."""
    from ..kernel import netns
    from ..model.errors import StateError
    from ..runtime import procs

    def gone() -> StateError:
        return StateError(f"the pod's sandbox process (pid {pid}) is not the one its agent started "
                          f"(it exited, and the PID may now be another process's): refusing to enter it")

    if not pid or start_ticks is None or not procs.is_same(pid, start_ticks):
        raise gone()
    if netns_inode is None or netns_inode in netns.protected_inodes():
        raise StateError("the pod's network namespace is missing: refusing to enter anything")
    if procs.netns_inode(pid) != netns_inode:
        raise StateError(f"process {pid} is not in the pod's network namespace: refusing to enter it")
    fds: dict[str, int] = {}
    try:
        for option, nsfile in POD_NAMESPACES:
            fds[option] = os.open(f"/proc/{pid}/ns/{nsfile}", os.O_RDONLY)
        fds["root"] = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY)
        # Re-checked after opening: if the holder was still itself, the descriptors are its.
        if not procs.is_same(pid, start_ticks) or os.fstat(fds["net"]).st_ino != netns_inode:
            raise gone()
        for fd in fds.values():
            os.set_inheritable(fd, True)
    except FileNotFoundError:
        _close(fds)
        raise gone() from None
    except BaseException:
        _close(fds)
        raise
    return fds


def _close(fds: dict[str, int]) -> None:
    for fd in fds.values():
        os.close(fd)


def pod_exec_argv(fds: dict[str, int], command: List[str], confine: List[str] = ()) -> list[str]:
    """nsenter into the pod's namespaces and root (those of its holder, as containers share
    them), each named by an open descriptor, never by a PID that could be reused; `confine`
    (runtime.pods.confine_argv) gives the command what the container has, and no more."""
    import shutil
    nsenter = shutil.which("nsenter") or "/usr/bin/nsenter"
    argv = [nsenter] + [f"--{option}=/proc/self/fd/{fds[option]}" for option, _ in POD_NAMESPACES]
    # --wd is the root again: opened by path in nsenter's own root, "/" would be the host's.
    argv += [f"--root=/proc/self/fd/{fds['root']}", f"--wd=/proc/self/fd/{fds['root']}"]
    return argv + [*confine, "--", *command]


@app.command("exec")
def exec_(target: Optional[str] = typer.Argument(None, help="Pod name (omit with --node/--client/--internet)."),
          command: Optional[List[str]] = typer.Argument(None, help="Command to run, after --."),
          container: Optional[str] = typer.Option(None, "--container", "-c", help="Container (its environment is used)."),
          node: Optional[str] = typer.Option(None, "--node", help="Run in this node's network namespace."),
          client: bool = typer.Option(False, "--client", help="Run in the outside client's namespace."),
          internet: bool = typer.Option(False, "--internet", help="Run on the simulated internet host."),
          lab: Optional[str] = LabOption, namespace: str = NamespaceOption) -> None:
    """Run a command inside a pod (all its namespaces), a node, the outside client or the internet.

    Options go anywhere before `--` (netlab exec POD -c web --lab L -- cmd); everything
    after `--` is the command."""
    run_exec(target=target, command=list(command or []), container=container, node=node,
             client=client, internet=internet, lab=lab, namespace=namespace)


def run_exec(*, target: Optional[str], command: List[str], container: Optional[str], node: Optional[str],
             client: bool, internet: bool, lab: Optional[str], namespace: str) -> None:
    from .. import engine
    from ..kernel import netns
    from ..model import names
    from ..model.errors import LabError, StateError
    from ..runtime import agent_client
    if node or client or internet:
        if target:
            command = [target, *command]
            target = None
    chosen = [x for x in (target, node, client, internet) if x]
    if len(chosen) != 1:
        raise LabError("give exactly one of: a pod name, --node NODE, --client, --internet")
    if not command:
        raise LabError("give the command to run after --, e.g. netlab exec POD -- ip addr")
    name = lab_name(lab)
    cluster = engine.load(name)
    env = None
    if not target:
        ns = (cluster.node(node).netns if node else
              names.client_netns(name) if client else names.internet_netns(name))
        if node and cluster.config.backend == "calico" and command[0] in ("birdc", "birdcl") \
                and not any(a == "-s" or a.startswith("-s") for a in command[1:]):
            # The node's BIRD listens under the lab's state, not at birdc's /run/bird/bird.ctl.
            from ..runtime.bird import socket_path
            command = [command[0], "-s", str(socket_path(name, node)), *command[1:]]
        argv = ["ip", "netns", "exec", ns, *command]
        os.execvpe(argv[0], argv, os.environ)
    pod = cluster.pod(target, namespace)
    names_in_pod = [c.name for c in pod.spec.containers]
    if container and container not in names_in_pod:
        raise LabError(f'container {container} is not valid for pod {target} (containers: {", ".join(names_in_pod)})')
    # The holder's PID from the live agent only: a dead agent's status file names processes
    # that may have exited, and their PIDs may belong to anything now.
    st = agent_client.live_status(name)["pods"].get(pod.meta.key, {})
    holder = st.get("holderPid")
    if not holder:
        raise StateError(f'pod "{target}" has no running sandbox (phase {st.get("phase", "Pending")})')
    fds = open_pod_namespaces(holder, st.get("holderStartTicks"), netns.inode(cluster.pod_netns(pod)))
    cname = container or names_in_pod[0]
    # The container's environment as the agent set it when the container started.
    env = next((c.get("env") for c in st.get("containers", []) if c["name"] == cname), None) or None
    # Without confinement the command would have all of root's capabilities in the pod, and
    # could remount the host's read-only filesystem.
    from ..runtime import pods as podproc
    argv = pod_exec_argv(fds, command, podproc.confine_argv(podproc.security_of(pod, name).container(cname)))
    os.execve(argv[0], argv, env if env is not None else os.environ)


@app.command()
def logs(pod: str = typer.Argument(..., help="Pod name."),
         container: Optional[str] = typer.Option(None, "--container", "-c", help="Container (default: the first)."),
         tail: int = typer.Option(-1, "--tail", help="Lines from the end (-1: all)."),
         lab: Optional[str] = LabOption, namespace: str = NamespaceOption) -> None:
    """Print a container's stdout and stderr."""
    from .. import engine, state
    from ..model.errors import LabError
    name = lab_name(lab)
    p = engine.load(name).pod(pod, namespace)
    names_in_pod = [c.name for c in p.spec.containers]
    if container and container not in names_in_pod:
        raise LabError(f'container {container} is not valid for pod {pod} (containers: {", ".join(names_in_pod)})')
    if not container and len(names_in_pod) > 1:
        raise LabError(f"a container name must be specified for pod {pod}, choose one of: [{' '.join(names_in_pod)}]")
    path = state.container_log(name, namespace, pod, container or names_in_pod[0])
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        text = ""
    lines = text.splitlines(keepends=True)
    typer.echo("".join(lines[-tail:] if tail >= 0 else lines), nl=False)
