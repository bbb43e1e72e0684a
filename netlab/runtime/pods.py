"""Starting a pod's processes: the holder (the pause container's role) and its containers.

Both are forked from the pod spawner (runtime/spawner.py), a child of the lab agent that has
already imported everything, so a pod costs two forks rather than a new Python start-up. The
spawner reaps them and reports their exit codes to the agent, without a shim per pod:

    holder:    the spawner unshares a new PID namespace *for its children* and forks: the
               child is PID 1 there. It enters the pod's netns, unshares UTS/IPC/mount, sets
               the hostname, binds the pod's resolv.conf/hosts over /etc, mounts /proc, says
               it is ready, then becomes catatonit, which reaps orphans until SIGTERM (the
               pause container).
    container: the spawner points its children's PID namespace at the holder's and forks;
               the child joins the holder's ipc/uts/net/mnt namespaces and execs (or runs a
               built-in workload). Afterwards the spawner returns to its own PID namespace.
"""
from __future__ import annotations

import functools
import glob
import os
import signal
import sys
from typing import Optional, Sequence

from ..model.errors import LabError
from ..model.podsecurity import ContainerSecurity, PodSecurity, VolumeMount, for_pod
from . import caps, nsops

# The order matters: mount last, since it changes how the later paths would resolve.
_JOIN = (("ipc", nsops.CLONE_NEWIPC), ("uts", nsops.CLONE_NEWUTS), ("net", nsops.CLONE_NEWNET),
         ("mnt", nsops.CLONE_NEWNS))
_OWN_PID_NS: list[int] = []
_MAX_FD = 1 << 20            # closerange's end: above any descriptor (close_range(2) stops at the last open one)


def _own_pid_ns() -> int:
    if not _OWN_PID_NS:
        _OWN_PID_NS.append(os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC))
    return _OWN_PID_NS[0]


def _child_exit(code: int) -> None:
    # A forked child must never return into the agent's code or run its atexit handlers.
    os._exit(code)


def _report_error(log, what: str, exc: BaseException) -> None:
    """Write a child's last word to its log: a descriptor, or a _LazyLog made on first use."""
    try:
        fd = log.open() if isinstance(log, _LazyLog) else log
        os.write(fd, f"netlab: {what}: {exc}\n".encode())
    except OSError:
        pass


class _LazyLog:
    """A log file made only if something is written to it: the pod's sandbox (POD) log,
    which holds nothing unless the sandbox fails. Its directory is held open, so the file
    can still be made after the holder has entered the pod's own mount namespace. (A new
    entry in a directory of thousands costs half a millisecond where /run is on disk.)"""

    def __init__(self, path: str):
        self.dir_fd = os.open(os.path.dirname(path) or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.name = os.path.basename(path)
        self.fd: Optional[int] = None

    def open(self) -> int:
        if self.fd is None:
            self.fd = os.open(self.name, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644,
                              dir_fd=self.dir_fd)
        return self.fd

    def close(self) -> None:
        os.close(self.dir_fd)


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


# The pod's writable places: private tmpfs, sized so a pod cannot fill the machine's memory.
_TMPFS = (("/tmp", "mode=1777,size=256m"), ("/var/tmp", "mode=1777,size=256m"),
          ("/run", "mode=755,size=64m"))
# Mounted fresh rather than bound from the host.
_FRESH_TOP = ("dev", "proc", "run", "sys", "tmp")
_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
# As Docker masks them: /proc files that show or change the kernel's state, not the pod's.
_PROC_MASKED = ("kcore", "keys", "latency_stats", "timer_list", "timer_stats", "sched_debug",
                "acpi", "scsi", "asound")
_PROC_READONLY = ("bus", "fs", "irq", "sys", "sysrq-trigger")
_SYS_MASKED = ("firmware", "devices/virtual/powercap")
# Host secrets no lab needs to read (the rest of the host's files are visible read-only).
_SECRETS = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/security/opasswd",
            "/etc/ssh/ssh_host_*key", "/etc/ssl/private", "/root/.ssh", "/root/.kube", "/root/.gnupg",
            "/home/*/.ssh", "/home/*/.kube", "/home/*/.gnupg")
VOLUMES_DIR = "/run/.netlab/volumes"     # where a pod's emptyDir tmpfs live, inside the pod


def security_of(pod, lab: str = "") -> PodSecurity:
    """The pod's parsed security settings; a refused spec is an OSError, as a runtime failure."""
    try:
        return for_pod(pod, lab)
    except LabError as exc:
        raise PermissionError(1, str(exc)) from None


def confine_argv(csec: Optional[ContainerSecurity] = None) -> list[str]:
    """The `setpriv` prefix that gives a command what a container gets: its capabilities
    (bounding, effective and permitted), its user and groups, no_new_privs. Goes between
    nsenter's options and the command, for `netlab exec` and exec probes."""
    csec = csec or ContainerSecurity()
    names = ",".join(f"+{n.lower()}" for n in csec.cap_names())
    argv = ["setpriv", "--bounding-set", "-all" + (f",{names}" if names else ""), "--inh-caps", "-all",
            "--no-new-privs"]
    if csec.run_as_group is not None:
        argv += ["--regid", str(csec.run_as_group)]
    if csec.run_as_user is not None:
        argv += ["--reuid", str(csec.run_as_user)]
    if csec.run_as_user is not None or csec.run_as_group is not None or csec.groups:
        argv += ["--groups", ",".join(map(str, csec.groups))] if csec.groups else ["--clear-groups"]
    return argv


def enter_argv(target_pid: int, command: Sequence[str], csec: Optional[ContainerSecurity] = None) -> list[str]:
    """argv that runs `command` in a pod as its containers run: in the namespaces of
    `target_pid` (the holder, or a container for its own mounts), confined by confine_argv.
    Without the setpriv part the command would keep all of root's capabilities inside the
    pod, and could remount the host's filesystem read-write."""
    # --root and --wd without a value: the target's own root and directory. (`--wd=/` would
    # open "/" before entering the mount namespace: the command would start in the host's root.)
    return ["nsenter", f"--target={target_pid}", "--net", "--uts", "--ipc", "--pid", "--mount", "--root", "--wd",
            *confine_argv(csec), "--", *command]


def spawn_holder(netns_file: str, hostname: str, files: dict[str, bytes], log_path: str,
                 security: Optional[PodSecurity] = None) -> tuple[int, int]:
    """Fork the pod's PID-1 holder; return (pid, fd that becomes readable when it is ready).
    `files` ({"hosts": ..., "resolv.conf": ...}) replace their /etc counterparts in the pod."""
    security = security or PodSecurity()
    caps.last_cap()                   # read while /proc is the host's
    shared = _shared_root_ns() if _fits_shared_root(security) else None
    log = _LazyLog(log_path)
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = _fork_in_pid_ns(lambda: nsops.unshare(nsops.CLONE_NEWPID))
    except BaseException:
        for fd in (ready_r, ready_w):
            os.close(fd)
        log.close()
        raise
    if pid == 0:
        os.close(ready_r)
        try:
            forget_agent_signals()
            os.setsid()
            nsops.setns_path(netns_file, nsops.CLONE_NEWNET)
            if shared is not None:
                # A copy of the lab's shared root (its root and our cwd from the setns), and
                # the pod's own mounts on top: no copy of the host's mount table to discard.
                nsops.setns_fd(shared, nsops.CLONE_NEWNS)
                nsops.unshare(nsops.CLONE_NEWUTS | nsops.CLONE_NEWIPC | nsops.CLONE_NEWNS)
                nsops.sethostname(hostname)
                _build_pod_mounts(security, "")
            else:
                nsops.unshare(nsops.CLONE_NEWUTS | nsops.CLONE_NEWIPC | nsops.CLONE_NEWNS)
                nsops.sethostname(hostname)
                nsops.make_mounts_private()
                _drop_netns_mounts()
                _build_root(security)
            _bind_etc(files, hostname)
            caps.confine(())          # pause needs no capability at all
        except BaseException as exc:  # noqa: BLE001 - reported through the log; no "ready"
            _report_error(log, "pod sandbox", exc)
            _child_exit(1)
        os.write(ready_w, b"1")
        os.close(ready_w)
        _run_holder(log)
    os.close(ready_w)
    log.close()
    return pid, ready_r


def _drop_netns_mounts() -> None:
    """Our copy of the mount table holds every lab namespace's bind mount; drop them, or the
    machine's mount count grows with the square of the number of pods."""
    if os.path.ismount("/run/netns") or os.path.isdir("/run/netns"):
        try:
            nsops.umount_detach("/run/netns")
        except OSError:
            pass


# The agent's shared root: a mount namespace, held by this descriptor and no process, whose
# root is what _build_shared_root makes. Built once; a pod's holder copies it (a few dozen
# mounts) instead of copying the host's mount table, building the same read-only tree again
# and detaching the host's root (most of a sandbox's cost: the detach waits for RCU).
_SHARED_ROOT: list[Optional[int]] = []


def _fits_shared_root(security: PodSecurity) -> bool:
    """Pods that need something of the host's tree beyond the shared root build their own:
    an add-on's host paths, a volume at a top-level path the host lacks, netlab's code where
    the pod's tmpfs would cover it."""
    return (not security.host_paths and not _code_under_tmpfs()
            and all(os.path.lexists("/" + path.split("/")[1]) for path in security.pod_mounts()))


def _shared_root_ns() -> Optional[int]:
    """The descriptor of the shared root's mount namespace (None if it cannot be built here:
    then each pod builds its root as a whole, as before)."""
    if not _SHARED_ROOT:
        _SHARED_ROOT.append(_build_shared_root_ns())
    return _SHARED_ROOT[0]


def _build_shared_root_ns() -> Optional[int]:
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    done_r, done_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_r)
            os.close(done_w)
            forget_agent_signals()
            nsops.unshare(nsops.CLONE_NEWNS)
            nsops.make_mounts_private()
            _drop_netns_mounts()
            _build_shared_root("/tmp")
            nsops.pivot_root("/tmp")
            os.write(ready_w, b"1")
            os.read(done_r, 1)            # until the agent holds the namespace
        except BaseException as exc:  # noqa: BLE001
            _report_error(2, "shared pod root", exc)
            _child_exit(1)
        _child_exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        ok = os.read(ready_r, 1) == b"1"
        fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC) if ok else None
    finally:
        os.close(done_w)
        os.close(ready_r)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    return fd


def _tmpfs(target: str, options: str, flags: int = nsops.MS_NOSUID | nsops.MS_NODEV) -> None:
    nsops.mount("tmpfs", target, "tmpfs", flags, options)


def _build_root(security: PodSecurity, root: str = "/tmp") -> None:
    """Build the pod's root on a tmpfs at `root` and pivot into it (see the module's notes)."""
    # netlab's code and Python where the pod gets a fresh place (a checkout under /tmp, as CI
    # runners often make): held by descriptor now, since the root's own tmpfs covers /tmp.
    code = [(path, os.open(path, os.O_PATH | os.O_CLOEXEC)) for path in _code_under_tmpfs()
            if os.path.isdir(path)]
    _build_shared_root(root, security)
    _build_pod_mounts(security, root, code)
    nsops.pivot_root(root)


def _build_shared_root(root: str, security: PodSecurity = PodSecurity()) -> None:
    """What every pod's root has alike: the host's top-level directories bound read-only
    (secrets masked), fresh mount points for /dev, /proc, /run, /sys and /tmp, and a
    read-only /dev with the harmless devices."""
    _tmpfs(root, "mode=755,size=1m")
    for name in sorted(os.listdir("/")):
        src, dst = "/" + name, f"{root}/{name}"
        if name in _FRESH_TOP:
            os.mkdir(dst, 0o755)
        elif os.path.islink(src):
            os.symlink(os.readlink(src), dst)
        elif os.path.isdir(src):
            os.mkdir(dst, 0o755)
            nsops.mount(src, dst, "", nsops.MS_BIND | nsops.MS_REC)
        elif os.path.isfile(src):
            os.close(os.open(dst, os.O_WRONLY | os.O_CREAT, 0o644))
            nsops.mount(src, dst, "", nsops.MS_BIND)
    # A volume at a top-level path the host lacks (/data): its mount point, while we can.
    for path in security.pod_mounts():
        if not os.path.lexists(root + "/" + path.split("/")[1]):
            os.makedirs(root + path, 0o755, exist_ok=True)
    for pattern in _SECRETS:
        for path in glob.glob(pattern):
            _mask(root + path, "/dev/null")
    nsops.restrict_tree(root, nsops.MOUNT_ATTR_RDONLY | nsops.MOUNT_ATTR_NOSUID | nsops.MOUNT_ATTR_NODEV)
    _build_shared_dev(root)


def _build_pod_mounts(security: PodSecurity, root: str, code: Sequence[tuple[str, int]] = ()) -> None:
    """What each pod has of its own, on top of the shared root at `root`: writable tmpfs, its
    /proc and /sys, devpts, /dev/shm and its volumes (and, bound back read-only, netlab's code
    held by descriptor in `code`)."""
    for target, options in _TMPFS:
        if os.path.isdir(root + target) and not os.path.islink(root + target):
            _tmpfs(root + target, options)
    os.makedirs(f"{root}/run/lock", 0o755, exist_ok=True)
    # ... and bound back, read-only: the built-in workloads import from them after the pivot.
    for path, fd in code:
        os.makedirs(root + path, 0o755, exist_ok=True)
        nsops.mount(f"/proc/self/fd/{fd}", root + path, "", nsops.MS_BIND | nsops.MS_REC)
        nsops.restrict_tree(root + path, nsops.MOUNT_ATTR_RDONLY | nsops.MOUNT_ATTR_NOSUID
                            | nsops.MOUNT_ATTR_NODEV)
        os.close(fd)
    for path in security.host_paths:                 # an add-on's view of the lab's own files
        if os.path.isdir(path):
            os.makedirs(root + path, 0o755, exist_ok=True)
            nsops.mount(path, root + path, "", nsops.MS_BIND | nsops.MS_REC)
            nsops.restrict_tree(root + path, nsops.MOUNT_ATTR_RDONLY | nsops.MOUNT_ATTR_NOSUID
                                | nsops.MOUNT_ATTR_NODEV)
    _build_pod_dev(root)
    # /proc of the pod's PID namespace, /sys of its netns; what belongs to the kernel read-only.
    nsops.mount("proc", f"{root}/proc", "proc", nsops.MS_NOSUID | nsops.MS_NODEV | nsops.MS_NOEXEC)
    _pod_sysctls(f"{root}/proc/sys")
    for name in _PROC_MASKED:
        _mask(f"{root}/proc/{name}", f"{root}/dev/null")
    for name in _PROC_READONLY:
        path = f"{root}/proc/{name}"
        if os.path.exists(path):
            nsops.mount(path, path, "", nsops.MS_BIND | nsops.MS_REC)
            nsops.remount_bind(path, nsops.MS_RDONLY | nsops.MS_NOSUID | nsops.MS_NODEV | nsops.MS_NOEXEC)
    nsops.mount("sysfs", f"{root}/sys", "sysfs",
                nsops.MS_RDONLY | nsops.MS_NOSUID | nsops.MS_NODEV | nsops.MS_NOEXEC)
    for name in _SYS_MASKED:
        _mask(f"{root}/sys/{name}", f"{root}/dev/null")
    _mount_volumes(security, root)


def _code_under_tmpfs() -> list[str]:
    """netlab's code and Python where a pod gets a tmpfs of its own (/tmp, /var/tmp, /run)."""
    return [path for path in _code_paths()
            if any(path == target or path.startswith(target + "/") for target, _ in _TMPFS)]


@functools.lru_cache(maxsize=None)
def _code_paths() -> list[str]:
    """Where netlab (its checkout or install) and the Python running it live on the host
    (they do not move while the agent runs: looked up once)."""
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return sorted({os.path.realpath(p) for p in (package_root, sys.prefix, sys.base_prefix)})


def _mask(path: str, null: str) -> None:
    """Hide a file (behind /dev/null) or a directory (behind an empty read-only tmpfs)."""
    if os.path.islink(path) or not os.path.exists(path):
        return
    if os.path.isdir(path):
        _tmpfs(path, "size=4k,mode=555", nsops.MS_RDONLY | nsops.MS_NOSUID | nsops.MS_NODEV | nsops.MS_NOEXEC)
    else:
        nsops.mount(null, path, "", nsops.MS_BIND)


def _build_shared_dev(root: str) -> None:
    """/dev with null, zero, full, random, urandom and tty; read-only, so that CAP_MKNOD cannot
    add a disk (every writable mount of the pod is nodev)."""
    dev = f"{root}/dev"
    _tmpfs(dev, "mode=755,size=64k", nsops.MS_NOSUID | nsops.MS_NOEXEC)
    for name in _DEVICES:
        if os.path.exists(f"/dev/{name}"):
            os.close(os.open(f"{dev}/{name}", os.O_WRONLY | os.O_CREAT, 0o666))
            nsops.mount(f"/dev/{name}", f"{dev}/{name}", "", nsops.MS_BIND)
    for name in ("pts", "shm", "mqueue"):
        os.mkdir(f"{dev}/{name}", 0o755)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"), ("core", "/proc/kcore")):
        os.symlink(target, f"{dev}/{name}")
    nsops.mount("none", dev, "", nsops.MS_REMOUNT | nsops.MS_RDONLY | nsops.MS_NOSUID | nsops.MS_NOEXEC,
                "mode=755,size=64k")


def _build_pod_dev(root: str) -> None:
    """The pod's own terminals (a private devpts), /dev/shm and POSIX message queues."""
    dev = f"{root}/dev"
    nsops.mount("devpts", f"{dev}/pts", "devpts", nsops.MS_NOSUID | nsops.MS_NOEXEC,
                "newinstance,ptmxmode=0666,mode=0620")
    _tmpfs(f"{dev}/shm", "mode=1777,size=64m", nsops.MS_NOSUID | nsops.MS_NODEV | nsops.MS_NOEXEC)
    try:
        nsops.mount("mqueue", f"{dev}/mqueue", "mqueue", nsops.MS_NOSUID | nsops.MS_NODEV | nsops.MS_NOEXEC)
    except OSError:
        pass


def _pod_sysctls(proc_sys: str) -> None:
    """What container runtimes set in a pod's own netns: any user may bind low ports and ping."""
    for name, value in (("net/ipv4/ip_unprivileged_port_start", "0"),
                        ("net/ipv4/ping_group_range", "0 2147483647")):
        try:
            with open(f"{proc_sys}/{name}", "w") as f:
                f.write(value)
        except OSError:
            pass


def _volume_source(m: VolumeMount, root: str = "") -> str:
    src = f"{root}{VOLUMES_DIR}/{m.volume}"
    if m.sub_path:
        src = f"{src}/{m.sub_path}"
        os.makedirs(src, 0o777, exist_ok=True)      # as the kubelet does for a missing subPath
    return src


def _bind_volume(m: VolumeMount, root: str = "") -> None:
    target = root + m.path
    if not os.path.isdir(target):
        try:
            os.makedirs(target, 0o755, exist_ok=True)
        except OSError as exc:
            raise OSError(exc.errno, f"volume {m.volume}: cannot create mountPath {m.path} "
                                     f"(the host's filesystem is read-only to pods): {exc.strerror}") from None
    nsops.mount(_volume_source(m, root), target, "", nsops.MS_BIND)
    flags = nsops.MS_NOSUID | nsops.MS_NODEV | (nsops.MS_RDONLY if m.read_only else 0)
    nsops.remount_bind(target, flags)


def _mount_volumes(security: PodSecurity, root: str) -> None:
    """Each emptyDir a tmpfs of its own, bound where the pod's containers mount it."""
    if not security.volumes:
        return
    for v in security.volumes:
        path = f"{root}{VOLUMES_DIR}/{v.name}"
        os.makedirs(path, 0o755)
        # fsGroup: the volume belongs to that group, and what is made in it too (setgid).
        owner = "mode=1777" if security.fs_group is None else f"mode=2777,gid={security.fs_group}"
        owner = "mode=755" if v.projected else owner
        _tmpfs(path, f"{owner},size={v.size}")
    for m in sorted(security.pod_mounts().values(), key=lambda m: m.path.count("/")):
        _bind_volume(m, root)


def _container_mounts(security: PodSecurity, name: str) -> None:
    """A container whose volumeMounts differ from the pod's shared view gets a mount namespace
    of its own (a copy of the pod's) with its own mounts on top."""
    shared = security.pod_mounts()
    own = [m for m in security.container(name).mounts if shared.get(m.path) != m]
    if not own:
        return
    nsops.unshare(nsops.CLONE_NEWNS)
    for m in sorted(own, key=lambda m: m.path.count("/")):
        _bind_volume(m)


def _bind_etc(files: dict[str, bytes], hostname: str) -> None:
    """What `ip netns exec` does with /etc/netns/<netns>/: the pod's files (resolv.conf, hosts,
    and /etc/hostname with the pod's name) replace their /etc counterparts, read-only. They
    are written to the pod's own /run first. A symlinked /etc file (resolv.conf pointing into
    /run) gets its target created on the pod's own /run."""
    own = "/run/.netlab"
    os.makedirs(own, 0o755, exist_ok=True)
    if os.path.isfile("/etc/hostname"):
        files = dict(files, hostname=(hostname + "\n").encode())
    for name, content in files.items():
        source = os.path.join(own, name)
        with open(source, "wb") as f:
            f.write(content)
        os.chmod(source, 0o644)
        target = os.path.realpath(os.path.join("/etc", name))
        if not os.path.lexists(os.path.join("/etc", name)):
            continue
        if not os.path.exists(target):
            try:
                os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o644))
            except OSError:
                continue
        nsops.mount(source, target, "none", nsops.MS_BIND)
        nsops.remount_bind(target, nsops.MS_RDONLY | nsops.MS_NOSUID | nsops.MS_NODEV)


def forget_agent_signals() -> None:
    """A forked child inherits the agent's handlers and its wake-up pipe: drop both."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)


# The pause container: Debian's catatonit in pause mode (-P) is what podman runs as its pods'
# infra container, a few hundred kilobytes where a forked Python process holds megabytes.
PAUSE = "/usr/bin/catatonit"


def _run_holder(log: _LazyLog) -> None:
    """PID 1 of the pod: reap orphans, exit on SIGTERM (the pause container). Like a pause
    container's, its output goes nowhere; its exit code is what the agent reports."""
    try:
        forget_agent_signals()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        if os.access(PAUSE, os.X_OK):
            signal.pthread_sigmask(signal.SIG_SETMASK, [])
            os.execv(PAUSE, ["pause", "-P"])
        # Without catatonit, the same in Python (holding none of the runtime's descriptors).
        os.closerange(3, _MAX_FD)
        signal.signal(signal.SIGTERM, lambda *_: _child_exit(0))
        signal.signal(signal.SIGINT, lambda *_: _child_exit(0))
        signal.signal(signal.SIGCHLD, _reap)
        while True:
            signal.pause()
    except BaseException as exc:  # noqa: BLE001
        _report_error(log, "pause", exc)
        _child_exit(1)


def _reap(*_) -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def spawn_container(holder_pid: int, argv: Sequence[str], env: dict[str, str], log_path: str,
                    builtin, security: Optional[PodSecurity] = None, container: str = "") -> int:
    """Start one container joined to the holder's namespaces; return its PID (our child).

    `builtin(argv) -> int` runs netlab's own workloads in-process (argv[0] == 'netlab-workload');
    anything else is exec'd with PATH lookup. `security` is the pod's (security_of), and
    `container` the container's name in it.
    """
    security = security or PodSecurity()
    csec = security.container(container)
    if csec.run_as_non_root and not csec.run_as_user:
        # The kubelet's CreateContainerConfigError: there is no image USER to fall back on.
        raise PermissionError(1, "container has runAsNonRoot and would run as root (set runAsUser)")
    caps.last_cap()
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
        _container_mounts(security, container)
    except BaseException as exc:  # noqa: BLE001
        _report_error(log_fd, "container", exc)
        _child_exit(127)
    _exec_container(argv, env, log_fd, builtin, csec)


def _exec_container(argv: Sequence[str], env: dict[str, str], log_fd: int, builtin,
                    csec: Optional[ContainerSecurity] = None) -> None:
    csec = csec or ContainerSecurity()
    try:
        os.chdir("/")
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        forget_agent_signals()
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        caps.confine(csec.caps, csec.run_as_user, csec.run_as_group, csec.groups)
        if argv and argv[0] == "netlab-workload":
            # No descriptor of the runtime's stays open in the pod (an exec'd program loses
            # them at exec, close-on-exec; a built-in one runs on in this process): not the
            # pod spawner's socket to the agent, nor a namespace the agent holds.
            os.closerange(3, _MAX_FD)
            log_fd = 2                               # the log, as stderr: for the handlers below
            # Everything inherited from the agent stays out of this process's garbage
            # collection: scanning it would touch (and so copy) most of the agent's pages.
            import gc
            gc.freeze()
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
