#!/usr/bin/env python3
"""Cross-node pod traffic by backend: flannel's udp (flannel0 + flanneld) vs vxlan vs host-gw.

Run as root:  .venv/bin/python bench/bench_backends.py [--seconds 5] [--rounds 2] [--rtts 1000]
              [--up-pods 100] [--up-rounds 3]

For each backend, one lab of 2 nodes with a client pod on node1 and a server pod on node2
(real `netlab up`, removed afterwards). Rounds alternate the backends. Per backend:
  - iperf3 TCP throughput, client pod -> server pod (iperf3 run in the pods' namespaces);
  - CPU per Gbit/s: busy CPU time of the whole machine (/proc/stat: user+system+irq+softirq,
    all cores) during the iperf3 run, per Gbit transferred, i.e. cores busy per Gbit/s. This
    counts iperf3, the kernel's forwarding and, for udp, both flanneld; it also counts whatever
    else runs on the machine, so the load average is printed with it. flanneld's own CPU
    (both nodes', from /proc/<pid>/stat) is shown apart;
  - latency: N request/response round trips (64 bytes each way) over one TCP connection
    (TCP_NODELAY), each bounded by a 1 s timeout; median and 99th percentile.
Then bring-up: `up` of --up-pods pods over 3 nodes with udp and with vxlan (median of
--up-rounds), and for udp how long after `up` began every flanneld was forwarding.
All traffic stays inside the labs' namespaces; every loop is bounded in count and time.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netlab import engine, state  # noqa: E402
from netlab.kernel import netns  # noqa: E402
from bench.labs import replicated_pods  # noqa: E402

BACKENDS = ("udp", "vxlan", "host-gw")
IPERF_PORT = 5201
ECHO_PORT = 7007
LAB = """apiVersion: netlab/v1
kind: Lab
metadata: {name: bench}
spec: {nodes: 2, dns: false}
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec: {nodeName: node1, containers: [{name: c, image: netexec, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: server}
spec: {nodeName: node2, containers: [{name: c, image: netexec, ports: [{containerPort: 8080}]}]}
"""


def busy_jiffies() -> int:
    """All cores' busy time (user nice system irq softirq steal), in clock ticks."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
    return user + nice + system + irq + softirq + steal


def proc_cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def flanneld_pids(lab: str) -> list[int]:
    daemons = (state.read_json(state.status_file(lab)) or {}).get("daemons") or {}
    return [d["pid"] for k, d in daemons.items() if k.startswith("flanneld/") and d.get("pid")]


def wait_flanneld(lab: str, nodes: int, timeout: float = 10.0) -> float:
    """Seconds until every node's flanneld forwards: it has attached flannel0 and bound its UDP
    port, which its log says (bounded)."""
    start = time.monotonic()
    logs = [state.lab_dir(lab) / f"flanneld-node{i}.log" for i in range(1, nodes + 1)]
    while time.monotonic() - start < timeout:
        if all(log.exists() and " <-> udp " in log.read_text() for log in logs):
            return time.monotonic() - start
        time.sleep(0.005)
    raise TimeoutError(f"{lab}: flanneld not forwarding on {nodes} nodes after {timeout}s")


def iperf(client_ns: str, server_ns: str, server_ip: str, seconds: int) -> dict:
    server = subprocess.Popen(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-p", str(IPERF_PORT)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        ticks = os.sysconf("SC_CLK_TCK")
        busy0, t0 = busy_jiffies(), time.monotonic()
        out = subprocess.run(["ip", "netns", "exec", client_ns, "iperf3", "-c", server_ip, "-p", str(IPERF_PORT),
                              "-t", str(seconds), "-J"], capture_output=True, text=True, timeout=seconds + 30)
        busy = (busy_jiffies() - busy0) / ticks
        wall = time.monotonic() - t0
        report = json.loads(out.stdout)
        if "error" in report:
            raise RuntimeError(f"iperf3: {report['error']}")
        gbps = report["end"]["sum_received"]["bits_per_second"] / 1e9
        retrans = report["end"]["sum_sent"].get("retransmits", 0)
        return {"gbps": gbps, "cores": busy / wall, "retrans": retrans}
    finally:
        server.kill()
        server.wait()


def echo_server(ns: str, ip: str, port: int, rtts: int) -> int:
    """A forked TCP echo server in namespace ns: one connection, at most `rtts` exchanges."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            netns.enter(ns)
            signal_alarm = 10 + rtts // 100
            import signal
            signal.alarm(signal_alarm)
            srv = socket.socket()
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            srv.bind((ip, port))
            srv.listen(1)
            os.write(w, b"R")
            conn, _ = srv.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(rtts):
                data = conn.recv(64)
                if not data:
                    break
                conn.sendall(data)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    os.read(r, 1)
    os.close(r)
    return pid


def latency(client_ns: str, server_ns: str, server_ip: str, rtts: int) -> dict:
    pid = echo_server(server_ns, server_ip, ECHO_PORT, rtts)
    try:
        def run() -> list[float]:
            netns.enter(client_ns)
            times = []
            with socket.create_connection((server_ip, ECHO_PORT), timeout=1.0) as s:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                msg = b"x" * 64
                for _ in range(rtts):
                    t = time.perf_counter()
                    s.sendall(msg)
                    got = 0
                    while got < len(msg):
                        chunk = s.recv(64 - got)
                        if not chunk:
                            raise RuntimeError("echo server closed early")
                        got += len(chunk)
                    times.append(time.perf_counter() - t)
            return times
        times = netns.in_thread(run)
    finally:
        os.waitpid(pid, 0)
    times.sort()
    return {"median_us": statistics.median(times) * 1e6, "p99_us": times[int(len(times) * 0.99) - 1] * 1e6}


def traffic(args, workdir: Path) -> dict[str, list[dict]]:
    lab_dir = workdir / "pair"
    lab_dir.mkdir(exist_ok=True)
    (lab_dir / "lab.yaml").write_text(LAB)
    results: dict[str, list[dict]] = {b: [] for b in BACKENDS}
    for r in range(args.rounds):
        order = BACKENDS if r % 2 == 0 else tuple(reversed(BACKENDS))
        for backend in order:
            name = f"bb{os.getpid()}"
            try:
                cluster = engine.up(lab_dir, name=name, backend=backend, wait=60)
                if backend == "udp":
                    wait_flanneld(name, 2)
                cns = cluster.pod_netns(cluster.pod("client"))
                sns = cluster.pod_netns(cluster.pod("server"))
                sip = cluster.pod("server").pod_ip
                pids = flanneld_pids(name)
                f0 = sum(proc_cpu(p) for p in pids)
                res = iperf(cns, sns, sip, args.seconds)
                res["flanneld_cpu"] = (sum(proc_cpu(p) for p in pids) - f0) / args.seconds if pids else 0.0
                res.update(latency(cns, sns, sip, args.rtts))
                res["load"] = os.getloadavg()[0]
            finally:
                engine.teardown(name)
            results[backend].append(res)
            print(f"round {r + 1}  {backend:8} {res['gbps']:6.3f} Gbit/s  retrans {res['retrans']:6d}  "
                  f"{res['cores']:.2f} cores busy ({res['cores'] / res['gbps']:.2f} per Gbit/s)  "
                  f"flanneld {res['flanneld_cpu']:.2f} cores  rtt median {res['median_us']:.0f} us "
                  f"p99 {res['p99_us']:.0f} us  load {res['load']:.2f}", flush=True)
    return results


def bring_up(args, workdir: Path) -> dict[str, list[tuple[float, float]]]:
    lab_dir = workdir / "up"
    lab_dir.mkdir(exist_ok=True)
    (lab_dir / "lab.yaml").write_text(replicated_pods(args.up_pods))
    out: dict[str, list[tuple[float, float]]] = {"udp": [], "vxlan": []}
    for r in range(args.up_rounds):
        for backend in (("udp", "vxlan") if r % 2 == 0 else ("vxlan", "udp")):
            name = f"bu{os.getpid()}"
            try:
                start = time.perf_counter()
                engine.up(lab_dir, name=name, backend=backend, wait=120)
                up = time.perf_counter() - start
                daemons = up + wait_flanneld(name, 3) if backend == "udp" else 0.0
            finally:
                engine.teardown(name)
            out[backend].append((up, daemons))
            extra = f", every flanneld forwarding at {daemons:.3f} s" if backend == "udp" else ""
            print(f"round {r + 1}  up {args.up_pods} pods {backend:6} {up:.3f} s{extra}", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rtts", type=int, default=1000)
    parser.add_argument("--up-pods", type=int, default=100)
    parser.add_argument("--up-rounds", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        results = traffic(args, Path(tmp))
        ups = bring_up(args, Path(tmp)) if args.up_rounds else {}
    med = {b: {k: statistics.median(r[k] for r in results[b]) for k in results[b][0]} for b in BACKENDS}
    print(f"\ncross-node pod -> pod, median of {args.rounds} rounds, {os.cpu_count()} CPUs "
          f"(iperf3 -t {args.seconds}; {args.rtts} TCP round trips of 64 bytes)")
    print(f"  {'backend':8} {'Gbit/s':>7} {'vs udp':>7} {'cores/Gbit/s':>13} {'flanneld cores':>15} "
          f"{'rtt median':>11} {'rtt p99':>9}")
    for b in BACKENDS:
        m = med[b]
        print(f"  {b:8} {m['gbps']:7.3f} {m['gbps'] / med['udp']['gbps']:6.1f}x {m['cores'] / m['gbps']:13.2f} "
              f"{m['flanneld_cpu']:15.2f} {m['median_us']:9.0f}us {m['p99_us']:7.0f}us")
    if ups:
        u = statistics.median(x[0] for x in ups["udp"])
        v = statistics.median(x[0] for x in ups["vxlan"])
        d = statistics.median(x[1] for x in ups["udp"])
        print(f"\nup of {args.up_pods} pods over 3 nodes, median of {args.up_rounds}: udp {u:.3f} s, vxlan {v:.3f} s "
              f"(udp - vxlan {u - v:+.3f} s); every flanneld forwarding {d:.3f} s after up began")
    return 0


if __name__ == "__main__":
    sys.exit(main())
