"""How long kube-proxy-style syncs take: 1,000 services x 5 endpoints on one node.

Run as root:  /tmp/venvprobe/bin/python bench/bench_rules.py [--services N] [--endpoints M]

Renders and applies the rules in a namespace the bench creates (and always removes), next to
a bare `iptables-legacy-restore --noflush` of the same text in a second namespace, then
changes one endpoint and times a partial sync (only that service's chains rewritten, as
kube-proxy does) against a full one. Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import secrets
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netlab.kernel.iptables import RESTORE, ensure_jumps, require_netns, save, sync_node  # noqa: E402
from netlab.model.cluster import Cluster, make_nodes  # noqa: E402
from netlab.model.config import parse_lab  # noqa: E402
from netlab.model.objects import parse_object  # noqa: E402
from netlab.model.services import Endpoint  # noqa: E402
from netlab.plan.kubeproxy import node_chains, render_node_rules  # noqa: E402


def build(services: int, endpoints: int) -> tuple[Cluster, dict]:
    cfg = parse_lab({"apiVersion": "netlab/v1", "kind": "Lab", "metadata": {"name": "bench"},
                     "spec": {"nodes": 2}}, default_name="bench")
    cluster = Cluster(config=cfg, nodes=make_nodes(cfg), seed=1)
    cluster.admit([parse_object({"apiVersion": "v1", "kind": "Service",
                                 "metadata": {"name": f"svc-{i:04d}", "namespace": "default"},
                                 "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}},
                                "bench") for i in range(services)])
    eps = {}
    for i in range(services):
        n = i * endpoints
        eps[f"default/svc-{i:04d}"] = {"http": [
            Endpoint(f"10.244.{(n + k) // 250 % 256}.{(n + k) % 250 + 2}", 8080, "", "node1")
            for k in range(endpoints)]}
    return cluster, eps


@contextmanager
def namespace(role: str) -> Iterator[str]:
    name = f"netlab-bench{secrets.token_hex(4)}.{role}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def bare_restore(netns: str, text: str) -> None:
    cmd = ["nsenter", f"--net={require_netns(netns)}", "--", RESTORE, "-w", "--noflush"]
    subprocess.run(cmd, input=text, text=True, check=True, capture_output=True)


def nat_rules(netns: str) -> list[str]:
    return sorted(line for line in save(netns, "nat").splitlines() if line.startswith(("-A", ":")))


def one_round(cluster: Cluster, eps: dict, figures: dict[str, list[float]]) -> bool:
    """Time every step once in two fresh namespaces; True if partial and full syncs agree."""
    def record(name: str, fn: Callable[[], object]) -> object:
        seconds, result = timed(fn)
        figures.setdefault(name, []).append(seconds)
        return result

    node = cluster.nodes[0]
    text = record("render, full", lambda: render_node_rules(cluster, node, eps))
    chains = node_chains(cluster, node, eps)
    with namespace("bare") as bare, namespace("netlab") as ours:
        record("bare restore, empty tables", lambda: bare_restore(bare, text))
        record("sync_node, empty tables", lambda: sync_node(ours, text))
        record("bare restore, same rules again", lambda: bare_restore(bare, text))
        record("sync_node, same rules again", lambda: sync_node(ours, text))

        ensure_jumps(bare)      # untimed: both namespaces now hold the same rules and jumps
        # One endpoint of one service moves to another pod.
        key = f"default/svc-{len(eps) // 2:04d}"
        moved = {**eps, key: {"http": [Endpoint("10.250.0.2", 8080, "", "node2"), *eps[key]["http"][1:]]}}
        partial = record("render, one endpoint changed, partial", lambda: render_node_rules(
            cluster, node, moved, previous_chains=chains, changed={key}))
        record("sync_node, one endpoint changed, partial", lambda: sync_node(ours, partial, jumps=()))
        full = record("render, one endpoint changed, full", lambda: render_node_rules(
            cluster, node, moved, previous_chains=chains))
        record("sync_node, one endpoint changed, full", lambda: sync_node(bare, full))
        return nat_rules(ours) == nat_rules(bare)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5, help="repeat and print medians")
    args = parser.parse_args()

    cluster, eps = build(args.services, args.endpoints)
    text = render_node_rules(cluster, cluster.nodes[0], eps)
    rules = sum(1 for line in text.splitlines() if line.startswith("-A "))
    print(f"{args.services} services x {args.endpoints} endpoints on one node: {rules} rules, "
          f"{len(node_chains(cluster, cluster.nodes[0], eps))} nat chains, {len(text) / 1e6:.1f} MB restore input; "
          f"median (min-max) of {args.rounds} rounds")
    figures: dict[str, list[float]] = {}
    agree = all([one_round(cluster, eps, figures) for _ in range(args.rounds)])
    med = {name: statistics.median(values) for name, values in figures.items()}
    for name, values in figures.items():
        print(f"  {name:42s} {med[name]:6.3f} s  ({min(values):.3f}-{max(values):.3f})")
    for case in ("empty tables", "same rules again"):
        print(f"  full sync / bare restore, {case:17s} {med['sync_node, ' + case] / med['bare restore, ' + case]:.2f}x")
    change = med["render, one endpoint changed, partial"] + med["sync_node, one endpoint changed, partial"]
    print(f"  one endpoint changed, render + apply: partial {change:.3f} s, full "
          f"{med['render, one endpoint changed, full'] + med['sync_node, one endpoint changed, full']:.3f} s")
    print(f"  partial and full syncs leave the same nat table: {agree}")


if __name__ == "__main__":
    main()
