"""kubectl against a lab: `kubectl get pods` on a 300-pod lab next to `netlab get pods` (both
as typed, the installed commands), and the time from `kubectl apply -f` of a Service until
its KUBE-SVC- rule is in every node's nat table.

    sudo .venv/bin/python bench/bench_kubectl.py [--pods 300] [--rounds 7] [--kubectl PATH]

Prints figures; asserts nothing about time.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from labs import replicated_pods  # noqa: E402

from netlab import engine  # noqa: E402

NETLAB = str(Path(sys.executable).parent / "netlab")


def timed(argv: list[str], env: dict) -> float:
    t = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t


def median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.0f} ms (min {min(samples) * 1000:.0f})"


def rules_everywhere(cluster, ip: str) -> bool:
    for node in cluster.nodes:
        out = subprocess.run(["ip", "netns", "exec", node.netns, "iptables-legacy-save", "-t", "nat"],
                             capture_output=True, text=True).stdout
        if f"-d {ip}/32" not in out:
            return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--kubectl", action="append", default=[])
    args = parser.parse_args()
    kubectls = args.kubectl or [k for k in (shutil.which("kubectl"), os.environ.get("NETLAB_KUBECTL_OLD")) if k]
    if not kubectls:
        print("no kubectl: install kubernetes-client (scripts/setup.sh)")
        return 1
    lab = f"bk{os.getpid()}"
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "lab.yaml").write_text(replicated_pods(args.pods))
        t = time.perf_counter()
        cluster = engine.up(tmp, name=lab, wait=120)
        print(f"lab {lab}: {len(cluster.pods)} pods on {len(cluster.nodes)} nodes, up in {time.perf_counter() - t:.1f}s")
        try:
            config = subprocess.run([NETLAB, "kubeconfig", "--lab", lab], capture_output=True, text=True,
                                    check=True).stdout.strip()
            env = dict(os.environ, KUBECONFIG=config)
            for k in kubectls:
                timed([k, "get", "pods"], env)          # discovery cache warm, as for a user's second call
                samples = [timed([k, "get", "pods"], env) for _ in range(args.rounds)]
                version = subprocess.run([k, "version", "--client", "--short"], capture_output=True, text=True,
                                         env=env).stdout.strip().splitlines() or [""]
                print(f"kubectl get pods ({k}, {version[0]}): {median_ms(samples)}")
                samples = [timed([k, "get", "pods", "-o", "json"], env) for _ in range(args.rounds)]
                print(f"kubectl get pods -o json ({k}): {median_ms(samples)}")
            samples = [timed([NETLAB, "get", "pods", "--lab", lab], env) for _ in range(args.rounds)]
            print(f"netlab get pods: {median_ms(samples)}")
            samples = [timed([NETLAB, "get", "pods", "--lab", lab, "-o", "json"], env) for _ in range(args.rounds)]
            print(f"netlab get pods -o json: {median_ms(samples)}")
            waits = []
            for i in range(args.rounds):
                manifest = (f"apiVersion: v1\nkind: Service\nmetadata: {{name: probe{i}}}\nspec:\n"
                            f"  selector: {{app: web}}\n  ports: [{{port: 80, targetPort: 8080}}]\n")
                t = time.perf_counter()
                subprocess.run([kubectls[0], "apply", "-f", "-"], input=manifest, text=True, env=env, check=True,
                               stdout=subprocess.DEVNULL)
                applied = time.perf_counter() - t
                ip = subprocess.run([kubectls[0], "get", "svc", f"probe{i}", "-o", "jsonpath={.spec.clusterIP}"],
                                    capture_output=True, text=True, env=env, check=True).stdout
                while not rules_everywhere(cluster, ip):
                    time.sleep(0.005)
                waits.append((applied, time.perf_counter() - t))
            print(f"kubectl apply -f svc returns: {median_ms([a for a, _ in waits])}; "
                  f"its rules on all {len(cluster.nodes)} nodes: {median_ms([b for _, b in waits])} "
                  f"(the agent syncs every node before it answers)")
        finally:
            engine.teardown(lab)
    return 0


if __name__ == "__main__":
    sys.exit(main())
