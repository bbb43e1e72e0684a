"""Linux capabilities for a forked container: the bounding set, capset, no_new_privs, the user.

Called in a forked, single-threaded child that is about to exec (or run a built-in workload),
in the order runc uses: bounding set first (needs CAP_SETPCAP), then the user and groups
(needs CAP_SETUID/CAP_SETGID, so before the capabilities go), then the capability sets.
Setting a non-zero uid without PR_SET_KEEPCAPS clears the permitted and effective sets, as
it does for a non-root container under Docker.
"""
from __future__ import annotations

import ctypes
import os
from typing import Iterable, Optional, Sequence

from ..model.podsecurity import CAPABILITIES

PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(None, use_errno=True)
_LAST_CAP: list[int] = []


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def last_cap() -> int:
    """The highest capability this kernel knows (read once, before any fork drops /proc)."""
    if not _LAST_CAP:
        try:
            with open("/proc/sys/kernel/cap_last_cap") as f:
                _LAST_CAP.append(int(f.read()))
        except OSError:
            _LAST_CAP.append(max(CAPABILITIES.values()))
    return _LAST_CAP[0]


def _prctl(option: int, arg: int, what: str) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0),
                       ctypes.c_ulong(0)), what)


def capset(caps: Iterable[int]) -> None:
    """Set effective = permitted = `caps`, inheritable empty (for this thread, i.e. process)."""
    mask = 0
    for c in caps:
        mask |= 1 << c
    header = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    for i in range(2):
        word = (mask >> (32 * i)) & 0xFFFFFFFF
        data[i].effective = data[i].permitted = word
        data[i].inheritable = 0
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def current() -> dict[str, int]:
    """This process's capability masks, from /proc/self/status (for tests and diagnostics)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")):
                key, value = line.split(":")
                out[key] = int(value.strip(), 16)
    return out


def confine(keep: Iterable[int], uid: Optional[int] = None, gid: Optional[int] = None,
            groups: Sequence[int] = ()) -> None:
    """Leave this process only `keep` (capability numbers), no_new_privs, and the user given.

    uid/gid None keep root's 0. A non-zero uid ends with no effective capabilities.
    """
    keep = frozenset(keep)
    _prctl(PR_SET_NO_NEW_PRIVS, 1, "prctl no_new_privs")
    try:
        _check(_libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "prctl ambient")
    except OSError:
        pass                      # kernels before 4.3 have no ambient set
    for cap in range(last_cap() + 1):
        if cap not in keep:
            _prctl(PR_CAPBSET_DROP, cap, f"drop capability {cap} from the bounding set")
    if gid is not None or uid is not None or groups:
        os.setgroups(sorted(set(groups)))
        if gid is not None:
            os.setgid(gid)
        if uid is not None:
            os.setuid(uid)        # non-zero: the kernel clears permitted and effective
    # As root: the kept set. As another user: nothing (clears the inheritable set too).
    capset(() if uid else (c for c in keep if c <= last_cap()))
