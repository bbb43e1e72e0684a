#!/usr/bin/env python3
"""Recovery benchmark: from killing a pod's process (restart in place) or deleting the pod
(its RC makes a replacement) to the service answering from the new process, in seconds.

Run as root:  .venv/bin/python bench/bench_recovery.py [--rounds 5]
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netlab import engine  # noqa: E402
from netlab.kernel import netns  # noqa: E402

LAB = """apiVersion: netlab/v1
kind: Lab
metadata: {name: bench}
spec: {nodes: 2, dns: false}
---
apiVersion: v1
kind: ReplicationController
metadata: {name: web}
spec:
  replicas: 1
  selector: {app: web}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: example/web, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  containers: [{name: c, image: example/client, ports: [{containerPort: 9000}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""
POLL = 0.005          # seconds between connection attempts; each attempt is bounded too


def hostname_via_service(cluster, timeout: float = 0.2) -> str | None:
    ns = cluster.pod_netns(cluster.pod("client"))
    ip = cluster.service("web").cluster_ip

    def ask():
        netns.enter(ns)
        try:
            with socket.create_connection((ip, 80), timeout=timeout) as s:
                s.sendall(b"GET /hostname HTTP/1.0\r\n\r\n")
                s.settimeout(timeout)
                return s.recv(4096).split(b"\r\n\r\n", 1)[1].decode() or None
        except (OSError, IndexError):
            return None
    return netns.in_thread(ask)


def wait_for(predicate, limit: float = 30.0) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < limit:
        if predicate():
            return time.perf_counter() - start
        time.sleep(POLL)
    raise TimeoutError("no recovery within the limit")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 1
    name = f"rec{os.getpid()}"
    restarts, replacements = [], []
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "lab.yaml").write_text(LAB)
        try:
            cluster = engine.up(tmp, name=name)
            for _ in range(args.rounds):
                key = next(k for k in cluster.pods if k.startswith("default/web-"))
                st = engine.pod_status(name)[key]["containers"][0]
                before = st["restartCount"]
                os.kill(st["pid"], signal.SIGKILL)
                start = time.perf_counter()
                wait_for(lambda: engine.pod_status(name)[key]["containers"][0]["restartCount"] > before
                         and hostname_via_service(cluster) is not None)
                restarts.append(time.perf_counter() - start)

                old = key.split("/", 1)[1]
                start = time.perf_counter()
                engine.delete(name, "pods", old)
                cluster = engine.load(name)
                wait_for(lambda: hostname_via_service(cluster) not in (None, old))
                replacements.append(time.perf_counter() - start)
        finally:
            engine.teardown(name)
    for label, values in (("kill -> restarted in place, serving", restarts),
                          ("delete -> RC replacement serving", replacements)):
        print(f"{label:<40} median {statistics.median(values):.3f} s  "
              f"min {min(values):.3f}  max {max(values):.3f}  (n={len(values)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
