#!/usr/bin/env python3
"""Concurrency hammer: parallel loops of the installed `netlab` command (scale, delete pod,
apply, delete svc) against one lab for a while, then an audit of what the kernel holds
against the lab's state: orphan namespaces and veths, stale or missing kube-proxy chains.
Every figure printed; the audit must come out empty.

Run as root:  .venv/bin/python bench/bench_hammer.py [--seconds 60] [--workers 4]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.labs import replicated_pods  # noqa: E402
from netlab import engine  # noqa: E402
from netlab.audit import audit  # noqa: E402

NETLAB = str(ROOT / ".venv" / "bin" / "netlab")
EXTRA_SVC = """apiVersion: v1
kind: Service
metadata: {name: extra}
spec:
  selector: {app: web}
  ports: [{port: 81, targetPort: 8080}]
"""


def worker(lab: str, seconds: float, seed: int, svc_file: str) -> collections.Counter:
    """One loop of CLI commands as a user types them; returns outcomes by verb and exit code."""
    rnd = random.Random(seed)
    counts: collections.Counter = collections.Counter()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        verb = rnd.choice(["scale", "delete-pod", "apply", "delete-svc"])
        if verb == "scale":
            argv = ["scale", "rc", "web", "--replicas", str(rnd.randint(1, 6))]
        elif verb == "delete-pod":
            pods = engine.load(lab).pods
            web = [k.split("/", 1)[1] for k in pods if k.startswith("default/web-")]
            if not web:
                continue
            argv = ["delete", "pod", rnd.choice(web)]
        elif verb == "apply":
            argv = ["apply", "-f", svc_file]
        else:
            argv = ["delete", "svc", "extra"]
        proc = subprocess.run([NETLAB, *argv, "--lab", lab], capture_output=True, text=True, timeout=120)
        # A pod or Service another loop deleted first is a correct "not found" (exit 3).
        counts[(verb, proc.returncode)] += 1
        if proc.returncode not in (0, 3):
            print(f"  {' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()[:200]}", flush=True)
    return counts


def hammer(lab: str, seconds: float, workers: int) -> collections.Counter:
    svc = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    svc.write(EXTRA_SVC)
    svc.close()
    try:
        pids = []
        for i in range(workers):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                code = 1
                try:
                    counts = worker(lab, seconds, i, svc.name)
                    os.write(w, json.dumps({f"{v} {c}": n for (v, c), n in counts.items()}).encode())
                    code = 0
                finally:
                    os._exit(code)
            os.close(w)
            pids.append((pid, r))
        total: collections.Counter = collections.Counter()
        for pid, r in pids:
            data = b""
            while chunk := os.read(r, 65536):
                data += chunk
            os.close(r)
            os.waitpid(pid, 0)
            for key, n in (json.loads(data) if data else {}).items():
                verb, code = key.split()
                total[(verb, int(code))] += n
        return total
    finally:
        os.unlink(svc.name)


def settled_audit(lab: str, timeout: float = 30.0) -> dict:
    """The audit once pods have settled (every pod serving), or the last one at the timeout."""
    from netlab.runtime import agent_client
    deadline = time.monotonic() + timeout
    while True:
        cluster = engine.load(lab)
        pods = agent_client.live_status(lab)["pods"]
        ready = {k for k, st in pods.items() if st.get("ready")}
        settled = set(pods) == set(cluster.pods) and ready == set(cluster.pods)
        found = audit(cluster, ready)
        if (settled and not any(found.values())) or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--pods", type=int, default=3)
    args = parser.parse_args()
    lab = f"hammer{os.getpid()}"
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "lab.yaml").write_text(replicated_pods(args.pods, nodes=2))
        engine.up(tmp, name=lab)
        try:
            started = time.monotonic()
            counts = hammer(lab, args.seconds, args.workers)
            elapsed = time.monotonic() - started
            found = settled_audit(lab)
        finally:
            engine.teardown(lab)
    ops = sum(counts.values())
    print(f"{args.workers} parallel loops of the installed netlab command for {elapsed:.1f}s: "
          f"{ops} commands ({ops / elapsed:.1f}/s)")
    for (verb, code), n in sorted(counts.items()):
        print(f"  {verb:<11} exit {code}: {n}")
    for what, items in found.items():
        print(f"  {what}: {len(items)}" + (f" ({', '.join(items[:5])})" if items else ""))
    bad = sum(n for (verb, code), n in counts.items() if code not in (0, 3))
    return 1 if bad or any(found.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
