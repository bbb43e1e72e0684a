#!/usr/bin/env python3
"""Bring-up benchmark: `up` then `down` of a lab with N pods over 3 nodes, seconds per phase.

--cli times the installed command as a user types it instead, and the lab's memory.
Where Mininet is installed it times `mn --switch lxbr --controller none --topo single,N
--test none` (N hosts on one Linux bridge, up and down) in the same run, a Mininet round
after each netlab round, and prints the ratio of the medians. Each round starts on an idle
machine (settle()). Run as root:  .venv/bin/python bench/bench_up.py [--pods 10 100 300] [--rounds 3]
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



def _busy() -> tuple[int, int]:
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return sum(values) - values[3] - values[4], sum(values)      # (busy, all) jiffies


def settle(limit: float = 60.0) -> None:
    """Wait (at most `limit` s) until the machine is idle: under 10% busy over 0.5 s. A tool's
    teardown leaves the kernel work behind it (Mininet's 1,000 root-namespace links go for
    seconds after mn exits), which the next round, of either tool, would otherwise pay."""
    deadline = time.monotonic() + limit
    busy, total = _busy()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now_busy, now_total = _busy()
        if (now_busy - busy) < 0.10 * max(1, now_total - total):
            return
        busy, total = now_busy, now_total


def netlab_round(pods: int, workdir: Path, dns: bool) -> dict[str, float]:
    lab_dir = workdir / f"lab{pods}"
    lab_dir.mkdir(exist_ok=True)
    (lab_dir / "lab.yaml").write_text(replicated_pods(pods, dns=dns))
    name = f"bench{os.getpid()}"
    timings = engine.Timings()
    settle()
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


NETLAB = str(Path(__file__).resolve().parent.parent / ".venv" / "bin" / "netlab")


def cli_round(pods: int, workdir: Path, dns: bool, nodes: int) -> dict[str, float]:
    """The installed command as a user types it: `netlab up DIR --name N`, then `netlab down N`;
    the lab's memory (PSS of the agent and every process in its namespaces) while it is up."""
    lab_dir = workdir / f"cli{pods}"
    lab_dir.mkdir(exist_ok=True)
    (lab_dir / "lab.yaml").write_text(replicated_pods(pods, nodes=nodes, dns=dns))
    name = f"cli{os.getpid()}"
    settle()
    start = time.perf_counter()
    try:
        proc = subprocess.run([NETLAB, "up", str(lab_dir), "--name", name, "--timeout", "300"],
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise SystemExit(f"netlab up of {pods} pods failed: {proc.stderr.strip().splitlines()[-1:]}")
        up = time.perf_counter() - start
        pss = lab_pss_mb(name)
    finally:
        down_start = time.perf_counter()
        subprocess.run([NETLAB, "down", name], capture_output=True, text=True, timeout=600)
    end = time.perf_counter()
    return {"up": up, "down": end - down_start, "total": end - start, "pss MB": pss,
            "pss/pod MB": pss / pods}


def lab_pss_mb(lab: str) -> float:
    """Proportional set size of the lab's processes: its agent and everything in its namespaces."""
    from netlab.kernel import netns
    from netlab.runtime import agent_client
    inodes = {i for i in (netns.inode(n) for n in engine.lab_namespaces(lab)) if i}
    pids = set(netns.pids_in(inodes)) | set(agent_client.marked_processes(lab))
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
        except (OSError, StopIteration):
            pass
    return total / 1024


def mininet_round(hosts: int) -> float | None:
    if not shutil.which("mn"):
        return None
    settle()
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
    parser.add_argument("--cli", action="store_true",
                        help="time the installed `netlab up`/`netlab down` commands as typed (and memory)")
    parser.add_argument("--nodes", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 1
    if args.cli:
        return cli_main(args)
    print(f"netlab up+down, N pods over 3 nodes{' + kube-dns' if args.dns else ''}, "
          f"median of {args.rounds} rounds (seconds)")
    phases_shown = ["load", "nodes", "pod network", "rules", "agent", "pods", "up", "down", "total"]
    print(f"{'pods':>5} " + " ".join(f"{p:>11}" for p in phases_shown) + f" {'mininet':>9} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for pods in args.pods:
            rounds, mininet = [], []
            for _ in range(args.rounds):         # alternated with Mininet's, as in --cli
                rounds.append(netlab_round(pods, Path(tmp), args.dns))
                if not args.no_mininet:
                    mininet.append(mininet_round(pods))
            median = {p: statistics.median(r.get(p, 0.0) for r in rounds) for p in phases_shown}
            mininet = [m for m in mininet if m]
            mn = statistics.median(mininet) if mininet else None
            ratio = f"{median['total'] / mn:6.2f}" if mn else "     -"
            print(f"{pods:>5} " + " ".join(f"{median[p]:11.3f}" for p in phases_shown)
                  + f" {mn if mn else float('nan'):9.2f} {ratio}", flush=True)
    return 0


def cli_main(args) -> int:
    print(f"`netlab up DIR` + `netlab down NAME` as typed, N pods over {args.nodes} nodes"
          f"{' + kube-dns' if args.dns else ''}, median of {args.rounds} rounds; Mininet "
          f"(mn --switch lxbr --controller none --topo single,N --test none) in the same run, "
          f"its rounds alternating with netlab's")
    shown = ["up", "down", "total", "pss MB", "pss/pod MB"]
    print(f"{'pods':>5} " + " ".join(f"{p:>11}" for p in shown) + f" {'mininet':>9} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for pods in args.pods:
            rounds, mininet = [], []
            # Alternated, so that both tools meet the same moments of a shared machine.
            for _ in range(args.rounds):
                rounds.append(cli_round(pods, Path(tmp), args.dns, args.nodes))
                if not args.no_mininet:
                    mininet.append(mininet_round(pods))
            median = {p: statistics.median(r[p] for r in rounds) for p in shown}
            mininet = [m for m in mininet if m]
            mn = statistics.median(mininet) if mininet else None
            ratio = f"{median['total'] / mn:6.2f}" if mn else "     -"
            print(f"{pods:>5} " + " ".join(f"{median[p]:11.3f}" for p in shown)
                  + f" {mn if mn else float('nan'):9.2f} {ratio}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
