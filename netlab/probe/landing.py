"""Where connections to a service land, read on the servers' side.

kube-proxy picks an endpoint per connection at random, so one connection says little. A
probe opens `count` connections one after the other and holds them; after each, it reads the
endpoint pods' socket tables until the new ESTABLISHED entry shows up: that pod took the
connection, and the entry's peer is the address its server saw (the client's pod IP, or a
node address when the rules masqueraded). Waiting until the server has accept()ed it also
paces the probe: a server with a small listen backlog (the guestbook's is 5) would otherwise
drop SYNs that arrive faster than it accepts. `coverage(n)` is how many connections make it
all but certain (1 in 10^4) that each of n endpoints gets one.

Other connections reach the servers meanwhile (the kubelet's readinessProbe every second,
from the node's cni0 address, also an address the node masquerades to): that is why the
translating node's conntrack entry, or the client's own address when nothing translated
it, decides which new entry is the probe's, and the first new entry only as a last resort.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..model.services import Endpoint
from . import conntable, sockets
from .lab import LabView

MISS_ODDS = 1e4
ACCEPT_WAIT = 0.5           # seconds a connection may take to show up (and be accepted)


MAX_CONNECTIONS = 200       # held at once by one probe: a service of 1,000 pods would need 16,000


def full_coverage(endpoints: int) -> int:
    """Connections needed so that every one of `endpoints` is picked w.p. >= 1 - 1/MISS_ODDS."""
    if endpoints <= 1:
        return 3
    return math.ceil(endpoints * math.log(endpoints * MISS_ODDS))


def coverage(endpoints: int) -> int:
    """Connections a probe opens: full coverage, up to MAX_CONNECTIONS (from 18 endpoints on,
    the cap: a probe then shows spread, not that every endpoint is chosen)."""
    return min(full_coverage(endpoints), MAX_CONNECTIONS)


def covers_all(endpoints: int) -> bool:
    return full_coverage(endpoints) <= MAX_CONNECTIONS


@dataclass
class Landing:
    opened: int = 0
    error: Optional[str] = None                             # why the next connection failed
    by_pod: dict[str, list[str]] = field(default_factory=dict)   # pod key -> peers its server saw
    lost: int = 0                                           # connected, but found on no endpoint
    client_peers: set[str] = field(default_factory=set)     # where the client thinks it is connected
    client_locals: list[str] = field(default_factory=list)  # the client's own addresses

    @property
    def landed(self) -> int:
        return sum(len(p) for p in self.by_pod.values())

    def spread(self) -> str:
        return ", ".join(f"{key.split('/', 1)[1]}:{len(peers)}" for key, peers in self.by_pod.items()) or "nowhere"


Tables = Callable[[], dict[str, dict[str, bool]]]


def _await_new(tables: Tables, known: dict[str, set[str]], ours: str = "") -> Optional[tuple[str, str]]:
    """The (pod, peer) of the connection that just appeared, once accepted (or at the deadline).
    If a server sees `ours` (the client's own address: nothing translated it), that is the
    one, whatever else arrived meanwhile (a late connection of an earlier probe)."""
    deadline = time.monotonic() + ACCEPT_WAIT
    found = None
    while True:
        seen = tables()
        mine = [(key, peers[ours]) for key, peers in seen.items() if ours in peers and ours not in known[key]]
        if mine:
            found = (mine[0][0], ours)
            if mine[0][1]:
                return found
        else:
            for key, peers in seen.items():
                fresh = [(peer, accepted) for peer, accepted in peers.items() if peer not in known[key]]
                if fresh:
                    found = (key, fresh[0][0])
                    if fresh[0][1]:
                        return found
        if time.monotonic() > deadline:
            return found
        time.sleep(0.001)


def _await_one(pid: int, port: int, peer: str) -> bool:
    """Whether the server on `port` in PID's namespace accepts the connection from `peer`."""
    deadline = time.monotonic() + ACCEPT_WAIT
    while True:
        if conntable.established(pid, port).get(peer):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)


def land(view: LabView, src_ns: str, ip: str, port: int, endpoints: list[Endpoint], count: int) -> Landing:
    """Open `count` connections from src_ns to ip:port, one at a time, and see where each landed.

    In iptables mode the node that translated a connection names its endpoint and the peer
    the endpoint sees (ctlookup: one conntrack lookup per node), and only that pod's socket
    table is read to see the server accept it: the cost does not grow with the service's
    size. Otherwise, or if that finds nothing, every endpoint's table is read until the
    connection shows up."""
    from .ctlookup import Conntrack
    servers = {ep.pod: (view.holder(view.pod_of(ep)), ep.port) for ep in endpoints}
    by_address = {(ep.ip, ep.port): ep.pod for ep in endpoints}
    conntrack = Conntrack([n.netns for n in view.cluster.nodes]) if view.proxy_mode != "userspace" else None

    def tables() -> dict[str, dict[str, bool]]:
        return {key: conntable.established(pid, p) for key, (pid, p) in servers.items()}

    def via_conntrack(local: tuple[str, int]) -> Optional[tuple[str, str]]:
        if conntrack is None:
            return None
        reply = conntrack.endpoint(local[0], local[1], ip, port)
        key = by_address.get((reply[0], reply[1])) if reply else None
        if key is None:
            return None
        peer = f"{reply[2]}:{reply[3]}"
        return (key, peer) if _await_one(servers[key][0], servers[key][1], peer) else None

    known = {key: set(peers) for key, peers in tables().items()}
    result = Landing()
    held = []
    try:
        for _ in range(count):
            try:
                sock = sockets.in_netns(src_ns, sockets.open_connection, ip, port)
            except OSError as exc:
                result.error = sockets.describe_error(exc, sockets.CONNECT_TIMEOUT)
                break
            held.append(sock)
            result.opened += 1
            local = None
            try:
                result.client_peers.add("%s:%d" % sock.getpeername())
                local = sock.getsockname()
                result.client_locals.append("%s:%d" % local)
            except OSError:         # reset already; the servers' side tells the rest
                pass
            found = ((via_conntrack(local) if local else None)
                     or _await_new(tables, known, "%s:%d" % local if local else ""))
            if found is None:       # connected, yet no endpoint has it: stop, this is the finding
                result.lost += 1
                break
            key, peer = found
            known[key].add(peer)
            result.by_pod.setdefault(key, []).append(peer)
    finally:
        sockets.close_all(held)
        if conntrack is not None:
            conntrack.close()
    return result
