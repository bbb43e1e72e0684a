"""TUN devices (flannel's udp backend: flannel0), made and opened with the tun driver's ioctls.

rtnetlink cannot create a TUN ("tun/tap creation via rtnetlink is not supported"), so the
builder makes flannel0 the way `ip tuntap add` does: open /dev/net/tun inside the node's
namespace, TUNSETIFF (IFF_TUN | IFF_NO_PI: bare IP packets, no packet-information header),
then TUNSETPERSIST so the device outlives that descriptor and exists before flanneld runs.
flanneld attaches to it by name with the same flags. While no process holds it, the kernel
keeps its carrier off and drops what the routes send into it; a namespace's deletion takes
the device along.
"""
from __future__ import annotations

import fcntl
import os
import struct

from . import netns

TUN_PATH = "/dev/net/tun"
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def _ifreq(name: str, flags: int) -> bytes:
    return struct.pack("16sH22x", name.encode(), flags)


def open_tun(name: str) -> int:
    """Open (creating it if it does not exist) the TUN device `name` in the calling thread's
    namespace; return its descriptor (blocking, close-on-exec)."""
    fd = os.open(TUN_PATH, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, _ifreq(name, IFF_TUN | IFF_NO_PI))
    except BaseException:
        os.close(fd)
        raise
    return fd


def create_persistent(ns: str, name: str) -> None:
    """Make the persistent TUN device `name` in namespace `ns` (an existing one is kept)."""
    def make() -> None:
        netns.enter(ns)
        fd = open_tun(name)
        try:
            fcntl.ioctl(fd, TUNSETPERSIST, 1)
        finally:
            os.close(fd)
    try:
        netns.in_thread(make)
    except FileNotFoundError:
        raise netns.KernelError(f"the udp backend needs {TUN_PATH}: load the tun module (modprobe tun)") from None
    except OSError as exc:
        raise netns.KernelError(f"{ns}: TUN {name}: {exc.strerror or exc}") from None
