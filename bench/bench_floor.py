#!/usr/bin/env python3
"""The floor under `netlab up`: what N network namespaces with a veth pair each, on one
bridge, cost on this machine with nothing else (no processes, rules, files or agent).

Uses netlab's own kernel layer (netns.create, the batched rtnetlink writer), the fastest
path it has, so the figure is what bring-up could approach if everything else were free.

Run as root:  .venv/bin/python bench/bench_floor.py [--pods 100 1000]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netlab.kernel import netns  # noqa: E402
from netlab.kernel.rtnl import Batch  # noqa: E402


def floor(pods: int) -> dict[str, float]:
    prefix = f"netlab-floor{os.getpid()}."
    node = prefix + "node"
    names = [f"{prefix}pod{i}" for i in range(pods)]
    t: dict[str, float] = {}
    start = time.perf_counter()
    try:
        netns.create(node, mark="")
        for name in names:
            netns.create(name, mark="")
        t["netns"] = time.perf_counter() - start
        mark = time.perf_counter()
        node_sock = netns.open_rtnl_socket(node)
        try:
            batch = Batch()
            batch.bridge_add("br0")
            batch.commit(node_sock)
            bridge = netns.ifindexes(node, ["br0"])["br0"]
            for first in range(0, pods, 100):
                batch = Batch()
                fds = []
                for i in range(first, min(first + 100, pods)):
                    fd = os.open(netns.netns_path(names[i]), os.O_RDONLY | os.O_CLOEXEC)
                    fds.append(fd)
                    batch.veth_add(f"veth{i:x}", "eth0", fd, master=bridge, up=True)
                batch.commit(node_sock)
                for fd in fds:
                    os.close(fd)
        finally:
            node_sock.close()
        t["veth pairs"] = time.perf_counter() - mark
        mark = time.perf_counter()
        for i, name in enumerate(names):          # the pod side: eth0 up with an address
            sock = netns.open_rtnl_socket(name)
            try:
                index = netns.ifindexes(name, ["eth0"])["eth0"]
                batch = Batch()
                batch.link_set(index, "eth0", up=True)
                batch.addr_add(index, f"10.{(i >> 8) & 255}.{i & 255}.2/16", "eth0")
                batch.commit(sock)
            finally:
                sock.close()
        t["pod side"] = time.perf_counter() - mark
        t["up"] = time.perf_counter() - start
    finally:
        mark = time.perf_counter()
        for name in names + [node]:
            netns.delete(name)
        t["down"] = time.perf_counter() - mark
    return t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, nargs="+", default=[100, 1000])
    args = parser.parse_args()
    for pods in args.pods:
        t = floor(pods)
        print(f"{pods:5d} namespaces + veth pairs: " + ", ".join(f"{k} {v:.2f}s" for k, v in t.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
