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
        # .1 is the `kubernetes` service's address on a real cluster; keep it and the DNS IP out.
        service_net = ipaddress.ip_network(cfg.service_cidr)
        self.ips = Pool(cfg.service_cidr, reserved=[str(service_net.network_address + 1)], first=1)
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
            if svc.load_balancer_ip and self._free_ip(self.lb, svc.load_balancer_ip):
                self.held_ips.add(self.lb.take(svc.load_balancer_ip))
            for port in svc.ports:
                if port.node_port and port.node_port not in self.node_ports:
                    self.node_ports.add(port.node_port)
                    self.held_ports.add(port.node_port)

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
        requested = (svc.cluster_ip, [p.node_port for p in svc.ports], svc.load_balancer_ip)
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
        if svc.headless:
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
            # The DNS address is only handed to the service that asks for it by name.
            held_dns = self.ips.is_free(self.dns_reserved)
            if held_dns:
                self.ips.take(self.dns_reserved)
            try:
                svc.cluster_ip = self.ips.allocate()
            except Exhausted:
                raise InvalidError(f"no free address left in {self.cfg.service_cidr}, the service "
                                   f"range (spec.network.serviceCIDR in "
                                   f"{self.cfg.source or 'lab.yaml'})",
                                   **self._where(svc, "spec.clusterIP")) from None
            finally:
                if held_dns:
                    self.ips.release(self.dns_reserved)
            taken.append(svc.cluster_ip)

    def _admit_ports(self, svc: Service, taken: list[int]) -> None:
        if svc.type == "ClusterIP":
            return
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
        if svc.type != "LoadBalancer":
            return
        where = self._where(svc, "spec.loadBalancerIP")
        if svc.load_balancer_ip:
            if not self.lb.contains(svc.load_balancer_ip):
                raise InvalidError(f"not in the lab's load-balancer pool {self.cfg.lb_pool}",
                                   value=svc.load_balancer_ip, **where)
            if svc.load_balancer_ip not in self.held_ips and not self.lb.is_free(svc.load_balancer_ip):
                raise InvalidError("already allocated", value=svc.load_balancer_ip, **where)
            taken.append(self._take_ip(self.lb, svc.load_balancer_ip))
        else:
            try:
                svc.load_balancer_ip = self.lb.allocate()
            except Exhausted:
                raise InvalidError(f"no free address left in {self.cfg.lb_pool}, the load-balancer "
                                   f"pool (spec.network.loadBalancerPool in "
                                   f"{self.cfg.source or 'lab.yaml'})", **where) from None
            taken.append(svc.load_balancer_ip)

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
        if svc.load_balancer_ip and self.lb.contains(svc.load_balancer_ip):
            self.lb.release(svc.load_balancer_ip)
        for p in svc.ports:
            self.node_ports.discard(p.node_port)

    def restore(self, svc: Service) -> None:
        """Re-register an already-admitted service (loading state.json)."""
        if svc.cluster_ip and not svc.headless:
            self.ips.take(svc.cluster_ip)
        if svc.load_balancer_ip:
            self.lb.take(svc.load_balancer_ip)
        self.node_ports.update(p.node_port for p in svc.ports if p.node_port)


def fill_service_manifest(svc: Service, doc: dict) -> None:
    spec = doc.setdefault("spec", {})
    spec["clusterIP"] = svc.cluster_ip
    spec["type"] = svc.type
    for raw_port, port in zip(spec.get("ports") or [], svc.ports):
        if port.node_port:
            raw_port["nodePort"] = port.node_port
    if svc.load_balancer_ip:
        spec["loadBalancerIP"] = svc.load_balancer_ip
        doc.setdefault("status", {})["loadBalancer"] = {"ingress": [{"ip": svc.load_balancer_ip}]}


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
