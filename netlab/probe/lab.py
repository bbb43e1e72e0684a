"""A running lab as the probes see it: the model and what runs.

What a check applies to is read here from the model (services, their endpoints, pods), never
from the kernel: a lab whose rules are missing must fail its checks, not skip them.

Probes pick their sources and targets here, so every check chooses the same way: pods in a
stable order (node, namespace, name), the ports each pod serves the network on, and the
service endpoints computed the way the endpoints controller does (ready pods only).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Optional

from ..model import names
from ..model.cluster import Cluster, Node
from ..model.objects import Pod, Service, ServicePort
from ..model.services import Endpoint, endpoints_for
from ..kernel.netns import alive
from ..plan import network as netplan
from ..runtime.workloads import BUILTIN, resolve
from . import conntable, rules

def pod_label(pod: Pod) -> str:
    return f"pod {pod.meta.key} {pod.pod_ip}"


def pod_hostname(pod: Pod) -> str:
    return pod.hostname


@dataclass
class LabView:
    cluster: Cluster
    status: dict = field(default_factory=dict)      # engine.pod_status(lab)

    @classmethod
    def load(cls, lab: str) -> "LabView":
        from .. import engine
        return cls(engine.load(lab), engine.pod_status(lab))

    @property
    def name(self) -> str:
        return self.cluster.name

    # ------------------------------------------------------------------ pods

    @cached_property
    def pods(self) -> list[Pod]:
        order = {n.name: n.index for n in self.cluster.nodes}
        return sorted(self.cluster.pods.values(),
                      key=lambda p: (order.get(p.spec.node_name, 0), p.meta.namespace, p.meta.name))

    def pods_on(self, node: Node) -> list[Pod]:
        return [p for p in self.pods if p.spec.node_name == node.name]

    def netns(self, pod: Pod) -> str:
        return self.cluster.pod_netns(pod)

    def node_of(self, pod: Pod) -> Node:
        return self.cluster.node(pod.spec.node_name)

    def pod_by_ip(self, ip: str) -> Optional[Pod]:
        return next((p for p in self.pods if p.pod_ip == ip), None)

    def policy_allows(self, src: Pod, dst: Optional[Pod], port: int, dst_ip: str = "") -> bool:
        """Whether the lab's NetworkPolicies let src open a TCP connection to dst's port (or to
        dst_ip's, a place that is no pod); always where nothing enforces them (a flannel backend
        without Canal). Checks about the network itself probe only allowed pairs: denied ones
        are the `policy` check's."""
        if not self.cluster.policies or not self.cluster.config.calico_pods:
            return True
        from ..model.netpol import decide
        ip = dst.pod_ip if dst is not None else dst_ip
        return decide(self.cluster, src.pod_ip, src, ip, dst, port).allowed

    def cross_node_pair(self) -> Optional[tuple[Pod, Pod, int]]:
        """The first pod with a TCP port and the first pod on another node that policy lets
        reach it: (source, destination, port)."""
        for dst in self.pods:
            ports = self.tcp_ports(dst)
            src = next((p for p in self.pods if p.spec.node_name != dst.spec.node_name
                        and ports and self.policy_allows(p, dst, ports[0])), None)
            if src:
                return src, dst, ports[0]
        return None

    @staticmethod
    def declared_tcp_ports(pod: Pod) -> list[int]:
        return [p.container_port for c in pod.spec.containers for p in c.ports if p.protocol == "TCP"]

    def tcp_ports(self, pod: Pod) -> list[int]:
        """Declared TCP ports that are meant for the network: a port whose only listeners are
        on 127.0.0.1 (kube-dns's 10053, say) serves the pod itself and is left out. A port
        nobody listens on stays in: a probe to it must show the refusal."""
        listeners = conntable.listening(self.holder(pod))
        return [port for port in self.declared_tcp_ports(pod)
                if not listeners.get(port) or not all(a.startswith("127.") for a in listeners[port])]

    @staticmethod
    def serves_netexec(pod: Pod, port: int, protocol: str = "TCP") -> bool:
        """Does the container declaring this port run netlab's netexec (HTTP /hostname, UDP hostname)?"""
        for c in pod.spec.containers:
            if any(p.container_port == port and p.protocol == protocol for p in c.ports):
                argv = resolve(c.image, c.command, c.args,
                               [(p.container_port, p.protocol, p.name) for p in c.ports], {})
                return argv[:2] == [BUILTIN, "netexec"]
        return False

    def holder(self, pod: Pod) -> int:
        """The pod's holder (pause) process: /proc/PID/net shows the pod's network namespace."""
        return int(self.status.get(pod.meta.key, {}).get("holderPid") or 0)

    def container_pids(self, pod: Pod) -> dict[str, int]:
        """Process IDs of the pod's running containers (the pod spawner's children, in the pod's
        PID namespace); a container whose process is gone or a zombie is left out."""
        found = {}
        for c in self.status.get(pod.meta.key, {}).get("containers", []):
            if c.get("state") == "Running" and c.get("pid") and alive(int(c["pid"])):
                found[c["name"]] = int(c["pid"])
        return found

    # ------------------------------------------------------------------ services

    @cached_property
    def ready(self) -> set[str]:
        """Pods the agent reports ready: kube-proxy's rules send only to these."""
        return {key for key, st in self.status.items() if st.get("ready")}

    def endpoints(self, svc: Service, port: ServicePort) -> list[Endpoint]:
        return endpoints_for(svc, self.cluster.pods.values(), self.ready).get(port.name, [])

    def pod_of(self, ep: Endpoint) -> Pod:
        return self.cluster.pods[ep.pod]

    @cached_property
    def services(self) -> list[Service]:
        return [self.cluster.services[k] for k in sorted(self.cluster.services)
                if self.cluster.services[k].cluster_ip and not self.cluster.services[k].headless]

    def service_ports(self, protocol: str = "TCP") -> list[tuple[Service, ServicePort]]:
        return [(s, p) for s in self.services for p in s.ports if p.protocol == protocol]

    def client_for(self, svc: Service, node: Optional[Node] = None) -> Optional[Pod]:
        """A pod to send from: one that is not an endpoint (a pod reaching itself through its
        service is masqueraded to the node's address: the hairpin case), on `node` if given."""
        backends = {ep.pod for port in svc.ports for ep in self.endpoints(svc, port)}
        pods = [p for p in self.pods if node is None or p.spec.node_name == node.name]
        return next((p for p in pods if p.meta.key not in backends), pods[0] if pods else None)

    # ------------------------------------------------------------------ the lab around the nodes

    @property
    def client_netns(self) -> str:
        return names.client_netns(self.name)

    @property
    def client_ip(self) -> str:
        return netplan.client_ip(self.cluster)

    @property
    def internet_netns(self) -> str:
        return names.internet_netns(self.name)

    @property
    def internet_ip(self) -> str:
        return netplan.internet_host_ip(self.cluster)

    @property
    def underlay_netns(self) -> str:
        return names.underlay_netns(self.name)

    # ------------------------------------------------------------------ capabilities

    @property
    def proxy_mode(self) -> str:
        return self.cluster.config.proxy_mode

    @cached_property
    def dns_service(self) -> Optional[Service]:
        """The cluster DNS service: the one holding the lab's DNS address, if any."""
        return next((s for s in self.services if s.cluster_ip == self.cluster.config.dns_ip), None)


def programmed(view: LabView) -> bool:
    """Every pod is ready and, in iptables mode, every node's rules DNAT to every endpoint."""
    if not view.ready >= set(view.cluster.pods):
        return False
    if view.proxy_mode != "iptables":
        return True
    wanted = {str(ep) for proto in ("TCP", "UDP") for s, p in view.service_ports(proto) for ep in view.endpoints(s, p)}
    for node in view.cluster.nodes if wanted else ():
        try:
            nat = rules.read(node.netns, ("nat",))["nat"]
        except rules.Unreadable:
            return False
        if not wanted <= {r.args[r.args.index("--to-destination") + 1] for r in nat.rules() if r.target == "DNAT"}:
            return False
    return True


def load_settled(lab: str, timeout: float = 5.0) -> tuple[LabView, bool]:
    """The lab once its data plane has caught up with its ready pods (the agent re-syncs the
    rules when readiness changes, so right after `up` they may lag), or as it is at timeout."""
    deadline = time.monotonic() + timeout
    while True:
        view = LabView.load(lab)
        if programmed(view):
            return view, True
        if time.monotonic() > deadline:
            return view, False
        time.sleep(0.1)


