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

    def __init__(self, network: str, reserved: Iterable[str] = (), first: int = 1, whole: bool = False):
        self.network = ipaddress.ip_network(network)
        self.first = first
        self.whole = whole            # the broadcast address too (a routed block has none)
        self.used: set[ipaddress.IPv4Address] = {ipaddress.ip_address(a) for a in reserved}
        self._next = int(self.network.network_address) + first

    def _range(self) -> tuple[int, int]:
        """The first and last address this pool may hand out (no network or broadcast address)."""
        lo = int(self.network.network_address) + self.first
        hi = int(self.network.broadcast_address) - (1 if self.network.prefixlen < 31 and not self.whole else 0)
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


class BlockIPAM:
    """Calico IPAM: the pool (the cluster CIDR) is cut into blocks (/26 by default); a node
    claims a block with affinity to it, hands out its pods' addresses from its own blocks,
    and claims the lowest free block when they are full. Every address of a block is usable:
    pods get /32s and are routed, so there is no network or broadcast address to keep back.
    Block 0 is kept back, as flannel never leases subnet 0, so node i starts with block i."""

    def __init__(self, pool: str, block_size: int):
        self.pool = ipaddress.ip_network(pool)
        self.block_size = block_size
        self.affinity: dict[str, str] = {}          # block CIDR -> node
        self._pools: dict[str, Pool] = {}           # block CIDR -> its addresses

    def _block(self, index: int) -> str:
        return str(node_subnet(str(self.pool), self.block_size, index))

    def claim(self, node: str, block: str = "") -> str:
        """Give `node` a block: the one named, or the lowest free one."""
        if not block:
            count = 2 ** (self.block_size - self.pool.prefixlen)
            block = next((b for b in map(self._block, range(1, count)) if b not in self.affinity), "")
            if not block:
                raise Exhausted(f"no free /{self.block_size} block left in the IP pool {self.pool}")
        if self.affinity.get(block, node) != node:
            raise LabError(f"block {block} belongs to node {self.affinity[block]}")
        self.affinity[block] = node
        self._pools.setdefault(block, Pool(block, first=0, whole=True))
        return block

    def blocks_of(self, node: str) -> list[str]:
        return sorted((b for b, n in self.affinity.items() if n == node),
                      key=lambda b: int(ipaddress.ip_network(b).network_address))

    def block_of(self, address: str) -> str:
        addr = ipaddress.ip_address(address)
        return next((b for b in self.affinity if addr in ipaddress.ip_network(b)), "")

    def take(self, node: str, address: str) -> bool:
        """Allocate this address to a pod of `node` if it is free in one of its blocks."""
        block = self.block_of(address)
        if self.affinity.get(block) != node or not self._pools[block].is_free(address):
            return False
        self._pools[block].take(address)
        return True

    def allocate(self, node: str) -> str:
        """The next address in the node's blocks; a new block when they are all full."""
        for block in self.blocks_of(node):
            try:
                return self._pools[block].allocate()
            except Exhausted:
                continue
        return self._pools[self.claim(node)].allocate()

    def release(self, address: str) -> None:
        block = self.block_of(address)
        if block:
            self._pools[block].release(address)

    def release_node(self, node: str) -> list[str]:
        """A node left the cluster: its blocks lose their affinity (and must hold no pods)."""
        gone = self.blocks_of(node)
        for block in gone:
            if self._pools[block].used:
                raise LabError(f"block {block} of node {node} still has addresses in use")
            del self.affinity[block]
            del self._pools[block]
        return gone

    def cursors(self) -> dict[str, str]:
        return {b: p.cursor() for b, p in self._pools.items()}

    def set_cursor(self, block: str, cursor: str) -> None:
        if block in self._pools:
            self._pools[block].set_cursor(cursor)
