"""Starting a pod's processes: the holder (the pause container's role) and its containers.

Both are forked from the lab agent, which has already imported everything, so a pod costs
a few forks rather than a new Python start-up. The agent is a child subreaper, so it reaps
and accounts for every process below it.

    holder:    fork -> enter the pod's netns, unshare UTS/IPC/PID/mount, set the hostname,
               bind the pod's resolv.conf/hosts over /etc -> fork PID 1 of the new PID
               namespace (mounts /proc, reaps orphans, waits for SIGTERM)
    container: fork a shim -> join the holder's ipc/uts/net/pid/mnt namespaces -> fork the
               container process (inside the pod's PID namespace); the shim waits for it
               and exits with its status, so the agent sees the container's exit code.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from typing import Sequence

from . import nsops

# The order matters: user-visible namespaces first, mount last (it changes path lookups).
_JOIN = (("ipc", nsops.CLONE_NEWIPC), ("uts", nsops.CLONE_NEWUTS), ("net", nsops.CLONE_NEWNET),
         ("pid", nsops.CLONE_NEWPID), ("mnt", nsops.CLONE_NEWNS))


def _child_exit(code: int) -> None:
    # A forked child must never return into the agent's code or run its atexit handlers.
    os._exit(code)


def _report_error(log_fd: int, what: str, exc: BaseException) -> None:
    try:
        os.write(log_fd, f"netlab: {what}: {exc}\n".encode())
    except OSError:
        pass


def spawn_holder(netns_file: str, hostname: str, etc_dir: str, log_path: str) -> int:
    """Create the pod's namespaces around a PID-1 holder; return the holder's host PID."""
    read_end, write_end = os.pipe()
    shim = os.fork()
    if shim == 0:
        os.close(read_end)
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.setsid()
            nsops.setns_path(netns_file, nsops.CLONE_NEWNET)
            nsops.unshare(nsops.CLONE_NEWUTS | nsops.CLONE_NEWIPC | nsops.CLONE_NEWPID | nsops.CLONE_NEWNS)
            nsops.sethostname(hostname)
            nsops.make_mounts_private()
            # What `ip netns exec` does: /sys shows this namespace's devices, and the files in
            # /etc/netns/<netns>/ replace their /etc counterparts (resolv.conf, hosts).
            nsops.mount("sysfs", "/sys", "sysfs", 0)
            if os.path.isdir(etc_dir):
                for name in sorted(os.listdir(etc_dir)):
                    target = os.path.join("/etc", name)
                    if os.path.exists(target):
                        nsops.mount(os.path.join(etc_dir, name), target, "none", nsops.MS_BIND)
            holder = os.fork()
            if holder == 0:
                os.close(write_end)
                _run_holder(log_fd)
            os.write(write_end, str(holder).encode())
            _child_exit(0)
        except BaseException as exc:  # noqa: BLE001 - reported through the log and the pipe
            _report_error(log_fd, "pod sandbox", exc)
            _child_exit(1)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(shim, 0)
    if not data:
        raise RuntimeError(f"could not create the pod sandbox for {hostname} (see {log_path})")
    return int(data)


def _run_holder(log_fd: int) -> None:
    """PID 1 of the pod: mount its /proc, reap orphans, exit on SIGTERM (the pause container)."""
    try:
        nsops.mount("proc", "/proc", "proc", nsops.MS_NOSUID | nsops.MS_NODEV | nsops.MS_NOEXEC)
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
    """Start one container joined to the holder's namespaces; return the shim's PID.

    `builtin(argv) -> int` runs netlab's own workloads in-process (argv[0] == 'netlab-workload');
    anything else is exec'd with PATH lookup.
    """
    shim = os.fork()
    if shim != 0:
        return shim
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.setsid()
        fds = [(os.open(f"/proc/{holder_pid}/ns/{name}", os.O_RDONLY), flag) for name, flag in _JOIN]
        for fd, flag in fds:
            if nsops._libc.setns(fd, flag) != 0:
                raise OSError(nsops.ctypes.get_errno(), f"setns {flag:#x}")
            os.close(fd)
        child = os.fork()
        if child == 0:
            _exec_container(argv, env, log_fd, builtin)
        signal.signal(signal.SIGTERM, lambda *_: os.kill(child, signal.SIGTERM))
        signal.signal(signal.SIGINT, lambda *_: os.kill(child, signal.SIGINT))
        while True:
            try:
                _, status = os.waitpid(child, 0)
                break
            except InterruptedError:
                continue
        _child_exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status)
                    else 128 + os.WTERMSIG(status))
    except BaseException as exc:  # noqa: BLE001
        _report_error(log_fd, "container", exc)
        _child_exit(127)


def _exec_container(argv: Sequence[str], env: dict[str, str], log_fd: int, builtin) -> None:
    try:
        os.chdir("/")
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
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


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.01)
    return False
