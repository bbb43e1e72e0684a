"""Low-level namespace operations for forked children (single-threaded by construction)."""
from __future__ import annotations

import ctypes
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
# mount_setattr(2) (Linux 5.12): flags of a mount, or of a whole tree of mounts, in place.
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC = 1, 2, 4, 8
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
_SYS_MOUNT_SETATTR = 442                     # the same number on every architecture
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "i686": 217, "i386": 217,
                   "armv7l": 218, "ppc64le": 203, "s390x": 217}
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

_libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def setns_path(path: str, nstype: int = 0) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(fd, nstype), f"setns {path}")
    finally:
        os.close(fd)


def setns_fd(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(fd, nstype), f"setns {nstype:#x}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def sethostname(name: str) -> None:
    raw = name.encode()[:64]
    _check(_libc.sethostname(raw, len(raw)), "sethostname")


def mount(source: str, target: str, fstype: str, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(source.encode(), target.encode(), fstype.encode(), flags,
                       data.encode() if data else None), f"mount {target}")


def umount_detach(target: str) -> None:
    _check(_libc.umount2(target.encode(), 2), f"umount {target}")   # MNT_DETACH


def remount_bind(target: str, flags: int) -> None:
    """Change one bind mount's flags (MS_RDONLY, MS_NOSUID, ...) without touching its source."""
    mount("none", target, "", MS_REMOUNT | MS_BIND | flags)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _mount_points_under(top: str) -> list[str]:
    """Mount points at or below `top` in this mount namespace, parents first."""
    top = top.rstrip("/") or "/"
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4]
            point = point.encode().decode("unicode_escape")       # \040 and friends
            if point == top or point.startswith(top.rstrip("/") + "/"):
                found.append(point)
    return found


def restrict_tree(top: str, attrs: int) -> None:
    """Set MOUNT_ATTR_* flags on every mount at or below `top` (in this namespace only).

    mount_setattr(AT_RECURSIVE) where the kernel has it; otherwise a bind remount of each
    mount point, keeping each one's other flags.
    """
    attr = _MountAttr(attrs, 0, 0, 0)
    rc = _libc.syscall(ctypes.c_long(_SYS_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD), top.encode(),
                       ctypes.c_uint(AT_RECURSIVE), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))
    if rc == 0:
        return
    err = ctypes.get_errno()
    if err not in (38, 22):                      # ENOSYS (before 5.12), EINVAL
        raise OSError(err, f"mount_setattr {top}: {os.strerror(err)}")
    keep = {os.ST_NOSUID: MS_NOSUID, os.ST_NODEV: MS_NODEV, os.ST_NOEXEC: MS_NOEXEC,
            os.ST_NOATIME: 1024, os.ST_NODIRATIME: 2048, os.ST_RELATIME: 1 << 21}
    for point in _mount_points_under(top):
        try:
            have = os.statvfs(point).f_flag
        except OSError:
            continue
        flags = attrs | sum(ms for st, ms in keep.items() if have & st)
        remount_bind(point, flags)


def pivot_root(new_root: str) -> None:
    """Make `new_root` (a mount point) this namespace's root and drop the old one."""
    import platform
    os.chdir(new_root)
    nr = _SYS_PIVOT_ROOT.get(platform.machine())
    if nr is None:
        raise OSError(38, f"pivot_root: unknown system call number on {platform.machine()}")
    _check(_libc.syscall(ctypes.c_long(nr), b".", b"."), "pivot_root")
    # The old root is now mounted on top of the new one, at "/": detach it.
    umount_detach(".")
    os.chdir("/")


def make_mounts_private() -> None:
    """Nothing mounted in this mount namespace may propagate back to the host."""
    mount("none", "/", "", MS_REC | MS_PRIVATE)


def set_child_subreaper() -> None:
    """Orphaned descendants are re-parented to us, so we can reap and account for them."""
    _check(_libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "prctl subreaper")


def die_with_parent(sig: int) -> None:
    _check(_libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0), "prctl pdeathsig")
