"""The dnsmasq container: the real Debian dnsmasq as kube-dns's cache in front of kubedns."""
from __future__ import annotations

import fcntl
import socket
import struct


def _address_of(ifname: str) -> str:
    """The interface's IPv4 address (SIOCGIFADDR): the pod IP, which the manifest cannot name."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        raw = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", ifname.encode()[:15]))
    return socket.inet_ntoa(raw[20:24])


def main(args: list[str]) -> int:
    from ..dnsmasq import dnsmasq_argv, dnsmasq_missing
    problem = dnsmasq_missing()
    if problem:
        print(problem, flush=True)
        return 1
    # Outside names go where the pod's resolv.conf points: dnsPolicy Default, the node's resolver.
    argv = dnsmasq_argv([_address_of("eth0"), "127.0.0.1"], 10053, resolv_file="/etc/resolv.conf")
    from .serving import exec_program
    exec_program(argv)
    return 127
