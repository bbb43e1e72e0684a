"""Network namespaces: create, delete, find their processes, and open netlink handles in them.

The main thread never leaves its namespace. A short-lived helper thread enters the target
namespace (network namespaces are a per-thread attribute), opens a netlink socket there and
hands back its file descriptor: about a millisecond, where forking a child costs ten.

pyroute2 0.9 opens its sockets lazily and per thread, so an IPRoute made in the helper
thread would silently open a *new* socket in the root namespace when used from the main
thread. We therefore always pass it the already-open descriptor (`fileno=`), and check the
socket's namespace before the handle is used.
"""
from __future__ import annotations

import ctypes
import errno
import os
import signal
import socket
import threading
import time
from typing import Callable, Iterable, Optional, TypeVar

from ..model.errors import LabError

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
MS_BIND, MS_REC, MS_SHARED = 4096, 16384, 1 << 20
MNT_DETACH = 2
NETLINK_ROUTE = 0

_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")
_INTERRUPTS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


class KernelError(LabError):
    exit_code = 5


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def netns_path(name: str) -> str:
    return os.path.join(NETNS_DIR, name)


def host_netns_inode() -> int:
    """The namespace netlab itself runs in: the host's, which a lab must never touch."""
    return os.stat("/proc/self/ns/net").st_ino


def protected_inodes() -> set[int]:
    """Namespaces no cleanup may act on: netlab's own and init's (the host's)."""
    found = {host_netns_inode()}
    try:
        found.add(os.stat("/proc/1/ns/net").st_ino)
    except OSError:
        pass
    return found


def in_thread(fn: Callable[[], T]) -> T:
    """Run fn in a throwaway thread (which may change its own namespaces) and return its result."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=run, name="netns-helper")
    # An interrupt (Ctrl-C, SIGTERM, SIGHUP) waits until the thread's kernel work is done
    # (milliseconds): raised while the thread still ran, it let the caller unwind and a
    # rollback delete a namespace that the thread mounted a moment later (EBUSY, one left
    # behind). Catching it around join() was not enough: it can come inside start().
    held = signal.pthread_sigmask(signal.SIG_BLOCK, _INTERRUPTS)
    try:
        t.start()
        t.join()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    if "error" in box:
        raise box["error"]
    return box["value"]


def enter(name: str) -> None:
    """Move the *calling thread* (or a forked child) into a named namespace; it must exist."""
    fd = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), f"setns {name}")
    finally:
        os.close(fd)


_NETNS_DIR_READY: list[bool] = []


def _ensure_netns_dir() -> None:
    """Make /run/netns a shared mount point, as `ip netns add` does, so tools agree on it.

    Checked once per process: mountinfo grows by a line per namespace, so reading it for
    every namespace made creating N of them cost O(N^2)."""
    if _NETNS_DIR_READY:
        return
    os.makedirs(NETNS_DIR, exist_ok=True)
    # os.path.ismount() misses a bind mount of a directory onto itself; ask mountinfo.
    if not _is_mount_point(NETNS_DIR):
        _check(_libc.mount(NETNS_DIR.encode(), NETNS_DIR.encode(), b"none", MS_BIND | MS_REC, None),
               "bind /run/netns")
        _check(_libc.mount(b"", NETNS_DIR.encode(), b"none", MS_SHARED | MS_REC, None), "share /run/netns")
    _NETNS_DIR_READY.append(True)


def _is_mount_point(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


MARK = "netlab"         # lo's ifalias in a lab's namespace: "netlab:<lab>:<lab id>"
IFLA_IFALIAS, RTM_GETLINK = 20, 18


def owner_mark(name: str) -> Optional[str]:
    """The mark a namespace of this name gets: its lab's name and id (from owner.json, which
    `up` writes when it claims the lab, before any namespace exists); None outside a lab."""
    from .. import state
    from ..model import names
    lab = names.lab_of_netns(name)
    lab_id = state.lab_id(lab) if lab else None
    return f"{MARK}:{lab}:{lab_id}" if lab_id else None


def parse_mark(mark: Optional[str]) -> Optional[tuple[str, str]]:
    """(lab, lab id) from a mark, or None if it is not netlab's."""
    parts = (mark or "").split(":")
    if len(parts) != 3 or parts[0] != MARK or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def create(name: str, mark: Optional[str] = None) -> None:
    """Create a named network namespace; refuse if the name is taken.

    The namespace is marked (its loopback's alias) before it gets its name, so a namespace
    that has the name always carries the mark: `down` and `clean` act only on marked ones."""
    _ensure_netns_dir()
    path = netns_path(name)
    mark = mark if mark is not None else owner_mark(name)

    def make():
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444)
        os.close(fd)
        try:
            _check(_libc.unshare(CLONE_NEWNET), "unshare")
            _ipv4_only()
            # The new namespace's loopback starts down; every netlab namespace wants it up.
            _set_lo(mark)
            _check(_libc.mount(b"/proc/thread-self/ns/net", path.encode(), b"none", MS_BIND, None),
                   f"bind {path}")
        except OSError:
            os.unlink(path)
            raise

    try:
        in_thread(make)
    except FileExistsError:
        raise KernelError(f'network namespace "{name}" already exists') from None


def _ipv4_only() -> None:
    """In the calling thread's new namespace: no IPv6 on its devices. A lab's address plan is
    IPv4 only, and each new device's IPv6 autoconfiguration (link-local address, duplicate
    address detection, MLD and router solicitations) kept the kernel busy for about a
    CPU-second per 100 pods in the two seconds after `up`, on the cores the pods start on."""
    for scope in ("default", "all"):
        try:
            with open(f"/proc/sys/net/ipv6/conf/{scope}/disable_ipv6", "w") as f:
                f.write("1")
        except FileNotFoundError:     # a kernel without IPv6: nothing to turn off
            return


def _set_lo(mark: Optional[str]) -> None:
    """In the calling thread's namespace: lo up, and its alias set to the mark (if any)."""
    from . import rtnl
    body = rtnl.ifinfo(index=1, flags=rtnl.IFF_UP, change=rtnl.IFF_UP)   # lo is ifindex 1
    if mark:
        body += rtnl.text(IFLA_IFALIAS, mark)
    batch = rtnl.Batch()
    batch._add(rtnl.RTM_SETLINK, 0, body, "set lo up and mark it")
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as sock:
        sock.bind((0, 0))
        batch.commit(sock)


def read_mark(name: str) -> Optional[str]:
    """The mark a namespace carries (lo's alias), or None: unmarked, gone, not a namespace,
    or the host's own namespace (never entered)."""
    return read_marks([name])[name]


def read_marks(names: Iterable[str]) -> dict[str, Optional[str]]:
    """read_mark for many namespaces, their sockets opened from one helper thread (a thread
    per namespace cost `down` about 30 ms at 100 pods)."""
    names = list(names)
    fds = _sockets_in_each([netns_path(n) for n in names], socket.SOCK_RAW, NETLINK_ROUTE)
    marks: dict[str, Optional[str]] = {}
    for name, fd in zip(names, fds):
        marks[name] = None
        if fd is not None:
            with socket.socket(fileno=fd) as sock:
                try:
                    marks[name] = _lo_alias(sock)
                except OSError:
                    pass
    return marks


def _sockets_in_each(paths: list[str], sock_type: int, protocol: int) -> list[Optional[int]]:
    """A netlink socket opened inside each network namespace that `paths` name (/run/netns/X
    or /proc/PID/ns/net), all from one helper thread that enters them in turn; None where a
    path is not a namespace, is the host's own (never entered) or cannot be entered."""
    host = host_netns_inode()
    nsfs = os.stat("/proc/self/ns/net").st_dev

    def open_all() -> list[Optional[int]]:
        fds: list[Optional[int]] = []
        for path in paths:
            fds.append(None)
            try:
                ns = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                st = os.fstat(ns)
                if st.st_dev == nsfs and st.st_ino != host and _libc.setns(ns, CLONE_NEWNET) == 0:
                    fds[-1] = socket.socket(socket.AF_NETLINK, sock_type, protocol).detach()
            except OSError:
                pass
            finally:
                os.close(ns)
        return fds
    return in_thread(open_all)


def _lo_alias(sock: socket.socket) -> Optional[str]:
    """lo's alias (IFLA_IFALIAS), asked of the namespace `sock` lives in."""
    import struct
    from . import rtnl
    sock.bind((0, 0))
    body = rtnl.ifinfo(index=1)
    sock.send(struct.pack("=IHHII", 16 + len(body), RTM_GETLINK, rtnl.NLM_F_REQUEST, 1, 0) + body)
    data = sock.recv(1 << 16)
    length, msg_type = struct.unpack_from("=IH", data, 0)
    if msg_type != rtnl.RTM_NEWLINK:
        return None
    offset = 16 + 16                       # nlmsghdr + ifinfomsg
    while offset + 4 <= min(length, len(data)):
        alen, kind = struct.unpack_from("=HH", data, offset)
        if alen < 4:
            break
        if kind & 0x3FFF == IFLA_IFALIAS:
            return data[offset + 4:offset + alen].rstrip(b"\0").decode(errors="replace")
        offset += (alen + 3) & ~3
    return None


def is_netns(name: str) -> bool:
    """Is /run/netns/<name> a namespace (nsfs), not a placeholder file left by a crash?"""
    try:
        return os.stat(netns_path(name)).st_dev == os.stat("/proc/self/ns/net").st_dev
    except OSError:
        return False


def delete(name: str) -> None:
    """Remove a namespace's name. Devices go with it once no process holds it; absent is fine."""
    path = netns_path(name)
    if _libc.umount2(path.encode(), MNT_DETACH) != 0 and ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT):
        err = ctypes.get_errno()
        raise KernelError(f"cannot unmount {path}: {os.strerror(err)}")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def exists(name: str) -> bool:
    return os.path.exists(netns_path(name))


def list_names(prefix: str = "") -> list[str]:
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def inode(name: str) -> Optional[int]:
    try:
        return os.stat(netns_path(name)).st_ino
    except FileNotFoundError:
        return None


def pids_in(inodes: Iterable[int]) -> dict[int, int]:
    """pid -> netns inode for every process whose network namespace is one of `inodes`."""
    wanted = set(inodes) - protected_inodes()     # never the host's processes
    found = {}
    if not wanted:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ino = os.stat(f"/proc/{entry}/ns/net").st_ino
        except OSError:
            continue
        if ino in wanted:
            found[int(entry)] = ino
    return found


def kill_processes(inodes: Iterable[int], grace: float = 1.0) -> int:
    """SIGTERM, then SIGKILL after `grace` seconds, every process living in these namespaces."""
    inodes = set(inodes) - protected_inodes()
    pids = pids_in(inodes)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        time.sleep(0.02)
        pids = {p: i for p, i in pids.items() if alive(p)}
    for pid in pids_in(inodes):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _socket_in(name: str, sock_type: int) -> int:
    """A netlink socket opened inside namespace `name` (which must exist and is not ours)."""
    target = inode(name)
    if target is None:
        raise KernelError(f'network namespace "{name}" does not exist')
    if target == host_netns_inode():
        raise KernelError(f'refusing to work in "{name}": it is the host\'s namespace')

    def make_socket() -> int:
        enter(name)
        if os.stat("/proc/thread-self/ns/net").st_ino != target:
            raise KernelError(f"could not enter network namespace {name}")
        return socket.socket(socket.AF_NETLINK, sock_type, NETLINK_ROUTE).detach()
    return in_thread(make_socket)


def open_rtnl_socket(name: str) -> socket.socket:
    """A raw rtnetlink socket living in namespace `name`, for kernel.rtnl batches."""
    sock = socket.socket(fileno=_socket_in(name, socket.SOCK_RAW))
    sock.bind((0, 0))
    return sock


def open_netlink(name: str):
    """An IPRoute whose socket lives in namespace `name` (see the module docstring for why
    pyroute2 is handed the descriptor rather than asked to enter the namespace)."""
    from pyroute2 import IPRoute
    return IPRoute(fileno=_socket_in(name, socket.SOCK_DGRAM))


def ifindexes(name: str, devices: Iterable[str]) -> dict[str, int]:
    """Interface indexes by name inside a namespace (SIOCGIFINDEX: no netlink dump to parse)."""
    devices = list(devices)

    def lookup():
        enter(name)
        found = {}
        for dev in devices:
            try:
                found[dev] = socket.if_nametoindex(dev)
            except OSError:
                pass
        return found
    return in_thread(lookup)


NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY, TCP_LISTEN = 4, 20, 10


def tcp_listening(pid: int, ports: Iterable[int], address: str) -> set[int]:
    """Which of `ports` have a TCP listener in the namespace of process `pid` that takes
    connections to `address` (bound to it or to any address), or to 127.0.0.1.

    One sock_diag lookup per port, which the kernel answers from its listener hash; reading
    /proc/<pid>/net/tcp instead walks the machine's whole socket hash, about 1.8 ms a read
    here whatever the namespace holds (at 1,000 pods, 1.8 CPU-seconds of the agent's).
    Falls back to that read if sock_diag is not available."""
    return tcp_listening_many([(pid, ports, address)])[0]


def tcp_listening_many(checks: list[tuple[int, Iterable[int], str]]) -> list[set[int]]:
    """tcp_listening for many (pid, ports, address) at once: one helper thread opens every
    namespace's sock_diag socket, where a thread per check cost the agent about 0.2 ms each
    while a lab's pods start."""
    fds = _sockets_in_each([f"/proc/{pid}/ns/net" for pid, _, _ in checks], socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
    results = []
    for (pid, ports, address), fd in zip(checks, fds):
        ports = list(ports)
        found = _diag_listening(fd, ports, address) if fd is not None else None
        results.append(found if found is not None else listening_tcp_ports(pid, set(ports)))
    return results


def _diag_listening(fd: int, ports: list[int], address: str) -> Optional[set[int]]:
    """The lookups of tcp_listening on an open sock_diag socket (closed here); None if
    sock_diag failed."""
    found: set[int] = set()
    with socket.socket(fileno=fd) as sock:
        sock.settimeout(1.0)
        try:
            for seq, port in enumerate(ports, 1):
                for local in (address, "127.0.0.1"):
                    if _diag_lookup(sock, seq, port, local):
                        found.add(port)
                        break
        except OSError:
            return None
    return found


def _diag_lookup(sock: socket.socket, seq: int, port: int, local: str) -> bool:
    """inet_diag_req_v2 for one socket (no dump): the kernel looks the listener up by
    (local address, port) and answers with it, or with an error (ENOENT) if there is none."""
    import struct
    req = (struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0, 1 << TCP_LISTEN)
           + struct.pack("!HH", port, 0) + socket.inet_aton(local) + bytes(12) + bytes(16)
           + struct.pack("=III", 0, 0xFFFFFFFF, 0xFFFFFFFF))       # any interface, no cookie
    sock.send(struct.pack("=IHHII", 16 + len(req), SOCK_DIAG_BY_FAMILY, 1, seq, 0) + req)   # NLM_F_REQUEST
    while True:
        data = sock.recv(8192)
        _length, msg_type, _flags, got_seq, _pid = struct.unpack_from("=IHHII", data, 0)
        if got_seq != seq:
            continue                     # an answer to an earlier question: not ours
        if msg_type == 2:                # NLMSG_ERROR: 0 is an ack, negative an errno
            error = struct.unpack_from("=i", data, 16)[0]
            if error in (0, -errno.ENOENT):
                return False
            raise OSError(-error, os.strerror(-error))
        return msg_type == SOCK_DIAG_BY_FAMILY


def listening_tcp_ports(pid: int, want: Optional[set[int]] = None) -> set[int]:
    """TCP ports in LISTEN in the network namespace of process `pid` (/proc/<pid>/net/tcp).

    The kernel lists listening sockets first, then walks the machine-wide established hash,
    which costs milliseconds: reading stops at the first socket that is not listening, or
    once every port in `want` has been seen."""
    found: set[int] = set()
    try:
        fd = os.open(f"/proc/{pid}/net/tcp", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return found
    try:
        pending, first = b"", True
        while True:
            chunk = os.read(fd, 8192)
            if not chunk:
                return found
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines[1:] if first else lines:
                parts = line.split()
                if len(parts) < 4:
                    continue
                if parts[3] != b"0A":
                    return found
                found.add(int(parts[1].rsplit(b":", 1)[1], 16))
                if want is not None and want <= found:
                    return found
            first = False
    except OSError:
        return found
    finally:
        os.close(fd)


def write_sysctl(name: str, values: dict[str, str]) -> None:
    """Write per-namespace sysctls (/proc/sys/net/...) from a thread inside the namespace."""
    def write():
        enter(name)
        for key, value in values.items():
            with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                f.write(str(value))
    in_thread(write)


def read_sysctl(name: str, key: str) -> str:
    def read():
        enter(name)
        with open("/proc/sys/" + key.replace(".", "/")) as f:
            return f.read().strip()
    return in_thread(read)
