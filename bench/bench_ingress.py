"""Layer 7 vs layer 4 from outside: requests/s and latency through the Ingress controller
(client -> node:30080 -> kube-proxy -> nginx pod -> backend pod) against straight to a
NodePort of the same backend (client -> node:30090 -> kube-proxy -> backend pod), and how
long a new endpoint takes to be routed by nginx after its pod turned ready.

Run as root:  .venv/bin/python bench/bench_ingress.py [--seconds 5] [--connections 16] [--rounds 2]

Builds one lab (2 nodes, 2 echoserver pods behind a NodePort Service and an Ingress), loads it
with wrk (bounded: --seconds per run, from the outside client's namespace, so all traffic
stays inside the lab), alternating the two paths, and prints each run and the medians.
Then scales the backend up --reloads times and reports, per new pod: the agent's reload
(SIGHUP to new nginx workers), and the time from the pod showing Ready in status.json to
the first request through the Ingress that nginx sent to it. The lab is always removed.
"""
from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netlab import engine, state  # noqa: E402
from netlab.model import names  # noqa: E402

LAB = """
apiVersion: netlab/v1
kind: Lab
metadata: {name: bench}
spec: {nodes: 2}
---
apiVersion: v1
kind: ReplicationController
metadata: {name: echo}
spec:
  replicas: 2
  selector: {app: echo}
  template:
    metadata: {labels: {app: echo}}
    spec:
      containers: [{name: echo, image: registry.k8s.io/echoserver:1.10, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  type: NodePort
  selector: {app: echo}
  ports: [{port: 80, targetPort: 8080, nodePort: 30090}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: echo}
spec:
  rules:
  - host: echo.example.net
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: echo, port: {number: 80}}}}
"""
NODE = "192.168.56.11"
TARGETS = {"ingress": (30080, "echo.example.net"), "nodeport": (30090, None)}


def wrk(lab: str, port: int, host, seconds: int, connections: int) -> dict:
    cmd = ["ip", "netns", "exec", names.client_netns(lab), "wrk", "-t2", f"-c{connections}", f"-d{seconds}s",
           "--timeout", "5s", "--latency"]
    if host:
        cmd += ["-H", f"Host: {host}"]
    out = subprocess.run(cmd + [f"http://{NODE}:{port}/"], capture_output=True, text=True,
                         timeout=seconds + 30, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {p: _ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": lat["50"], "p90": lat["90"], "p99": lat["99"],
            "non2xx": int(errors.group(1)) if errors else 0}


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def hostname_through_ingress(lab: str) -> str:
    out = subprocess.run(["ip", "netns", "exec", names.client_netns(lab), "curl", "-s", "--max-time", "2",
                          "-H", "Host: echo.example.net", f"http://{NODE}:30080/"],
                         capture_output=True, text=True, timeout=10).stdout
    m = re.search(r"^Hostname: (\S+)", out, re.M)
    return m.group(1) if m else ""


def reload_run(lab: str, replicas: int) -> tuple[float, float]:
    """Scale to `replicas`; (agent's reload seconds, pod Ready -> routed seconds)."""
    before = {p for p in engine.load(lab).pods if p.startswith("default/echo-")}
    engine.scale(lab, "echo", replicas)
    new = next(iter({p for p in engine.load(lab).pods if p.startswith("default/echo-")} - before))
    name = new.split("/", 1)[1]
    ready_at = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if ready_at is None and engine.pod_status(lab).get(new, {}).get("ready"):
            ready_at = time.monotonic()
        if ready_at is not None and hostname_through_ingress(lab) == name:
            routed = time.monotonic() - ready_at
            took = (state.read_json(state.lab_dir(lab) / "ingress-reload.json") or {}).get("seconds")
            return float(took or 0.0), routed
        time.sleep(0.002)
    raise SystemExit(f"{name} was never routed through the ingress")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--reloads", type=int, default=3)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("bench_ingress: wrk is not installed (scripts/setup.sh installs it)")
    lab = "bi" + uuid.uuid4().hex[:6]
    src = Path(tempfile.mkdtemp())
    (src / "lab.yaml").write_text(LAB)
    try:
        engine.up(src, name=lab, wait_ready=True)
        for _ in range(50):                       # nginx has its endpoints once both pods are ready
            if hostname_through_ingress(lab):
                break
            time.sleep(0.1)
        runs: dict[str, list[dict]] = {k: [] for k in TARGETS}
        print(f"wrk -t2 -c{args.connections} -d{args.seconds}s from the outside client to {NODE}, "
              f"{args.rounds} rounds, alternating")
        for r in range(args.rounds):
            for kind, (port, host) in TARGETS.items():
                res = wrk(lab, port, host, args.seconds, args.connections)
                runs[kind].append(res)
                print(f"  round {r + 1} {kind:8s} :{port}  {res['rps']:8.0f} req/s  p50 {res['p50']:.2f} ms  "
                      f"p90 {res['p90']:.2f} ms  p99 {res['p99']:.2f} ms  non-2xx {res['non2xx']}")
        med = {k: {m: statistics.median(r[m] for r in v) for m in ("rps", "p50", "p90", "p99")}
               for k, v in runs.items()}
        for kind, m in med.items():
            print(f"median {kind:8s}  {m['rps']:8.0f} req/s  p50 {m['p50']:.2f} ms  p90 {m['p90']:.2f} ms  "
                  f"p99 {m['p99']:.2f} ms")
        print(f"ingress/nodeport: {med['ingress']['rps'] / med['nodeport']['rps']:.2f}x the requests/s, "
              f"+{med['ingress']['p50'] - med['nodeport']['p50']:.2f} ms at p50")
        reloads, routed = [], []
        for i in range(args.reloads):
            took, after = reload_run(lab, 3 + i)
            reloads.append(took)
            routed.append(after)
            print(f"  scale to {3 + i}: nginx reload {took * 1000:.1f} ms, pod Ready -> routed through the "
                  f"ingress {after * 1000:.1f} ms")
        print(f"median reload {statistics.median(reloads) * 1000:.1f} ms, pod Ready -> routed "
              f"{statistics.median(routed) * 1000:.1f} ms")
    finally:
        engine.teardown(lab)
        shutil.rmtree(src, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
