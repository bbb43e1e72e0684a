#!/usr/bin/env python3
"""Bring-up benchmark: `up` then `down` of a lab with N pods over 3 nodes, seconds per phase.

Where Mininet is installed it times `mn --switch lxbr --controller none --topo single,N
--test none` (N hosts on one Linux bridge, up and down) in the same run, and prints the
ratio. Run as root:  .venv/bin/python bench/bench_up.py [--pods 10 100 300] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netlab import engine  # noqa: E402
from bench.labs import replicated_pods  # noqa: E402



def netlab_round(pods: int, workdir: Path, dns: bool) -> dict[str, float]:
    lab_dir = workdir / f"lab{pods}"
    lab_dir.mkdir(exist_ok=True)
    (lab_dir / "lab.yaml").write_text(replicated_pods(pods, dns=dns))
    name = f"bench{os.getpid()}"
    timings = engine.Timings()
    start = time.perf_counter()
    try:
        engine.up(lab_dir, name=name, timings=timings, wait=120)
        up_done = time.perf_counter()
    finally:
        down_start = time.perf_counter()
        engine.teardown(name)
    end = time.perf_counter()
    phases = dict(timings.phases)
    phases["up"] = up_done - start
    phases["down"] = end - down_start
    phases["total"] = end - start
    return phases


def mininet_round(hosts: int) -> float | None:
    if not shutil.which("mn"):
        return None
    start = time.perf_counter()
    result = subprocess.run(["mn", "--switch", "lxbr", "--controller", "none", "--topo", f"single,{hosts}",
                             "--test", "none"], capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        print(f"  mininet failed: {result.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, nargs="+", default=[10, 100, 300])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per size; the median is shown")
    parser.add_argument("--no-mininet", action="store_true")
    parser.add_argument("--dns", action="store_true",
                        help="include the kube-dns add-on (one more pod; Mininet has no such thing)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 1
    print(f"netlab up+down, N pods over 3 nodes{' + kube-dns' if args.dns else ''}, "
          f"median of {args.rounds} rounds (seconds)")
    phases_shown = ["load", "nodes", "pod network", "rules", "agent", "pods", "up", "down", "total"]
    print(f"{'pods':>5} " + " ".join(f"{p:>11}" for p in phases_shown) + f" {'mininet':>9} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for pods in args.pods:
            rounds = [netlab_round(pods, Path(tmp), args.dns) for _ in range(args.rounds)]
            median = {p: statistics.median(r.get(p, 0.0) for r in rounds) for p in phases_shown}
            mn = None if args.no_mininet else mininet_round(pods)
            ratio = f"{median['total'] / mn:6.2f}" if mn else "     -"
            print(f"{pods:>5} " + " ".join(f"{median[p]:11.3f}" for p in phases_shown)
                  + f" {mn if mn else float('nan'):9.2f} {ratio}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
