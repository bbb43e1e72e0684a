#!/usr/bin/env python3
"""Verify benchmark: the full check catalog on the guestbook lab, and `verify --matrix` on a
lab of N pods over 3 nodes (N*(N-1) pod pairs, plus pod -> service), seconds for each.

Where Mininet is installed it also times `mn --switch lxbr --controller none --topo single,N
--test pingall` (N hosts on one Linux bridge, every pair pinged, then torn down by mn
itself) for comparison. `mn -c` is never run: it kills every ping and controller on the
machine and deletes any link named like *-ethN. Figures only, no assertions.
Run as root:  .venv/bin/python bench/bench_verify.py [--pods 30] [--rounds 3] [--no-mininet]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from netlab import engine  # noqa: E402
from netlab.probe import catalog, matrix, runner  # noqa: E402
from netlab.probe.lab import load_settled  # noqa: E402
from netlab.probe.result import Status  # noqa: E402
from bench.labs import replicated_pods  # noqa: E402



def catalog_rounds(rounds: int) -> None:
    name = f"bv{os.getpid()}"
    engine.up(REPO / "labs" / "guestbook", name=name, wait=120)
    try:
        view, settled = load_settled(name, timeout=10)
        print(f"guestbook lab: {len(view.pods)} pods on {len(view.cluster.nodes)} nodes"
              + ("" if settled else " (rules not settled after 10s)"))
        totals, last = [], []
        for _ in range(rounds):
            started = time.perf_counter()
            last = runner.run(view, catalog.select())
            totals.append(time.perf_counter() - started)
        for r in last:
            print(f"  {r.id:<22} {r.status.value:<5} {r.seconds:6.3f}s")
        counts = {s: sum(1 for r in last if r.status == s) for s in Status}
        print(f"full catalog ({len(last)} checks: {counts[Status.PASS]} pass, {counts[Status.FAIL]} fail, "
              f"{counts[Status.NA]} n/a): median {statistics.median(totals):.2f}s over {rounds} round(s) "
              f"[{', '.join(f'{t:.2f}' for t in totals)}]")
    finally:
        engine.teardown(name)


def matrix_rounds(pods: int, rounds: int, workdir: Path) -> None:
    lab_dir = workdir / "pods"
    lab_dir.mkdir()
    (lab_dir / "lab.yaml").write_text(replicated_pods(pods))
    name = f"bm{os.getpid()}"
    engine.up(lab_dir, name=name, wait=120)
    try:
        view, _ = load_settled(name, timeout=10)
        times = []
        for _ in range(rounds):
            m = matrix.run(view)
            times.append(m.seconds)
        ok_p, all_p = m.counts(False)
        ok_s, all_s = m.counts(True)
        print(f"matrix, {len(view.pods)} pods over {len(view.cluster.nodes)} nodes: pod->pod {ok_p}/{all_p} ok, "
              f"pod->service {ok_s}/{all_s} ok, {m.workers} threads: median {statistics.median(times):.2f}s "
              f"over {rounds} round(s) [{', '.join(f'{t:.2f}' for t in times)}]")
    finally:
        engine.teardown(name)


def mininet_pingall(hosts: int) -> None:
    if not shutil.which("mn"):
        print("mininet: `mn` not installed, skipped")
        return
    cmd = ["mn", "--switch", "lxbr", "--controller", "none", "--topo", f"single,{hosts}", "--test", "pingall"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - started
    output = proc.stdout + proc.stderr
    found = re.search(r"Results: (\d+)% dropped \((\d+)/(\d+) received\)", output)
    result = f"{found.group(2)}/{found.group(3)} received" if found else f"exit {proc.returncode}, no result line"
    own = re.search(r"completed in ([\d.]+) seconds", output)
    print(f"mininet: `{' '.join(cmd)}`: {result} in {seconds:.2f}s wall"
          + (f" ({own.group(1)}s by its own clock, set-up and tear-down included)" if own else ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-mininet", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root: it builds labs", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
        catalog_rounds(args.rounds)
        matrix_rounds(args.pods, args.rounds, Path(tmp))
    if not args.no_mininet:
        mininet_pingall(args.pods)
    return 0


if __name__ == "__main__":
    sys.exit(main())
