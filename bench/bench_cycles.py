#!/usr/bin/env python3
"""Up/down cycles through the installed command, as a user types them, with a leak check
after every cycle: the lab's namespaces, its processes, /run/netlab/<lab>, /etc/netns files.

Run as root:  .venv/bin/python bench/bench_cycles.py [--cycles 30] [--lab labs/guestbook]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from netlab import state  # noqa: E402
from netlab.model import names  # noqa: E402
from netlab.runtime.agent_client import marked_processes  # noqa: E402

NETLAB = str(ROOT / ".venv" / "bin" / "netlab")


def leftovers(lab: str) -> list[str]:
    found = [f"netns {n}" for n in sorted(os.listdir("/run/netns")) if n.startswith(f"{names.PREFIX}{lab}.")] \
        if os.path.isdir("/run/netns") else []
    found += [f"process {pid}" for pid in marked_processes(lab)]
    if state.lab_dir(lab).exists():
        found.append(f"dir {state.lab_dir(lab)}")
    if state.ETC_NETNS.is_dir():
        found += [f"etc {p.name}" for p in state.ETC_NETNS.glob(f"{names.PREFIX}{lab}.*")]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=30)
    parser.add_argument("--lab", default=str(ROOT / "labs" / "guestbook"))
    args = parser.parse_args()
    lab = f"cycle{os.getpid()}"
    ups, downs, leaks = [], [], 0
    for i in range(args.cycles):
        t = time.perf_counter()
        proc = subprocess.run([NETLAB, "up", args.lab, "--name", lab], capture_output=True, text=True, timeout=180)
        ups.append(time.perf_counter() - t)
        if proc.returncode != 0:
            print(f"cycle {i}: up failed: {proc.stderr.strip()[-300:]}")
        t = time.perf_counter()
        subprocess.run([NETLAB, "down", lab], capture_output=True, text=True, timeout=120)
        downs.append(time.perf_counter() - t)
        left = leftovers(lab)
        if left:
            leaks += 1
            print(f"cycle {i}: left behind: {', '.join(left[:5])}")
    cycle = [u + d for u, d in zip(ups, downs)]
    print(f"{args.cycles} cycles of `netlab up {os.path.relpath(args.lab)}` + `netlab down`: "
          f"median up {statistics.median(ups):.2f}s, down {statistics.median(downs):.2f}s, "
          f"cycle {statistics.median(cycle):.2f}s (min {min(cycle):.2f}, max {max(cycle):.2f}); "
          f"cycles with leftovers: {leaks}")
    return 1 if leaks else 0


if __name__ == "__main__":
    sys.exit(main())
