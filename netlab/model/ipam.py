"""Address management: node subnets out of the cluster CIDR, addresses out of a range."""
from __future__ import annotations

import ipaddress
from typing import Iterable

from .errors import LabError


class Exhausted(LabError):
    pass


def node_subnet(cluster_cidr: str, prefix: int, index: int) -> ipaddress.IPv4Network:
    """The index-th /prefix of the cluster CIDR (node1 gets index 1: 10.244.1.0/24)."""
    cluster = ipaddress.ip_network(cluster_cidr)
    size = 2 ** (32 - prefix)
    count = 2 ** (prefix - cluster.prefixlen)
    if not 0 <= index < count:
        raise Exhausted(f"no node subnet {index} in {cluster_cidr} (only {count} of /{prefix})")
    return ipaddress.ip_network(f"{ipaddress.ip_address(int(cluster.network_address) + index * size)}/{prefix}")


def nth_host(network: str | ipaddress.IPv4Network, n: int) -> ipaddress.IPv4Address:
    net = ipaddress.ip_network(str(network))
    addr = ipaddress.ip_address(int(net.network_address) + n)
    if addr not in net or addr in (net.broadcast_address,):
        raise Exhausted(f"{net} has no host number {n}")
    return addr


class Pool:
    """Hands out free addresses of a network in order, skipping reserved and used ones."""

    def __init__(self, network: str, reserved: Iterable[str] = (), first: int = 1):
        self.network = ipaddress.ip_network(network)
        self.first = first
        self.used: set[ipaddress.IPv4Address] = {ipaddress.ip_address(a) for a in reserved}
        self._next = int(self.network.network_address) + first

    def _range(self) -> tuple[int, int]:
        """The first and last address this pool may hand out (no network or broadcast address)."""
        lo = int(self.network.network_address) + self.first
        hi = int(self.network.broadcast_address) - (1 if self.network.prefixlen < 31 else 0)
        return lo, hi

    def contains(self, address: str) -> bool:
        """Whether address is one this pool could hand out (like the API server's allocator range)."""
        lo, hi = self._range()
        return lo <= int(ipaddress.ip_address(address)) <= hi

    def is_free(self, address: str) -> bool:
        return ipaddress.ip_address(address) not in self.used

    def take(self, address: str) -> str:
        addr = ipaddress.ip_address(address)
        if not self.contains(address):
            raise LabError(f"{address} is not in the allocatable range of {self.network}")
        if addr in self.used:
            raise LabError(f"{address} is already allocated")
        self.used.add(addr)
        return str(addr)

    def allocate(self) -> str:
        lo, hi = self._range()
        span = hi - lo + 1
        start = min(max(self._next, lo), hi)
        for step in range(span):
            candidate = ipaddress.ip_address(lo + (start - lo + step) % span)
            if candidate not in self.used:
                self.used.add(candidate)
                self._next = int(candidate) + 1
                return str(candidate)
        raise Exhausted(f"no free address left in {self.network}")

    def cursor(self) -> str:
        """Where the next automatic allocation starts looking."""
        return str(ipaddress.ip_address(self._next))

    def set_cursor(self, address: str) -> None:
        self._next = int(ipaddress.ip_address(address))

    def release(self, address: str) -> None:
        self.used.discard(ipaddress.ip_address(address))
