#!/usr/bin/env python3
"""The calico backend's figures: BGP route propagation, bring-up, NetworkPolicy cost.

Run as root:  .venv/bin/python bench/bench_calico.py [--pods 20] [--up-pods 100] [--up-rounds 2]
              [--policies 100] [--seconds 5]

1. Route propagation: a lab of 5 nodes with blockSize 32 (every pod is a block of its own,
   so every new pod is a new BGP route; with /26 blocks only a block's first pod is), once
   with the full node-to-node mesh and once with node1 as route reflector. For each of
   --pods pods, created one at a time on a node other than node1 (round robin), the time
   from the API call that creates it to its /32 learned from BIRD (proto bird) on every
   other node, read with netlink every 5 ms; median and maximum.
2. Bring-up: `up` of --up-pods pods over 3 nodes with calico and with vxlan (median of
   --up-rounds, alternating), in-process; for calico it includes `up`'s wait for BGP.
3. Policy: a calico lab of 2 nodes and --up-pods pods (plus an iperf3 client and server);
   the time to apply --policies NetworkPolicies in one request (each selects one pod by
   name label and allows one other, so every pod ends up isolated), then to delete them one
   by one; and iperf3 TCP throughput client -> server across nodes without policy and with
   the server isolated by the policies (every packet after the first passes Felix's
   ESTABLISHED accept; the first walks the chains).
Numbers are printed, never asserted. All traffic stays inside the labs' namespaces.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netlab import engine  # noqa: E402
from netlab.kernel import netns  # noqa: E402
from netlab.model.objects import parse_object  # noqa: E402
from bench.bench_backends import iperf  # noqa: E402
from bench.labs import replicated_pods  # noqa: E402

RTPROT_BIRD = 12


def lab_text(nodes: int, calico: str, backend: str = "calico") -> str:
    return (f"apiVersion: netlab/v1\nkind: Lab\nmetadata: {{name: bench}}\n"
            f"spec: {{nodes: {nodes}, dns: false, backend: {backend}, calico: {calico}}}\n")


def pod(name: str, node: str, labels: dict | None = None, port: int = 8080):
    return parse_object({"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"name": name, "labels": labels or {"app": "bench"}},
                         "spec": {"nodeName": node, "containers": [
                             {"name": "c", "image": "netexec", "ports": [{"containerPort": port}]}]}}, "bench")


def bird_routes(handles: dict, node: str) -> set[str]:
    return {f"{r.get_attr('RTA_DST')}/{r['dst_len']}" for r in handles[node].get_routes(family=socket.AF_INET)
            if r["proto"] == RTPROT_BIRD}


def propagation(workdir: Path, pods: int, rr: bool) -> tuple[list[float], list[float]]:
    lab_dir = workdir / ("rr" if rr else "mesh")
    lab_dir.mkdir(exist_ok=True)
    (lab_dir / "lab.yaml").write_text(lab_text(5, "{blockSize: 32" + (", routeReflectors: [node1]}" if rr else "}")))
    name = f"bp{os.getpid()}{'r' if rr else 'm'}"
    times, calls = [], []
    try:
        cluster = engine.up(lab_dir, name=name, wait=60)
        handles = {n.name: netns.open_netlink(n.netns) for n in cluster.nodes}
        try:
            for i in range(pods):
                node = cluster.nodes[1 + i % 4].name
                start = time.perf_counter()
                engine.apply(name, [pod(f"p{i}", node)])
                calls.append(time.perf_counter() - start)
                ip = engine.load(name).pod(f"p{i}").pod_ip + "/32"
                others = [n.name for n in cluster.nodes if n.name != node]
                deadline = time.monotonic() + 30
                while not all(ip in bird_routes(handles, o) for o in others):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{ip} not on every node after 30 s")
                    time.sleep(0.005)
                times.append(time.perf_counter() - start)
        finally:
            for h in handles.values():
                h.close()
    finally:
        engine.teardown(name)
    return times, calls


def bring_up(workdir: Path, pods: int, rounds: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"calico": [], "vxlan": []}
    lab_dir = workdir / "up"
    lab_dir.mkdir(exist_ok=True)
    (lab_dir / "lab.yaml").write_text(replicated_pods(pods))
    for r in range(rounds):
        for backend in (("calico", "vxlan") if r % 2 == 0 else ("vxlan", "calico")):
            name = f"bu{os.getpid()}"
            try:
                start = time.perf_counter()
                engine.up(lab_dir, name=name, backend=backend, wait=120)
                out[backend].append(time.perf_counter() - start)
            finally:
                engine.teardown(name)
            print(f"  round {r + 1}: up {pods} pods {backend:6} {out[backend][-1]:.2f} s", flush=True)
    return out


def policy(workdir: Path, pods: int, count: int, seconds: int) -> dict:
    lab_dir = workdir / "policy"
    lab_dir.mkdir(exist_ok=True)
    (lab_dir / "lab.yaml").write_text(lab_text(2, "{}"))
    name = f"bn{os.getpid()}"
    out = {}
    try:
        engine.up(lab_dir, name=name, wait=60)
        objs = [pod(f"w{i}", f"node{1 + i % 2}", {"app": "bench", "id": f"w{i}"}) for i in range(pods)]
        objs += [pod("client", "node1", {"role": "client"}), pod("server", "node2", {"id": "server"})]
        engine.apply(name, objs)
        cluster = engine.load(name)
        cns, sns = cluster.pod_netns(cluster.pod("client")), cluster.pod_netns(cluster.pod("server"))
        sip = cluster.pod("server").pod_ip
        out["iperf_none"] = iperf(cns, sns, sip, seconds)["gbps"]
        targets = [f"w{i}" for i in range(pods)] + ["server"]
        pols = []
        for i in range(count):
            target = targets[i % len(targets)]
            peer = "client" if target == "server" else targets[(i + 1) % len(targets)]
            peer_sel = {"role": "client"} if peer == "client" else {"id": peer}
            pols.append(parse_object({
                "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": f"np{i}"},
                "spec": {"podSelector": {"matchLabels": {"id": target}},
                         "ingress": [{"from": [{"podSelector": {"matchLabels": peer_sel}}],
                                      "ports": [{"port": 5201 if target == "server" else 8080}]}]}}, "bench"))
        if not any(p.pod_selector.matches({"id": "server"}) for p in pols):
            pols.append(parse_object({
                "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "server"},
                "spec": {"podSelector": {"matchLabels": {"id": "server"}},
                         "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}]}}, "bench"))
        start = time.perf_counter()
        engine.apply(name, pols)
        out["apply_all"] = time.perf_counter() - start
        out["policies"] = len(pols)
        out["iperf_policy"] = iperf(cns, sns, sip, seconds)["gbps"]
        start = time.perf_counter()
        for p in pols:
            engine.delete(name, "networkpolicies", p.meta.name)
        out["delete_each"] = (time.perf_counter() - start) / len(pols)
        out["pods"] = len(cluster.pods)
    finally:
        engine.teardown(name)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pods", type=int, default=20)
    parser.add_argument("--up-pods", type=int, default=100)
    parser.add_argument("--up-rounds", type=int, default=2)
    parser.add_argument("--policies", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--only", choices=("propagation", "up", "policy"), default=None)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_calico: run as root", file=sys.stderr)
        return 1
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.only in (None, "propagation"):
            print(f"route propagation, 5 nodes, blockSize 32, {args.pods} pods (API call -> /32 proto bird "
                  f"on the 4 other nodes):", flush=True)
            for rr in (False, True):
                t, calls = propagation(workdir, args.pods, rr)
                label = "route reflector node1" if rr else "full mesh            "
                print(f"  {label}  median {statistics.median(t) * 1000:7.1f} ms   max {max(t) * 1000:7.1f} ms"
                      f"; API call (pod wired, rules synced) {statistics.median(calls) * 1000:.1f} ms, then BGP "
                      f"{statistics.median(a - b for a, b in zip(t, calls)) * 1000:.1f} ms (medians)", flush=True)
        if args.only in (None, "up"):
            print(f"bring-up, {args.up_pods} pods over 3 nodes (in-process engine.up):", flush=True)
            ups = bring_up(workdir, args.up_pods, args.up_rounds)
            for backend, t in ups.items():
                print(f"  {backend:6}  median {statistics.median(t):.2f} s over {len(t)} rounds", flush=True)
        if args.only in (None, "policy"):
            res = policy(workdir, args.up_pods, args.policies, args.seconds)
            print(f"policy, calico 2 nodes, {res['pods']} pods:", flush=True)
            print(f"  apply {res['policies']} NetworkPolicies in one request  {res['apply_all']:.2f} s", flush=True)
            print(f"  delete them one by one                      {res['delete_each'] * 1000:.0f} ms each", flush=True)
            print(f"  iperf3 client -> server, no policy           {res['iperf_none']:.2f} Gbit/s", flush=True)
            print(f"  iperf3 client -> server, server isolated     {res['iperf_policy']:.2f} Gbit/s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
