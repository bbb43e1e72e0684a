"""Compile time of the same rtnetlink requests: netlab's kernel/rtnl.py against pyroute2's IPBatch.

DESIGN.md justifies kernel/rtnl.py by "pyroute2's IPBatch compiles the same 600 messages about
100x slower"; this measures it. No root, no kernel: both sides only produce bytes.

The 600 requests are what 100 pods cost: per pod a veth pair created up, sized and on its
bridge; a link configured (MTU, MAC, master, up); hairpin mode on the bridge port; an
address; a route; a permanent neighbour. rtnl's figure covers building the requests and
packing them into the buffers commit() sends (the socket is a stand-in whose acks are made
before the clock starts); IPBatch's covers its calls, which append to its buffer.

    .venv/bin/python bench/bench_rtnl.py [--n 600] [--repeat 5]
"""
from __future__ import annotations

import argparse
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netlab.kernel import rtnl

KINDS = 6   # messages per pod


def count(data: bytes) -> int:
    n = offset = 0
    while offset < len(data):
        offset += struct.unpack_from("=I", data, offset)[0]
        n += 1
    return n


class AckingSocket:
    """Records what commit() sends; answers with acks prepared in advance."""

    def __init__(self, acks: list[bytes]):
        self.acks = acks
        self.sent = 0

    def send(self, data: bytes) -> int:
        self.sent += len(data)
        return len(data)

    def recv(self, bufsize: int) -> bytes:
        return self.acks.pop()


def fill_rtnl(batch: rtnl.Batch, n: int) -> None:
    for i in range(n):
        pod, kind = divmod(i, KINDS)
        index = 10 + pod
        if kind == 0:
            batch.veth_add(f"veth{pod:011x}", "eth0", 7, mtu=1450, master=3, up=True)
        elif kind == 1:
            batch.link_set(index, "eth0", mtu=1450, address="0a:58:0a:f4:01:02", master=3)
        elif kind == 2:
            batch.hairpin(index, f"veth{pod:011x}")
        elif kind == 3:
            batch.addr_add(index, f"10.244.{pod // 250}.{2 + pod % 250}/24", "eth0")
        elif kind == 4:
            batch.route_add(f"10.{100 + pod // 256}.{pod % 256}.0/24", via="10.244.0.1", oif=index)
        else:
            batch.neigh_add(index, f"10.244.{pod // 250}.{2 + pod % 250}", "0a:58:0a:f4:01:02")


def fill_ipbatch(ipb, n: int) -> None:
    for i in range(n):
        pod, kind = divmod(i, KINDS)
        index = 10 + pod
        if kind == 0:
            ipb.link("add", ifname=f"veth{pod:011x}", kind="veth", mtu=1450, master=3, state="up",
                     peer={"ifname": "eth0", "net_ns_fd": 7, "mtu": 1450})
        elif kind == 1:
            ipb.link("set", index=index, mtu=1450, address="0a:58:0a:f4:01:02", master=3, state="up")
        elif kind == 2:
            ipb.brport("set", index=index, hairpin=True)
        elif kind == 3:
            ipb.addr("add", index=index, address=f"10.244.{pod // 250}.{2 + pod % 250}", prefixlen=24)
        elif kind == 4:
            ipb.route("add", dst=f"10.{100 + pod // 256}.{pod % 256}.0/24", gateway="10.244.0.1",
                      oif=index, proto=4)
        else:
            ipb.neigh("add", ifindex=index, dst=f"10.244.{pod // 250}.{2 + pod % 250}",
                      lladdr="0a:58:0a:f4:01:02", state=0x80)


def time_rtnl_build(n: int) -> float:
    """Only the requests' bodies (the Batch method calls), without commit's packing."""
    start = time.perf_counter()
    fill_rtnl(rtnl.Batch(), n)
    return time.perf_counter() - start


def time_rtnl(n: int) -> float:
    base = 1000
    acks = [struct.pack("=IHHIIi", 36, rtnl.NLMSG_ERROR, 0x100, base + i, 0, 0) + b"\0" * 16
            for i in range(n)]
    sock = AckingSocket(list(reversed(acks)))
    real_urandom = rtnl.os.urandom
    rtnl.os.urandom = lambda k: base.to_bytes(k, "little")      # known sequence numbers
    try:
        start = time.perf_counter()
        batch = rtnl.Batch()
        fill_rtnl(batch, n)
        batch.commit(sock)
        elapsed = time.perf_counter() - start
    finally:
        rtnl.os.urandom = real_urandom
    assert not sock.acks, "commit did not read every ack"
    return elapsed


def time_ipbatch(n: int) -> float:
    from pyroute2 import IPBatch
    ipb = IPBatch()
    try:
        start = time.perf_counter()
        fill_ipbatch(ipb, n)
        elapsed = time.perf_counter() - start
        compiled = count(bytes(ipb.batch))
    finally:
        ipb.close()
    assert compiled == n, f"IPBatch compiled {compiled} messages, not {n}"
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=600, help="messages per run (default 600)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per side; the best is shown")
    args = parser.parse_args()

    import pyroute2
    print(f"python {sys.version.split()[0]}, pyroute2 {pyroute2.__version__}, "
          f"N={args.n} messages ({args.n // KINDS} pods x {KINDS}: veth, link set, hairpin, "
          f"address, route, neighbour), best of {args.repeat}")
    time_rtnl(args.n)                                   # warm up imports and caches
    ours = min(time_rtnl(args.n) for _ in range(args.repeat))
    build = min(time_rtnl_build(args.n) for _ in range(args.repeat))
    print(f"  kernel/rtnl.py   {ours * 1e3:9.2f} ms   {ours / args.n * 1e6:8.1f} us/message"
          f"   (bodies alone {build * 1e3:.2f} ms; the rest is commit packing headers and"
          f" reading {args.n} acks)")
    try:
        from pyroute2 import IPBatch  # noqa: F401
    except ImportError:
        print(f"  pyroute2 IPBatch: not available in pyroute2 {pyroute2.__version__}")
        return
    time_ipbatch(KINDS)
    theirs = min(time_ipbatch(args.n) for _ in range(args.repeat))
    print(f"  pyroute2 IPBatch {theirs * 1e3:9.2f} ms   {theirs / args.n * 1e6:8.1f} us/message")
    print(f"  IPBatch / rtnl.py = {theirs / ours:.0f}x"
          f" (IPBatch / rtnl.py bodies alone = {theirs / build:.0f}x)")


if __name__ == "__main__":
    main()
