"""kube-proxy userspace mode for real: rules in a node namespace, the proxy forked into it.

    client 10.244.1.2 ---+                      +--- b1 10.244.2.2 (echo on tcp 8080, udp 5353)
                         node (proxy, rules) ---+
    outside 192.168.56.100 --- 192.168.56.11    +--- b2 10.244.3.2 (echo on tcp 8080, udp 5353)

An echo backend reads until EOF and answers "<name>:<what it read>", so every answer says
which backend served it, and the client's half-close must cross the proxy. Needs root;
every namespace is removed, pass or fail, and the host's namespace is never touched.
"""
from __future__ import annotations

import json
import os
import secrets
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from netlab.kernel import iptables, netns
from netlab.model.cluster import Cluster, make_nodes
from netlab.model.config import parse_lab
from netlab.model.objects import parse_object
from netlab.model.services import Endpoint
from netlab.plan import userspace
from netlab.runtime import userspace_proxy

from .netutil import root_links

pytestmark = pytest.mark.root

WEB, STICKY, EMPTY, DNS = "10.96.0.50", "10.96.0.51", "10.96.0.52", "10.96.0.53"
NODE_IP, OUTSIDE_IP, NODE_PORT = "192.168.56.11", "192.168.56.100", 30080
BACKENDS = {"b1": "10.244.2.2", "b2": "10.244.3.2"}
ENDPOINTS = {
    "default/web": {"http": [Endpoint(ip, 8080, "", "node1") for ip in BACKENDS.values()]},
    "default/sticky": {"http": [Endpoint(ip, 8080, "", "node1") for ip in BACKENDS.values()]},
    "default/dns": {"dns": [Endpoint(BACKENDS["b1"], 5353, "", "node1")]},
}
DROP_SYN = "*filter\n{} INPUT -p tcp -m tcp --dport 8080 -j DROP\nCOMMIT\n"


def make_cluster() -> Cluster:
    cfg = parse_lab({"apiVersion": "netlab/v1", "kind": "Lab", "metadata": {"name": "ut"},
                     "spec": {"nodes": 1}}, default_name="ut")
    cluster = Cluster(config=cfg, nodes=make_nodes(cfg), seed=1)

    def svc(name: str, spec: dict) -> object:
        return parse_object({"apiVersion": "v1", "kind": "Service",
                             "metadata": {"name": name, "namespace": "default"}, "spec": spec}, "test")
    cluster.admit([
        svc("web", {"type": "LoadBalancer", "clusterIP": WEB,
                    "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": NODE_PORT}]}),
        svc("sticky", {"clusterIP": STICKY, "sessionAffinity": "ClientIP",
                       "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}),
        svc("empty", {"clusterIP": EMPTY, "ports": [{"name": "http", "port": 80}]}),
        svc("dns", {"clusterIP": DNS, "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}),
    ])
    return cluster


# ---------------------------------------------------------------------- backends and clients


class Backend:
    """TCP and UDP echo servers in namespace `ns`, served by a thread that entered it."""

    def __init__(self, ns: str, name: str):
        self.ns, self.name = ns, name
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        ready = threading.Event()
        self.stopping.clear()
        self.thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(3), f"backend {self.name} did not start"

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(3)

    def _serve(self, ready: threading.Event) -> None:
        netns.enter(self.ns)
        with socket.create_server(("0.0.0.0", 8080)) as tcp, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, selectors.DefaultSelector() as sel:
            udp.bind(("0.0.0.0", 5353))
            sel.register(tcp, selectors.EVENT_READ)
            sel.register(udp, selectors.EVENT_READ)
            ready.set()
            while not self.stopping.is_set():
                for key, _ in sel.select(0.05):
                    if key.fileobj is tcp:
                        conn, _ = tcp.accept()
                        threading.Thread(target=self._echo, args=(conn,), daemon=True).start()
                    else:
                        data, peer = udp.recvfrom(2048)
                        udp.sendto(f"{self.name}:".encode() + data, peer)

    def _echo(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            data = b""
            while chunk := conn.recv(4096):
                data += chunk
            conn.sendall(f"{self.name}:".encode() + data)


def ask(ns: str, ip: str, port: int, payload: bytes = b"hello") -> str:
    """Connect from inside ns, send payload, half-close, return all that comes back."""
    def go() -> str:
        netns.enter(ns)
        with socket.create_connection((ip, port), timeout=3) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        return data.decode()
    return netns.in_thread(go)


def ask_udp(ns: str, ip: str, port: int) -> tuple[bytes, tuple[str, int]]:
    def go() -> tuple[bytes, tuple[str, int]]:
        netns.enter(ns)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            s.sendto(b"query", (ip, port))
            return s.recvfrom(2048)
    return netns.in_thread(go)


def served_by(ns: str, ip: str, port: int, n: int) -> list[str]:
    answers = [ask(ns, ip, port) for _ in range(n)]
    assert all(a.endswith(":hello") for a in answers), answers
    return [a.split(":")[0] for a in answers]


# ---------------------------------------------------------------------- the lab


def ip(ns: str, *args: str) -> None:
    proc = subprocess.run(["ip", "-n", ns, *args], capture_output=True, text=True)
    assert proc.returncode == 0, f"ip -n {ns} {' '.join(args)}: {proc.stderr.strip()}"


def link(node: str, peer_ns: str, dev: str, node_addr: str, peer_addr: str, via: str) -> None:
    """A veth from node to peer_ns, made from inside node: no end ever sits in our namespace."""
    ip(node, "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", peer_ns)
    ip(node, "addr", "add", node_addr, "dev", dev)
    ip(node, "link", "set", dev, "up")
    ip(peer_ns, "addr", "add", peer_addr, "dev", "eth0")
    ip(peer_ns, "link", "set", "eth0", "up")
    ip(peer_ns, "route", "add", "default", "via", via)


@pytest.fixture(scope="module")
def lab() -> Iterator[dict]:
    links_before = root_links()
    tag = secrets.token_hex(4)
    names = {role: f"netlab-ut{tag}.{role}" for role in ("node", "client", "outside", "b1", "b2")}
    backends: list[Backend] = []
    try:
        for name in names.values():
            netns.create(name)
        node = names["node"]
        link(node, names["client"], "to-client", "10.244.1.1/24", "10.244.1.2/24", "10.244.1.1")
        link(node, names["b1"], "to-b1", "10.244.2.1/24", "10.244.2.2/24", "10.244.2.1")
        link(node, names["b2"], "to-b2", "10.244.3.1/24", "10.244.3.2/24", "10.244.3.1")
        link(node, names["outside"], "eth0", f"{NODE_IP}/24", f"{OUTSIDE_IP}/24", NODE_IP)
        ip(node, "route", "add", "default", "via", OUTSIDE_IP)
        netns.write_sysctl(node, {"net.ipv4.ip_forward": "1", **userspace.RESERVED_PORTS_SYSCTL})

        cluster = make_cluster()
        node_obj = cluster.node("node1")
        ports = userspace.proxy_ports(cluster, node_obj)
        rules = userspace.render_userspace_rules(cluster, node_obj, ports)
        iptables.sync_node(node, rules, jumps=userspace.render_jumps())
        backends = [Backend(names[b], b) for b in BACKENDS]
        for b in backends:
            b.start()
        yield {"ns": names, "ports": ports, "rules": rules,
               "config": userspace.proxy_config(cluster, node_obj, ports, ENDPOINTS),
               "lb_ip": cluster.service("web").load_balancer_ip, "backends": dict(zip(BACKENDS, backends))}
    finally:
        for b in backends:
            b.stop()
        for name in names.values():
            netns.delete(name)
    assert not [n for n in names.values() if netns.exists(n)], "namespaces left behind"
    assert root_links() == links_before, "links appeared in the host's namespace"
    saved = subprocess.run(["iptables-legacy-save"], capture_output=True, text=True).stdout
    assert "KUBE-PORTALS" not in saved and "KUBE-NODEPORT" not in saved, "rules leaked into the host"


class Proxy:
    """The proxy forked into the node namespace, as the agent runs it; its log in a file."""

    def __init__(self, node: str, config: dict, tmp: Path):
        self.config_path, self.log_path = tmp / "proxy.json", tmp / "proxy.log"
        self.write(config)
        self.exit_code: int | None = None
        self.pid = os.fork()
        if self.pid == 0:   # the child never returns into pytest
            code = 1
            try:
                log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(log_fd, 1)
                # Inherited descriptors go: a backend's listening socket kept open here
                # would still complete handshakes after the backend "stopped".
                os.closerange(3, os.sysconf("SC_OPEN_MAX"))
                sys.stdout = open(1, "w", buffering=1, closefd=False)
                netns.enter(node)
                code = userspace_proxy.run(str(self.config_path))
            finally:
                os._exit(code)

    def write(self, config: dict) -> None:
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(config))
        tmp.rename(self.config_path)    # atomic: the proxy never reads half a file

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def wait_log(self, text: str, count: int = 1, timeout: float = 3.0) -> None:
        deadline = time.monotonic() + timeout
        while self.log().count(text) < count:
            assert time.monotonic() < deadline, f"{text!r} x{count} not in the proxy log:\n{self.log()}"
            time.sleep(0.02)

    def stop(self) -> int:
        """SIGTERM, then the exit code; SIGKILL if it has not exited within 3 s. Once only."""
        if self.exit_code is None:
            self.exit_code = self._terminate()
        return self.exit_code

    def _terminate(self) -> int:
        os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.02)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        return -signal.SIGKILL


@pytest.fixture
def proxy(lab, tmp_path) -> Iterator[Proxy]:
    """A fresh proxy per test (fresh round-robin state); must stop with 0 when told to."""
    p = Proxy(lab["ns"]["node"], lab["config"], tmp_path)
    try:
        p.wait_log("listening on", count=len(lab["ports"]))
        yield p
    finally:
        code = p.stop()
    assert code == 0, p.log()


# ---------------------------------------------------------------------- tests


def test_rules_read_back_as_rendered(lab):
    saved = iptables.save(lab["ns"]["node"])
    ours = [line for line in lab["rules"].splitlines() if line.startswith("-A KUBE-")]
    assert ours and all(line in saved.splitlines() for line in ours)


def test_pod_to_cluster_ip_is_redirected_to_the_proxy_and_served(lab, proxy):
    client = lab["ns"]["client"]
    assert served_by(client, WEB, 80, 1)[0] in BACKENDS
    web = next(r for r in iptables.read_rules(lab["ns"]["node"]) if r.chain == "KUBE-PORTALS-CONTAINER"
               and r.dst == f"{WEB}/32")
    assert web.target == "REDIRECT" and web.packets >= 1
    assert "default/web:http 10.244.1.2:" in proxy.log()   # the proxy saw the pod's own address


def test_round_robin_alternates(lab, proxy):
    assert served_by(lab["ns"]["client"], WEB, 80, 4) == ["b1", "b2", "b1", "b2"]


def test_client_ip_affinity_sticks_per_client(lab, proxy):
    from_pod = served_by(lab["ns"]["client"], STICKY, 80, 4)
    from_node = served_by(lab["ns"]["node"], STICKY, 80, 3)     # KUBE-PORTALS-HOST: the node's address
    assert len(set(from_pod)) == 1 and len(set(from_node)) == 1
    assert from_pod[0] != from_node[0]                          # the rotation moved on between clients


def test_node_port_load_balancer_ip_and_host_paths(lab, proxy):
    outside, node = lab["ns"]["outside"], lab["ns"]["node"]
    ip(outside, "route", "add", f"{lab['lb_ip']}/32", "via", NODE_IP)
    try:
        assert served_by(outside, NODE_IP, NODE_PORT, 1)[0] in BACKENDS       # KUBE-NODEPORT-CONTAINER
        assert served_by(outside, lab["lb_ip"], 80, 1)[0] in BACKENDS        # LB IP portal
        assert served_by(node, WEB, 80, 1)[0] in BACKENDS                    # KUBE-PORTALS-HOST
        assert served_by(node, NODE_IP, NODE_PORT, 1)[0] in BACKENDS         # KUBE-NODEPORT-HOST
    finally:
        ip(outside, "route", "del", f"{lab['lb_ip']}/32")
    assert f"default/web:http {OUTSIDE_IP}:" in proxy.log()


def test_service_without_endpoints_accepts_then_closes(lab, proxy):
    # Connected (no REJECT as in iptables mode), then a FIN. Had the client sent bytes
    # first, closing over them unread would have been a RST.
    assert ask(lab["ns"]["client"], EMPTY, 80, payload=b"") == ""
    assert "default/empty:http 10.244.1.2:" in proxy.log() and "no endpoints, closed" in proxy.log()


def test_udp_reply_comes_back_from_the_cluster_ip(lab, proxy):
    data, source = ask_udp(lab["ns"]["client"], DNS, 53)
    assert data == b"b1:query" and source == (DNS, 53)


def test_stopped_backend_every_connection_still_served(lab, proxy):
    b2 = lab["backends"]["b2"]
    b2.stop()       # its port is closed: the kernel answers the SYN with a RST
    try:
        assert served_by(lab["ns"]["client"], WEB, 80, 4) == ["b1"] * 4
    finally:
        b2.start()
    assert "(after 10.244.3.2:8080 Connection refused)" in proxy.log()


def test_backend_dropping_syns_every_connection_still_served(lab, proxy):
    b2 = lab["ns"]["b2"]
    iptables.restore(b2, DROP_SYN.format("-A"))
    try:
        start = time.monotonic()
        assert served_by(lab["ns"]["client"], WEB, 80, 3) == ["b1"] * 3
        elapsed = time.monotonic() - start
    finally:
        iptables.restore(b2, DROP_SYN.format("-D"))
    # The retry takes b1's turn, so after the first connection every dial tries b2 first
    # and waits out one connect timeout, as the historical round robin did.
    assert elapsed >= 2 * userspace_proxy.CONNECT_TIMEOUT
    assert proxy.log().count("(after 10.244.3.2:8080 timed out)") == 2


def test_config_reload_updates_endpoints(lab, proxy):
    client = lab["ns"]["client"]
    config = json.loads(json.dumps(lab["config"]))
    config["services"]["default/web:http"]["endpoints"] = ["10.244.3.2:8080"]
    proxy.write(config)     # picked up by the mtime check
    proxy.wait_log("config loaded", count=2)
    assert served_by(client, WEB, 80, 3) == ["b2"] * 3
    proxy.write(lab["config"])
    os.kill(proxy.pid, signal.SIGHUP)   # at once
    proxy.wait_log("config loaded", count=3)
    assert sorted(served_by(client, WEB, 80, 2)) == ["b1", "b2"]


def test_sigterm_exits_promptly_with_a_connection_open(lab, proxy):
    def hold() -> socket.socket:
        netns.enter(lab["ns"]["client"])
        return socket.create_connection((WEB, 80), timeout=3)
    held = netns.in_thread(hold)
    try:
        proxy.wait_log("default/web:http 10.244.1.2:")
        start = time.monotonic()
        assert proxy.stop() == 0
        assert time.monotonic() - start < 1.5
        assert held.recv(1) == b""      # the relay was torn down, not left hanging
    finally:
        held.close()
    assert proxy.log().endswith("stopped\n")
