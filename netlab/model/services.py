"""Service admission (ClusterIP, nodePort and load-balancer address allocation) and Endpoints."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Optional

from .config import LabConfig
from .errors import InvalidError
from .ipam import Exhausted, Pool
from .objects import Pod, Service, ServicePort

if TYPE_CHECKING:
    from .cluster import Cluster


class ServiceAllocator:
    """The API server's allocators: service IPs, node ports, and the load-balancer pool."""

    def __init__(self, cfg: LabConfig):
        self.cfg = cfg
        # .1 is the `kubernetes` service's address on a real cluster, and the DNS address is
        # kube-dns's: automatic allocation skips both; only a service that names one gets it.
        service_net = ipaddress.ip_network(cfg.service_cidr)
        self.ips = Pool(cfg.service_cidr, first=1)
        self.kube_reserved = str(service_net.network_address + 1)
        self.dns_reserved = cfg.dns_ip
        self.lb = Pool(cfg.lb_pool, first=1)
        self.node_ports: set[int] = set()
        # Explicit requests of the batch being admitted: automatic picks must not take them.
        self.held_ips: set[str] = set()
        self.held_ports: set[int] = set()

    def hold(self, services: Iterable[Service]) -> None:
        """Keep the addresses and ports a batch asks for by name out of automatic allocation."""
        for svc in services:
            if svc.cluster_ip and not svc.headless and self._free_ip(self.ips, svc.cluster_ip):
                self.held_ips.add(self.ips.take(svc.cluster_ip))
            for ip in [svc.load_balancer_ip, *svc.lb_requested]:
                if ip and self._free_ip(self.lb, ip):
                    self.held_ips.add(self.lb.take(ip))
            for port in [p.node_port for p in svc.ports] + [svc.health_check_node_port]:
                if port and port not in self.node_ports:
                    self.node_ports.add(port)
                    self.held_ports.add(port)

    def release_holds(self) -> None:
        for ip in self.held_ips:
            (self.lb if self.lb.contains(ip) else self.ips).release(ip)
        self.node_ports.difference_update(self.held_ports)
        self.held_ips.clear()
        self.held_ports.clear()

    @staticmethod
    def _free_ip(pool: Pool, address: str) -> bool:
        try:
            return pool.contains(address) and pool.is_free(address)
        except ValueError:
            return False

    def _take_ip(self, pool: Pool, address: str) -> str:
        if address in self.held_ips:          # held for exactly this request
            self.held_ips.discard(address)
            return address
        return pool.take(address)

    def _where(self, svc: Service, field_path: str) -> dict:
        return {"file": svc.meta.source, "obj": f"Service/{svc.meta.name}", "field": field_path}

    def admit(self, svc: Service, cluster: "Cluster") -> None:
        taken_ips: list[str] = []
        taken_ports: list[int] = []
        requested = (svc.cluster_ip, [p.node_port for p in svc.ports], svc.load_balancer_ip,
                     svc.health_check_node_port)
        try:
            self._check_addresses(svc)
            self._admit_ip(svc, taken_ips)
            self._admit_ports(svc, taken_ports)
            self._admit_lb(svc, taken_ips)
            self._check_target_ports(svc, cluster)
        except InvalidError:
            for ip in taken_ips:
                (self.lb if self.lb.contains(ip) else self.ips).release(ip)
            self.node_ports.difference_update(taken_ports)
            # Leave the object as it was asked for: a retry must not mistake our picks for requests.
            svc.cluster_ip, svc.load_balancer_ip = requested[0], requested[2]
            svc.health_check_node_port = requested[3]
            for port, node_port in zip(svc.ports, requested[1]):
                port.node_port = node_port
            raise

    def _check_addresses(self, svc: Service) -> None:
        """Every address that reaches an iptables rule is an IPv4 address, before anything is
        taken or saved (the parser checks them too; this covers objects built in code)."""
        fields = [("spec.loadBalancerIP", svc.load_balancer_ip)]
        fields += [(f"spec.externalIPs[{i}]", ip) for i, ip in enumerate(svc.external_ips)]
        for path, ip in fields:
            if not ip:
                continue
            try:
                ipaddress.IPv4Address(ip)
            except ValueError:
                raise InvalidError("must be a valid IP address, (e.g. 10.9.8.7)", value=ip,
                                   **self._where(svc, path)) from None

    def _admit_ip(self, svc: Service, taken: list[str]) -> None:
        if svc.headless or svc.type == "ExternalName":
            return
        if svc.cluster_ip:
            where = self._where(svc, "spec.clusterIP")
            try:
                ipaddress.IPv4Address(svc.cluster_ip)
            except ValueError:
                raise InvalidError("must be a valid IP address, (e.g. 10.9.8.7)", value=svc.cluster_ip,
                                   **where) from None
            if not self.ips.contains(svc.cluster_ip):
                raise InvalidError(f"provided IP is not in the valid range. The range of valid IPs is "
                                   f"{self.cfg.service_cidr}", value=svc.cluster_ip, **where)
            if svc.cluster_ip not in self.held_ips and not self.ips.is_free(svc.cluster_ip):
                raise InvalidError("provided IP is already allocated", value=svc.cluster_ip, **where)
            taken.append(self._take_ip(self.ips, svc.cluster_ip))
        else:
            # The DNS and `kubernetes` addresses go only to the services that ask for them by name.
            held_dns = [ip for ip in {self.dns_reserved, self.kube_reserved}
                        if self._free_ip(self.ips, ip)]
            for ip in held_dns:
                self.ips.take(ip)
            try:
                svc.cluster_ip = self.ips.allocate()
            except Exhausted:
                raise InvalidError(f"no free address left in {self.cfg.service_cidr}, the service "
                                   f"range (spec.network.serviceCIDR in "
                                   f"{self.cfg.source or 'lab.yaml'})",
                                   **self._where(svc, "spec.clusterIP")) from None
            finally:
                for ip in held_dns:
                    self.ips.release(ip)
            taken.append(svc.cluster_ip)

    def _admit_ports(self, svc: Service, taken: list[int]) -> None:
        if svc.type in ("ClusterIP", "ExternalName"):
            return
        self._admit_ports_of(svc, taken)
        self._admit_health_check_port(svc, taken)

    def _admit_health_check_port(self, svc: Service, taken: list[int]) -> None:
        """healthCheckNodePort: from the node-port range, for a LoadBalancer with Local policy."""
        if not (svc.type == "LoadBalancer" and svc.external_policy_local):
            svc.health_check_node_port = 0
            return
        lo, hi = self.cfg.nodeport_range
        where = self._where(svc, "spec.healthCheckNodePort")
        port = svc.health_check_node_port
        if port:
            if not lo <= port <= hi:
                raise InvalidError(f"provided port is not in the valid range. The range of valid "
                                   f"ports is {lo}-{hi}", value=port, **where)
            if port in taken or (port in self.node_ports and port not in self.held_ports):
                raise InvalidError("provided port is already allocated", value=port, **where)
            self.held_ports.discard(port)
        else:
            port = next((p for p in range(lo, hi + 1) if p not in self.node_ports), 0)
            if not port:
                raise InvalidError(f"no free node port left in {lo}-{hi}", **where)
        svc.health_check_node_port = port
        self.node_ports.add(port)
        taken.append(port)

    def _admit_ports_of(self, svc: Service, taken: list[int]) -> None:
        lo, hi = self.cfg.nodeport_range
        mine: dict[int, set[str]] = {}     # node port -> protocols this service already uses it for
        for i, port in enumerate(svc.ports):
            where = self._where(svc, f"spec.ports[{i}].nodePort")
            if port.node_port:
                if not lo <= port.node_port <= hi:
                    raise InvalidError(f"provided port is not in the valid range. The range of valid "
                                       f"ports is {lo}-{hi}", value=port.node_port, **where)
                if port.protocol in mine.get(port.node_port, ()):
                    raise InvalidError("Duplicate value", value=port.node_port, **where)
                # One service may use a node port for TCP and for UDP, as Kubernetes allows.
                shared = port.node_port in mine
                held = port.node_port in self.held_ports
                if not shared and not held and port.node_port in self.node_ports:
                    raise InvalidError("provided port is already allocated", value=port.node_port, **where)
                self.held_ports.discard(port.node_port)
            else:
                port.node_port = next((p for p in range(lo, hi + 1) if p not in self.node_ports), 0)
                if not port.node_port:
                    raise InvalidError(f"no free node port left in {lo}-{hi}", **where)
            mine.setdefault(port.node_port, set()).add(port.protocol)
            if port.node_port not in self.node_ports or port.node_port not in taken:
                self.node_ports.add(port.node_port)
                taken.append(port.node_port)

    def _admit_lb(self, svc: Service, taken: list[str]) -> None:
        """The cloud's load-balancer controller in miniature: status.loadBalancer.ingress gets the
        addresses asked for (spec.loadBalancerIP, or several by MetalLB's annotation), else one
        from the lab's pool."""
        if svc.type != "LoadBalancer":
            svc.lb_ingress = []
            return
        if svc.lb_requested:
            from .objects import LB_IPS_ANNOTATIONS
            key = next((k for k in LB_IPS_ANNOTATIONS if k in svc.meta.annotations), LB_IPS_ANNOTATIONS[0])
            wanted, where = svc.lb_requested, self._where(svc, f"metadata.annotations[{key}]")
        else:
            wanted, where = [svc.load_balancer_ip] if svc.load_balancer_ip else [], \
                self._where(svc, "spec.loadBalancerIP")
        svc.lb_ingress = []
        for ip in wanted:
            if not self.lb.contains(ip):
                raise InvalidError(f"not in the lab's load-balancer pool {self.cfg.lb_pool}", value=ip, **where)
            if ip in svc.lb_ingress or (ip not in self.held_ips and not self.lb.is_free(ip)):
                raise InvalidError("already allocated", value=ip, **where)
            taken.append(self._take_ip(self.lb, ip))
            svc.lb_ingress.append(ip)
        if svc.lb_ingress:
            svc.load_balancer_ip = svc.load_balancer_ip or svc.lb_ingress[0]
        else:
            try:
                svc.load_balancer_ip = self.lb.allocate()
            except Exhausted:
                raise InvalidError(f"no free address left in {self.cfg.lb_pool}, the load-balancer "
                                   f"pool (spec.network.loadBalancerPool in "
                                   f"{self.cfg.source or 'lab.yaml'})", **where) from None
            taken.append(svc.load_balancer_ip)
            svc.lb_ingress = [svc.load_balancer_ip]

    def _check_target_ports(self, svc: Service, cluster: "Cluster") -> None:
        """A named targetPort must be declared by some container of a pod the service selects."""
        if not svc.selector:
            return
        from .selectors import Selector
        sel = Selector.from_labels(svc.selector)
        templates = [p.spec for p in cluster.pods.values()
                     if p.meta.namespace == svc.meta.namespace and sel.matches(p.meta.labels)]
        templates += [rc.template for rc in cluster.rcs.values()
                      if rc.meta.namespace == svc.meta.namespace and sel.matches(rc.template_labels)]
        for i, port in enumerate(svc.ports):
            if isinstance(port.target, str) and templates:
                declared = any(c.port_named(port.target) for spec in templates for c in spec.containers)
                if not declared:
                    raise InvalidError("no container of the selected pods declares a port with this name",
                                       value=port.target, **self._where(svc, f"spec.ports[{i}].targetPort"))

    def release(self, svc: Service) -> None:
        if svc.cluster_ip and not svc.headless:
            self.ips.release(svc.cluster_ip)
        for ip in {svc.load_balancer_ip, *svc.lb_ingress} - {""}:
            if self.lb.contains(ip):
                self.lb.release(ip)
        for p in svc.ports:
            self.node_ports.discard(p.node_port)
        self.node_ports.discard(svc.health_check_node_port)

    def restore(self, svc: Service) -> None:
        """Re-register an already-admitted service (loading state.json)."""
        if svc.cluster_ip and not svc.headless:
            self.ips.take(svc.cluster_ip)
        for ip in sorted({svc.load_balancer_ip, *svc.lb_ingress} - {""}):
            self.lb.take(ip)
        self.node_ports.update(p.node_port for p in svc.ports if p.node_port)
        if svc.health_check_node_port:
            self.node_ports.add(svc.health_check_node_port)


def fill_service_manifest(svc: Service, doc: dict) -> None:
    spec = doc.setdefault("spec", {})
    if svc.type != "ExternalName":
        spec["clusterIP"] = svc.cluster_ip
    spec["type"] = svc.type
    for raw_port, port in zip(spec.get("ports") or [], svc.ports):
        if port.node_port:
            raw_port["nodePort"] = port.node_port
    if svc.external_traffic_policy:
        spec["externalTrafficPolicy"] = svc.external_traffic_policy
    if svc.health_check_node_port:
        spec["healthCheckNodePort"] = svc.health_check_node_port
    if svc.load_balancer_ip and not svc.lb_requested:
        spec["loadBalancerIP"] = svc.load_balancer_ip
    if svc.load_balancer_ips:
        doc.setdefault("status", {})["loadBalancer"] = {"ingress": [{"ip": ip} for ip in svc.load_balancer_ips]}


# ---------------------------------------------------------------------- Endpoints


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int
    pod: str          # namespace/name of the pod behind it
    node: str

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


def resolve_target_port(port: ServicePort, pod: Pod) -> Optional[int]:
    """The pod port a service port sends to: a number as is, a name looked up in the pod."""
    target = port.target
    if isinstance(target, int):
        return target
    cp = pod.find_port(target)
    return cp.container_port if cp and cp.protocol == port.protocol else None


def endpoints_for(svc: Service, pods: Iterable[Pod], ready: Optional[set[str]] = None
                  ) -> dict[str, list[Endpoint]]:
    """Endpoints per service port name: ready, addressed pods that the selector matches.

    `ready` is the set of pod keys that are Running and Ready; None treats every pod that
    has an IP as ready (what a lab is right after `up`, before any probe has run).
    """
    result: dict[str, list[Endpoint]] = {p.name: [] for p in svc.ports}
    if svc.selector is None:
        return result
    from .selectors import Selector
    sel = Selector.from_labels(svc.selector)
    chosen = sorted((p for p in pods
                     if p.meta.namespace == svc.meta.namespace and p.pod_ip
                     and sel.matches(p.meta.labels)
                     and (ready is None or p.meta.key in ready)),
                    key=lambda p: ipaddress.ip_address(p.pod_ip))
    for port in svc.ports:
        for pod in chosen:
            target = resolve_target_port(port, pod)
            if target:
                result[port.name].append(Endpoint(pod.pod_ip, target, pod.meta.key, pod.spec.node_name))
    return result


def manual_endpoints(svc: Service, cluster: "Cluster") -> dict[str, list[Endpoint]]:
    """Endpoints per service port name of a Service without a selector: what its hand-written
    Endpoints (same name) and EndpointSlices (labelled kubernetes.io/service-name) say.

    kube-proxy reads EndpointSlices; the EndpointSlice mirroring controller copies a hand-written
    Endpoints object into one, so both count, merged per "IP:port". A port matches by name and
    protocol; not-ready addresses are left out."""
    result: dict[str, list[Endpoint]] = {p.name: [] for p in svc.ports}
    sources = []
    written = cluster.endpoints.get(svc.meta.key)
    if written is not None:
        sources += written.subsets
    sources += [(s.endpoints, s.ports) for s in cluster.slices.values()
                if s.meta.namespace == svc.meta.namespace and s.service == svc.meta.name]
    for port in svc.ports:
        seen: set[str] = set()
        for addresses, ports in sources:
            for ep_port in ports:
                if ep_port.name != port.name or ep_port.protocol != port.protocol:
                    continue
                for addr in addresses:
                    ep = Endpoint(addr.ip, ep_port.port, addr.target, addr.node)
                    if addr.ready and str(ep) not in seen:
                        seen.add(str(ep))
                        result[port.name].append(ep)
        result[port.name].sort(key=lambda e: (ipaddress.ip_address(e.ip), e.port))
    return result


def service_endpoints(cluster: "Cluster", svc: Service, ready: Optional[set[str]] = None
                      ) -> dict[str, list[Endpoint]]:
    """A service's endpoints per port name: the selected pods' (the endpoints controller), or
    for a Service without a selector the hand-written ones; none for ExternalName."""
    if svc.type == "ExternalName":
        return {p.name: [] for p in svc.ports}
    if svc.selector is None:
        return manual_endpoints(svc, cluster)
    return endpoints_for(svc, cluster.pods.values(), ready)
