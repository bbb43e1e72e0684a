"""Throughput of kube-proxy's two data paths, with iperf3: userspace proxy vs iptables DNAT.

Run as root:  .venv/bin/python bench/bench_proxy.py [--seconds 3] [--rounds 2] [--streams 1]

Three namespaces the bench creates (and always removes): a client pod, a node and a server
pod, linked by veth pairs and routed through the node. The node holds both modes' rules for
two ClusterIPs in front of the same iperf3 server, rendered by netlab's own renderers:
  userspace  10.96.0.100:5201 -> REDIRECT to the userspace proxy (forked into the node
             namespace, as the agent runs it), which splices into its own connection;
  iptables   10.96.0.101:5201 -> kube-proxy's KUBE-SVC/KUBE-SEP chains, DNAT in the kernel.
Rounds alternate the two paths; prints each run, the medians with their ratio, and the
proxy's CPU time per run (its relay threads included).
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netlab.kernel import iptables, netns  # noqa: E402
from netlab.model.cluster import Cluster, make_nodes  # noqa: E402
from netlab.model.config import parse_lab  # noqa: E402
from netlab.model.objects import parse_object  # noqa: E402
from netlab.model.services import Endpoint  # noqa: E402
from netlab.plan import kubeproxy, userspace  # noqa: E402
from netlab.runtime import userspace_proxy  # noqa: E402

PORT = 5201
SERVER_IP = "10.244.2.2"
VIPS = {"userspace": "10.96.0.100", "iptables": "10.96.0.101"}
ENDPOINTS = {f"default/via-{mode}": {"iperf": [Endpoint(SERVER_IP, PORT, "", "node1")]} for mode in VIPS}


def cluster_with(mode: str) -> Cluster:
    cfg = parse_lab({"apiVersion": "netlab/v1", "kind": "Lab", "metadata": {"name": "bench"},
                     "spec": {"nodes": 1}}, default_name="bench")
    cluster = Cluster(config=cfg, nodes=make_nodes(cfg), seed=1)
    cluster.admit([parse_object({"apiVersion": "v1", "kind": "Service",
                                 "metadata": {"name": f"via-{mode}", "namespace": "default"},
                                 "spec": {"clusterIP": VIPS[mode], "ports": [{"name": "iperf", "port": PORT}]}},
                                "bench")])
    return cluster


def ip(ns: str, *args: str) -> None:
    proc = subprocess.run(["ip", "-n", ns, *args], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"ip -n {ns} {' '.join(args)}: {proc.stderr.strip()}")


@contextmanager
def topology() -> Iterator[dict[str, str]]:
    """client (10.244.1.2) -- node -- server (10.244.2.2); the names, removed at exit."""
    tag = secrets.token_hex(4)
    names = {role: f"netlab-bench{tag}.{role}" for role in ("client", "node", "server")}
    try:
        for name in names.values():
            netns.create(name)
        node = names["node"]
        for role, subnet in (("client", "10.244.1"), ("server", "10.244.2")):
            # Created from inside the node namespace, peer straight into the pod's: never in ours.
            ip(node, "link", "add", f"to-{role}", "type", "veth", "peer", "name", "eth0", "netns", names[role])
            ip(node, "addr", "add", f"{subnet}.1/24", "dev", f"to-{role}")
            ip(node, "link", "set", f"to-{role}", "up")
            ip(names[role], "addr", "add", f"{subnet}.2/24", "dev", "eth0")
            ip(names[role], "link", "set", "eth0", "up")
            ip(names[role], "route", "add", "default", "via", f"{subnet}.1")
        netns.write_sysctl(node, {"net.ipv4.ip_forward": "1", **userspace.RESERVED_PORTS_SYSCTL})
        yield names
    finally:
        for name in names.values():
            netns.kill_processes([i for i in [netns.inode(name)] if i])
            netns.delete(name)


@contextmanager
def proxy_in(node_ns: str, config: dict) -> Iterator[int]:
    """The userspace proxy forked into node_ns, as the agent runs it; SIGTERM at exit."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "proxy.json")
        with open(path, "w") as f:
            json.dump(config, f)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                log_fd = os.open(os.path.join(tmp, "proxy.log"), os.O_WRONLY | os.O_CREAT, 0o644)
                os.dup2(log_fd, 1)
                os.closerange(3, os.sysconf("SC_OPEN_MAX"))    # nothing of ours lives on in it
                sys.stdout = open(1, "w", buffering=1, closefd=False)
                netns.enter(node_ns)
                code = userspace_proxy.run(path)
            finally:
                os._exit(code)
        try:
            yield pid
        finally:
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)


def wait_listening(pid: int, port: int, timeout: float = 5.0) -> None:
    """Until /proc/<pid>/net/tcp (the pid's namespace) shows `port` in LISTEN."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/net/tcp") as f:
            if any(line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "0A"
                   for line in list(f)[1:]):
                return
        time.sleep(0.02)
    raise TimeoutError(f"proxy pid {pid} does not listen on {port}")


def cpu_seconds(pid: int) -> float:
    """user + system CPU of a process, all its threads (the relays) included."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def iperf(names: dict[str, str], vip: str, seconds: int, streams: int) -> float:
    """Gbit/s received by the server for one iperf3 run from client to vip."""
    server = subprocess.Popen(["ip", "netns", "exec", names["server"], "iperf3", "-s", "-1", "-p", str(PORT)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.2)
        out = subprocess.run(["ip", "netns", "exec", names["client"], "iperf3", "-c", vip, "-p", str(PORT),
                              "-t", str(seconds), "-P", str(streams), "-J"],
                             capture_output=True, text=True, timeout=seconds + 20)
        report = json.loads(out.stdout)
        if "error" in report:
            raise RuntimeError(f"iperf3 to {vip}: {report['error']}")
        return report["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        server.kill()
        server.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--streams", type=int, default=1)
    args = parser.parse_args()

    results: dict[str, list[float]] = {mode: [] for mode in VIPS}
    proxy_cpu: list[float] = []
    with ExitStack() as stack:
        names = stack.enter_context(topology())
        node_ns = names["node"]
        us = cluster_with("userspace")
        node = us.nodes[0]
        ports = userspace.proxy_ports(us, node)
        iptables.sync_node(node_ns, userspace.render_userspace_rules(us, node, ports),
                           jumps=userspace.render_jumps())
        ipt = cluster_with("iptables")
        iptables.sync_node(node_ns, kubeproxy.render_node_rules(ipt, ipt.nodes[0], ENDPOINTS))
        pid = stack.enter_context(proxy_in(node_ns, userspace.proxy_config(us, node, ports, ENDPOINTS)))
        wait_listening(pid, next(iter(ports.values())))
        for r in range(args.rounds):
            for mode, vip in VIPS.items():
                before = cpu_seconds(pid)
                gbps = iperf(names, vip, args.seconds, args.streams)
                if mode == "userspace":
                    proxy_cpu.append(cpu_seconds(pid) - before)
                results[mode].append(gbps)
                print(f"round {r + 1}  {mode:9}  {vip}:{PORT}  {gbps:7.2f} Gbit/s", flush=True)
    us_med, ipt_med = (statistics.median(results[m]) for m in ("userspace", "iptables"))
    print(f"\niperf3 -t {args.seconds} -P {args.streams}, median of {args.rounds}, on {os.cpu_count()} CPUs")
    print(f"  userspace proxy (splice)  {us_med:7.2f} Gbit/s")
    print(f"  iptables DNAT             {ipt_med:7.2f} Gbit/s")
    print(f"  ratio userspace/iptables  {us_med / ipt_med:7.2f}")
    print(f"  proxy CPU per userspace run: {statistics.median(proxy_cpu):.2f} s for a {args.seconds} s test")
    return 0


if __name__ == "__main__":
    sys.exit(main())
