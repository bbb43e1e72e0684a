"""Starting a pod's processes: the holder (the pause container's role) and its containers.

Both are forked from the lab agent, which has already imported everything, so a pod costs
two forks rather than a new Python start-up. Both are the agent's direct children, so it
sees their exit codes without a shim in between:

    holder:    the agent unshares a new PID namespace *for its children* and forks: the
               child is PID 1 there. It enters the pod's netns, unshares UTS/IPC/mount, sets
               the hostname, binds the pod's resolv.conf/hosts over /etc, mounts /proc, tells
               the agent it is ready, then reaps orphans until SIGTERM (the pause container).
    container: the agent points its children's PID namespace at the holder's and forks; the
               child joins the holder's ipc/uts/net/mnt namespaces and execs (or runs a
               built-in workload). Afterwards the agent returns to its own PID namespace.
"""
from __future__ import annotations

import os
import signal
import sys
from typing import Sequence

from . import nsops

# The order matters: mount last, since it changes how the later paths would resolve.
_JOIN = (("ipc", nsops.CLONE_NEWIPC), ("uts", nsops.CLONE_NEWUTS), ("net", nsops.CLONE_NEWNET),
         ("mnt", nsops.CLONE_NEWNS))
_OWN_PID_NS: list[int] = []


def _own_pid_ns() -> int:
    if not _OWN_PID_NS:
        _OWN_PID_NS.append(os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC))
    return _OWN_PID_NS[0]


def _child_exit(code: int) -> None:
    # A forked child must never return into the agent's code or run its atexit handlers.
    os._exit(code)


def _report_error(log_fd: int, what: str, exc: BaseException) -> None:
    try:
        os.write(log_fd, f"netlab: {what}: {exc}\n".encode())
    except OSError:
        pass


def _fork_in_pid_ns(enter) -> int:
    """Fork with our children's PID namespace set by `enter()`, then return to our own.

    Only the parent goes back: the child cannot (an ancestor's PID namespace is off limits)
    and need not (its namespace was fixed at fork). An exception must never carry a child
    back into the agent's code, so the child's side has no `finally` here.
    """
    enter()
    try:
        pid = os.fork()
    except BaseException:
        nsops.setns_fd(_own_pid_ns(), nsops.CLONE_NEWPID)
        raise
    if pid != 0:
        nsops.setns_fd(_own_pid_ns(), nsops.CLONE_NEWPID)
    return pid


def spawn_holder(netns_file: str, hostname: str, etc_dir: str, log_path: str) -> tuple[int, int]:
    """Fork the pod's PID-1 holder; return (pid, fd that becomes readable when it is ready)."""
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = _fork_in_pid_ns(lambda: nsops.unshare(nsops.CLONE_NEWPID))
    except BaseException:
        for fd in (ready_r, ready_w, log_fd):
            os.close(fd)
        raise
    if pid == 0:
        os.close(ready_r)
        try:
            forget_agent_signals()
            os.setsid()
            nsops.setns_path(netns_file, nsops.CLONE_NEWNET)
            nsops.unshare(nsops.CLONE_NEWUTS | nsops.CLONE_NEWIPC | nsops.CLONE_NEWNS)
            nsops.sethostname(hostname)
            nsops.make_mounts_private()
            # Our copy of the mount table holds every lab namespace's bind mount; drop them, or
            # the machine's mount count grows with the square of the number of pods.
            if os.path.ismount("/run/netns") or os.path.isdir("/run/netns"):
                try:
                    nsops.umount_detach("/run/netns")
                except OSError:
                    pass
            # What `ip netns exec` does: /sys shows this namespace's devices, and the files in
            # /etc/netns/<netns>/ replace their /etc counterparts (resolv.conf, hosts).
            nsops.mount("sysfs", "/sys", "sysfs", 0)
            if os.path.isdir(etc_dir):
                for name in sorted(os.listdir(etc_dir)):
                    target = os.path.join("/etc", name)
                    if os.path.exists(target):
                        nsops.mount(os.path.join(etc_dir, name), target, "none", nsops.MS_BIND)
            nsops.mount("proc", "/proc", "proc", nsops.MS_NOSUID | nsops.MS_NODEV | nsops.MS_NOEXEC)
        except BaseException as exc:  # noqa: BLE001 - reported through the log; no "ready"
            _report_error(log_fd, "pod sandbox", exc)
            _child_exit(1)
        os.write(ready_w, b"1")
        os.close(ready_w)
        _run_holder(log_fd)
    os.close(ready_w)
    os.close(log_fd)
    return pid, ready_r


def forget_agent_signals() -> None:
    """A forked child inherits the agent's handlers and its wake-up pipe: drop both."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)


def _run_holder(log_fd: int) -> None:
    """PID 1 of the pod: reap orphans, exit on SIGTERM (the pause container)."""
    try:
        forget_agent_signals()
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        signal.signal(signal.SIGTERM, lambda *_: _child_exit(0))
        signal.signal(signal.SIGINT, lambda *_: _child_exit(0))
        signal.signal(signal.SIGCHLD, _reap)
        while True:
            signal.pause()
    except BaseException as exc:  # noqa: BLE001
        _report_error(log_fd, "pause", exc)
        _child_exit(1)


def _reap(*_) -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def spawn_container(holder_pid: int, argv: Sequence[str], env: dict[str, str], log_path: str,
                    builtin) -> int:
    """Start one container joined to the holder's namespaces; return its PID (our child).

    `builtin(argv) -> int` runs netlab's own workloads in-process (argv[0] == 'netlab-workload');
    anything else is exec'd with PATH lookup.
    """
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    fds = []
    try:
        fds = [(os.open(f"/proc/{holder_pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC), flag) for name, flag in _JOIN]
        pid_ns = os.open(f"/proc/{holder_pid}/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        try:
            pid = _fork_in_pid_ns(lambda: nsops.setns_fd(pid_ns, nsops.CLONE_NEWPID))
        finally:
            os.close(pid_ns)
    except BaseException:
        for fd, _ in fds:
            os.close(fd)
        os.close(log_fd)
        raise
    if pid != 0:
        for fd, _ in fds:
            os.close(fd)
        os.close(log_fd)
        return pid
    try:
        forget_agent_signals()
        os.setsid()
        for fd, flag in fds:
            nsops.setns_fd(fd, flag)
    except BaseException as exc:  # noqa: BLE001
        _report_error(log_fd, "container", exc)
        _child_exit(127)
    _exec_container(argv, env, log_fd, builtin)


def _exec_container(argv: Sequence[str], env: dict[str, str], log_fd: int, builtin) -> None:
    try:
        os.chdir("/")
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        forget_agent_signals()
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        if argv and argv[0] == "netlab-workload":
            os.environ.clear()
            os.environ.update(env)
            sys.stdout = os.fdopen(1, "w", buffering=1)
            sys.stderr = os.fdopen(2, "w", buffering=1)
            _child_exit(int(builtin(list(argv)) or 0))
        os.execvpe(argv[0], list(argv), env)
    except FileNotFoundError:
        _report_error(log_fd, "exec", f"{argv[0]}: executable file not found in $PATH")
        _child_exit(127)
    except BaseException as exc:  # noqa: BLE001
        _report_error(log_fd, "exec", exc)
        _child_exit(126)
