"""Containers and pods: localhost inside a pod, the pause container's namespaces, pod IPs,
node routes, and pod-to-pod traffic on one node and across nodes."""
from __future__ import annotations

import ctypes
import ipaddress
import os
import socket
from concurrent.futures import ThreadPoolExecutor

from ...kernel import netns
from ...model import names
from ...model.objects import Pod
from ...model.services import Endpoint
from ...plan.network import POD_BRIDGE, TUN_DEV, VXLAN_DEV
from .. import sockets
from ..catalog import check
from ..lab import LabView, pod_hostname, pod_label
from ..landing import land
from ..nsview import Namespace, Route
from ..result import SOCKET, STATE, Evidence
from . import DOC000, DOC001, DOC002, DOC003, DOC004

CLONE_NEWUTS = 0x04000000
PARALLEL = 8
SHARED = ("net", "uts", "ipc", "pid")


def _multi_container(view: LabView) -> list[Pod]:
    return [p for p in view.pods if len(p.spec.containers) > 1 and view.declared_tcp_ports(p)]


@check("container-localhost",
       claim="Containers of one pod share its network namespace: every container's port "
             "answers on 127.0.0.1 inside the pod.",
       source=f"{DOC000} §1, {DOC001} (pod内部容器之间), {DOC002} (容器到容器的通信)",
       needs="a pod with two or more containers and a declared TCP port",
       applies=lambda view: bool(_multi_container(view)), evidence=SOCKET)
def container_localhost(view: LabView, ev: Evidence) -> str:
    for pod in _multi_container(view):
        ns = view.netns(pod)
        pod_inode = netns.inode(ns)
        for name, pid in view.container_pids(pod).items():
            inode = os.stat(f"/proc/{pid}/ns/net").st_ino
            ev.read(f"container {pod.meta.key}/{name} (pid {pid})", f"netns {ns}", "compare namespace inodes",
                   f"net:[{inode}] vs pod net:[{pod_inode}]", inode == pod_inode, "the pod's own namespace")
        for c in pod.spec.containers:
            for port in (p.container_port for p in c.ports if p.protocol == "TCP"):
                out = sockets.in_netns(ns, sockets.attempt_tcp, "127.0.0.1", port)
                ev.add(f"{pod_label(pod)} (its netns)", f"127.0.0.1:{port} (container {c.name})",
                       "TCP connect", out.seen, out.ok, "a connection")
    return "each container's port answered on the pod's localhost"


def _hostname_in_uts_of(pid: int) -> str:
    """The hostname a process sees: read by a thread that joined its UTS namespace."""
    def read() -> str:
        fd = os.open(f"/proc/{pid}/ns/uts", os.O_RDONLY)
        try:
            if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWUTS) != 0:
                raise OSError(ctypes.get_errno(), "setns uts")
        finally:
            os.close(fd)
        return socket.gethostname()
    return netns.in_thread(read)


def _running(view: LabView) -> list[Pod]:
    return [p for p in view.pods if view.container_pids(p)]


@check("pod-shared-namespaces",
       claim="A pod's pause container holds its namespaces: every container shares the pod's "
             "network, UTS (hostname = pod name), IPC and PID namespaces.",
       source=f"{DOC002} (Pod中的应用容器共享…; pause容器), {DOC004} §1",
       needs="a pod with a running container",
       applies=lambda view: bool(_running(view)), evidence=STATE)
def pod_shared_namespaces(view: LabView, ev: Evidence) -> str:
    for pod in _running(view):
        holder = view.status.get(pod.meta.key, {}).get("holderPid")
        pod_ns = {kind: os.stat(f"/proc/{holder}/ns/{kind}").st_ino for kind in SHARED}
        for name, pid in view.container_pids(pod).items():
            mine = {kind: os.stat(f"/proc/{pid}/ns/{kind}").st_ino for kind in SHARED}
            differ = [kind for kind in SHARED if mine[kind] != pod_ns[kind]]
            host = _hostname_in_uts_of(pid)
            ok = not differ and host == pod_hostname(pod)
            seen = (f"differs in {', '.join(differ)}" if differ else "net, uts, ipc, pid shared") + f"; hostname {host!r}"
            ev.read(f"container {pod.meta.key}/{name} (pid {pid})", f"pod holder (pid {holder})",
                   "compare /proc/PID/ns/* and read the hostname", seen, ok,
                   f"all four shared and hostname {pod_hostname(pod)!r}")
    return "every running container shares its pod's namespaces and hostname"


def _eth0_addresses(ns: str) -> list[str]:
    with netns.open_netlink(ns) as ipr:
        index = ipr.link_lookup(ifname="eth0")
        return [a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=socket.AF_INET, index=index[0])] if index else []


@check("pod-ip-unique",
       claim="Every pod has its own IP, unique in the cluster and inside its node's pod subnet, "
             "so a pod IP says which node to send to.",
       source=f"{DOC000} §3, {DOC003} §3 (Pod的IP不能冲突; 将Pod的IP和所在的Node的IP关联起来)",
       needs="a pod",
       applies=lambda view: bool(view.pods), evidence=STATE)
def pod_ip_unique(view: LabView, ev: Evidence) -> str:
    owners: dict[str, str] = {}
    for pod in view.pods:
        subnet = ipaddress.ip_network(view.node_of(pod).pod_cidr)
        if view.cluster.ipam is not None:      # calico: the IPAM block of the node that holds it
            subnet = ipaddress.ip_network(view.cluster.ipam.block_of(pod.pod_ip) or subnet)
            if view.cluster.ipam.affinity.get(str(subnet)) != pod.spec.node_name:
                subnet = ipaddress.ip_network(view.node_of(pod).pod_cidr)
        found = _eth0_addresses(view.netns(pod))
        clashes = [owners[a] for a in found if a in owners]
        ok = found == [pod.pod_ip] and ipaddress.ip_address(pod.pod_ip) in subnet and not clashes
        seen = f"eth0 has {', '.join(found) or 'no address'}" + (f", also on {', '.join(clashes)}" if clashes else "")
        ev.read(pod_label(pod), f"node {pod.spec.node_name} subnet {subnet}", "netlink: eth0 addresses",
               seen, ok, f"only {pod.pod_ip}, inside {subnet}, on no other pod")
        owners.update({a: pod.meta.key for a in found})
    return f"{len(view.pods)} pods, {len(owners)} distinct addresses, each in its node's subnet"


@check("node-routes",
       claim="Each node sends its own pod subnet to its bridge (cni0; with Canal each local pod's "
             "/32 to its cali veth) and every other node's pod subnet to the overlay (flannel.1; "
             "with the udp backend the cluster route to the TUN flannel0), or with host-gw to that "
             "node's address.",
       source=f"{DOC001} (跨节点通讯: flannel 添加的路由), {DOC003} §4",
       needs="two or more nodes and a flannel backend (calico: bgp-routes)",
       applies=lambda view: len(view.cluster.nodes) > 1 and view.cluster.config.backend != "calico",
       evidence=STATE)
def node_routes(view: LabView, ev: Evidence) -> str:
    backend = view.cluster.config.backend
    canal = view.cluster.config.canal
    for node in view.cluster.nodes:
        space = Namespace(node.netns)
        try:
            if canal:
                _local_pod_routes(view, node, space, ev)
            for other in view.cluster.nodes:
                target = str(ipaddress.ip_network(other.pod_cidr).network_address + 2)
                if other is node and canal:
                    continue                               # no subnet route: the pods' /32s above
                if other is node:
                    want = Route("unicast", POD_BRIDGE)
                elif backend == "vxlan":
                    want = Route("unicast", VXLAN_DEV, other.vtep_ip)
                elif backend == "udp":
                    want = Route("unicast", TUN_DEV)       # the cluster route: flanneld picks the node
                else:
                    want = Route("unicast", "eth0", other.internal_ip)
                route = space.route(target)
                ev.read(f"node {node.name}", f"{target} (node {other.name}'s subnet)", "route get",
                       str(route), route == want, str(want))
        finally:
            space.close()
    return f"every node routes every pod subnet ({backend}{', Canal' if canal else ''})"


def _local_pod_routes(view: LabView, node, space: Namespace, ev: Evidence) -> None:
    """Canal: each pod on the node is a /32 route to its cali veth, as Calico's CNI plugin
    adds it (the node has no bridge and no route for its own subnet)."""
    for pod in view.pods_on(node):
        want = Route("unicast", names.host_veth(pod.meta.namespace, pod.meta.name, calico=True))
        route = space.route(pod.pod_ip)
        ev.read(f"node {node.name}", f"{pod.pod_ip} ({pod.meta.key})", "route get", str(route),
                route == want, str(want))


def _direct(view: LabView, src: Pod, dst: Pod, port: int) -> tuple[str, str, str, str, bool, str]:
    """Connect src -> dst pod IP and read dst's socket table: it must show src's own address."""
    target = f"{dst.pod_ip}:{port} ({dst.meta.key})"
    landing = land(view, view.netns(src), dst.pod_ip, port, [Endpoint(dst.pod_ip, port, dst.meta.key, dst.node)], 1)
    if landing.error:
        return pod_label(src), target, "TCP connect", landing.error, False, "a connection"
    seen = landing.by_pod.get(dst.meta.key, [])
    return (pod_label(src), target, "TCP connect, then read the server's socket table",
            f"server saw {', '.join(seen) or 'no new connection'}", seen == landing.client_locals,
            f"the server to see {', '.join(landing.client_locals)} (no NAT)")


def _direct_all(view: LabView, ev: Evidence, pairs: list[tuple[Pod, Pod, int]]) -> None:
    """The pairs at once: each has its own destination, and its probe looks for the exact
    client address, so they cannot mistake each other's connections."""
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        for record in pool.map(lambda pair: _direct(view, *pair), pairs):
            ev.add(*record)


def _targets(view: LabView, same_node: bool) -> list[tuple[Pod, Pod, int]]:
    """Every pod with a TCP port as a destination, each from one peer (rotating) on the same
    node or on another node: all pods are reached; the matrix tries every pair."""
    pairs = []
    for i, dst in enumerate(view.pods):
        ports = view.tcp_ports(dst)
        peers = [p for p in view.pods if p is not dst and (p.spec.node_name == dst.spec.node_name) == same_node]
        if ports:
            # Pairs a NetworkPolicy denies are the `policy` check's: here only allowed ones.
            peers = [p for p in peers if view.policy_allows(p, dst, ports[0])]
        if ports and peers:
            pairs.append((peers[i % len(peers)], dst, ports[0]))
    return pairs


@check("pod-same-node",
       claim="Pods on one node reach each other by pod IP through the node's bridge, and the "
             "receiver sees the sender's own pod IP (no NAT).",
       source=f"{DOC000} §2, {DOC002} (同一个Node内的Pod之间的通信), {DOC004} §2.1",
       needs="two pods on one node, one of them with a TCP port",
       applies=lambda view: bool(_targets(view, True)), evidence=SOCKET)
def pod_same_node(view: LabView, ev: Evidence) -> str:
    _direct_all(view, ev, _targets(view, True))
    return "each pod reached a neighbour on its node, source address intact"


@check("pod-cross-node",
       claim="Pods on different nodes reach each other by pod IP, and the receiver sees the "
             "sender's own pod IP (no NAT).",
       source=f"{DOC000} §3, {DOC001} (两个pod分布在不同主机之上), {DOC003} §3",
       needs="pods on two nodes, one of them with a TCP port",
       applies=lambda view: bool(_targets(view, False)), evidence=SOCKET)
def pod_cross_node(view: LabView, ev: Evidence) -> str:
    _direct_all(view, ev, _targets(view, False))
    return "each pod was reached from another node, source address intact"
