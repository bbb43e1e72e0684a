"""NetworkPolicy (networking.k8s.io/v1): the object, validated as the API server validates
it, and what it means: which pods a policy isolates, and whether a connection is allowed.

The meaning follows the Kubernetes documentation:
- a pod is isolated for ingress (egress) once any policy in its namespace selects it and has
  Ingress (Egress) in its policyTypes; an isolated pod accepts (sends) only what the union of
  those policies' rules allows; a pod no policy selects is not isolated;
- policyTypes defaults to [Ingress], plus Egress when the policy has egress rules;
- a rule allows a connection when one of its peers matches (no `from`/`to`: every source or
  destination) and one of its ports matches (no `ports`: every port);
- a peer is a podSelector (pods of the policy's namespace), a namespaceSelector (every pod of
  the namespaces it selects), both (the pods that match in the namespaces that match), or an
  ipBlock (a CIDR minus its `except` CIDRs); namespaces carry kubernetes.io/metadata.name;
- a port is numeric (with endPort, a range) or named: a container port of that name on the
  destination pod;
- traffic between a pod and its own node is always allowed (the node's probes and replies).

Pure: the compiler (plan/netpol.py) and verify's `policy` check both use this.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Optional

from . import objects as _objects
from .objects import Meta, Pod, _Where, parse_meta
from .selectors import Selector, selector_from_api

API_VERSION = "networking.k8s.io/v1"
KINDS = {"NetworkPolicy": API_VERSION}
NS_NAME_LABEL = "kubernetes.io/metadata.name"
PROTOCOLS = ("TCP", "UDP", "SCTP")


@dataclass(frozen=True)
class PolicyPort:
    protocol: str = "TCP"
    port: int = 0                 # 0 with no name: every port of the protocol
    name: str = ""                # a named port: the destination pod's containerPort name
    end_port: int = 0

    def __str__(self) -> str:
        if self.name:
            return f"{self.name}/{self.protocol}"
        if not self.port:
            return f"any/{self.protocol}"
        return f"{self.port}{f'-{self.end_port}' if self.end_port else ''}/{self.protocol}"


@dataclass(frozen=True)
class IPBlock:
    cidr: str
    excepts: tuple[str, ...] = ()

    def contains(self, ip: str) -> bool:
        addr = ipaddress.ip_address(ip)
        return addr in ipaddress.ip_network(self.cidr) and not any(
            addr in ipaddress.ip_network(e) for e in self.excepts)


@dataclass(frozen=True)
class Peer:
    pod_selector: Optional[Selector] = None
    namespace_selector: Optional[Selector] = None
    ip_block: Optional[IPBlock] = None

    def __str__(self) -> str:
        if self.ip_block:
            return f"ipBlock {self.ip_block.cidr}" + (
                f" except {','.join(self.ip_block.excepts)}" if self.ip_block.excepts else "")
        parts = []
        if self.namespace_selector is not None:
            parts.append(f"namespaces {{{self.namespace_selector}}}")
        if self.pod_selector is not None:
            parts.append(f"pods {{{self.pod_selector}}}")
        return " ".join(parts)


@dataclass
class Rule:
    peers: list[Peer] = field(default_factory=list)     # [] = every peer
    ports: list[PolicyPort] = field(default_factory=list)   # [] = every port


@dataclass
class NetworkPolicy:
    meta: Meta
    pod_selector: Selector
    ingress: list[Rule] = field(default_factory=list)
    egress: list[Rule] = field(default_factory=list)
    types: tuple[str, ...] = ("Ingress",)
    created: float = 0.0
    kind = "NetworkPolicy"

    @property
    def felix_name(self) -> str:
        """Felix's name for a Kubernetes policy: <namespace>/knp.default.<name>."""
        return f"{self.meta.namespace}/knp.default.{self.meta.name}"


# ---------------------------------------------------------------------- parsing


def _port(raw, path: str, w: _Where) -> PolicyPort:
    raw = w.map(raw, path)
    proto = w.str(raw.get("protocol"), f"{path}.protocol") or "TCP"
    if proto not in PROTOCOLS:
        raise w.err(f"{path}.protocol", 'supported values: "SCTP", "TCP", "UDP"', proto)
    port = raw.get("port")
    end = raw.get("endPort")
    if port is None:
        if end is not None:
            raise w.err(f"{path}.endPort", "may not be specified when `port` is not specified", end)
        return PolicyPort(proto)
    if isinstance(port, str) and not port.isdigit():
        from .names import check_port_name
        problem = check_port_name(port)
        if problem:
            raise w.err(f"{path}.port", problem, port)
        if end is not None:
            raise w.err(f"{path}.endPort", "may not be specified when `port` is non-numeric", end)
        return PolicyPort(proto, name=port)
    number = w.int(int(port) if isinstance(port, str) else port, f"{path}.port", 1, 65535)
    end_port = w.int(end, f"{path}.endPort", number, 65535) if end is not None else 0
    if end is not None and end_port < number:
        raise w.err(f"{path}.endPort", "must be greater than or equal to `port`", end)
    return PolicyPort(proto, number, end_port=end_port)


def _cidr(value, path: str, w: _Where) -> ipaddress.IPv4Network:
    text = w.str(value, path, required=True)
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        raise w.err(path, "must be a valid CIDR (network address with no host bits set)", text) from None


def _peer(raw, path: str, w: _Where) -> Peer:
    raw = w.map(raw, path)
    kinds = [k for k in ("podSelector", "namespaceSelector", "ipBlock") if raw.get(k) is not None]
    if not kinds:
        raise w.err(path, "must specify a peer")
    if "ipBlock" in kinds:
        if len(kinds) > 1:
            raise w.err(path, "may not specify more than 1 peer when ipBlock is specified")
        block = w.map(raw["ipBlock"], f"{path}.ipBlock")
        cidr = _cidr(block.get("cidr"), f"{path}.ipBlock.cidr", w)
        excepts = []
        for i, e in enumerate(w.list(block.get("except"), f"{path}.ipBlock.except")):
            net = _cidr(e, f"{path}.ipBlock.except[{i}]", w)
            if not net.subnet_of(cidr) or net == cidr:
                raise w.err(f"{path}.ipBlock.except[{i}]", "must be a strict subset of `cidr`", str(net))
            excepts.append(str(net))
        return Peer(ip_block=IPBlock(str(cidr), tuple(excepts)))

    def sel(key: str) -> Optional[Selector]:
        if raw.get(key) is None:
            return None
        return selector_from_api(w.map(raw[key], f"{path}.{key}") or {"matchLabels": {}},
                                 file=w.file, obj=w.obj, field=f"{path}.{key}")
    return Peer(sel("podSelector"), sel("namespaceSelector"))


def _rules(raw, path: str, peers_key: str, w: _Where) -> list[Rule]:
    out = []
    for i, r in enumerate(w.list(raw, path)):
        rp = f"{path}[{i}]"
        r = w.map(r, rp)
        peers = [_peer(p, f"{rp}.{peers_key}[{j}]", w) for j, p in enumerate(w.list(r.get(peers_key), f"{rp}.{peers_key}"))]
        ports = [_port(p, f"{rp}.ports[{j}]", w) for j, p in enumerate(w.list(r.get("ports"), f"{rp}.ports"))]
        out.append(Rule(peers, ports))
    return out


def parse_network_policy(doc: dict, w: _Where) -> NetworkPolicy:
    meta = parse_meta(doc, w)
    spec = w.map(doc.get("spec"), "spec")
    if spec.get("podSelector") is None:
        raise w.err("spec.podSelector", "Required value")
    selector = selector_from_api(w.map(spec["podSelector"], "spec.podSelector") or {"matchLabels": {}},
                                 file=w.file, obj=w.obj, field="spec.podSelector")
    ingress = _rules(spec.get("ingress"), "spec.ingress", "from", w)
    egress = _rules(spec.get("egress"), "spec.egress", "to", w)
    raw_types = spec.get("policyTypes")
    if raw_types is None:
        types = ("Ingress", "Egress") if spec.get("egress") is not None else ("Ingress",)
    else:
        types = tuple(w.str(t, f"spec.policyTypes[{i}]") for i, t in enumerate(w.list(raw_types, "spec.policyTypes")))
        for i, t in enumerate(types):
            if t not in ("Ingress", "Egress"):
                raise w.err(f"spec.policyTypes[{i}]", 'supported values: "Ingress", "Egress"', t)
        if len(set(types)) != len(types) or not types:
            raise w.err("spec.policyTypes", "must hold Ingress, Egress or both, once each", list(types))
    return NetworkPolicy(meta, selector, ingress, egress, tuple(sorted(types)))


PARSERS = {"NetworkPolicy": parse_network_policy}
_objects.PARSERS.update(PARSERS)        # whichever of the two modules is imported first
_objects.KINDS.update(KINDS)


# ---------------------------------------------------------------------- meaning


def namespace_labels(cluster, namespace: str) -> dict[str, str]:
    ns = cluster.namespaces.get(namespace)
    labels = dict(ns.meta.labels) if ns is not None else {}
    labels[NS_NAME_LABEL] = namespace
    return labels


def selects(policy: NetworkPolicy, pod: Pod) -> bool:
    return pod.meta.namespace == policy.meta.namespace and policy.pod_selector.matches(pod.meta.labels)


def policies_for(cluster, pod: Pod, direction: str) -> list[NetworkPolicy]:
    """The policies that isolate `pod` for "Ingress" or "Egress", in Felix's order (by name)."""
    return sorted((p for p in cluster.policies.values() if direction in p.types and selects(p, pod)),
                  key=lambda p: p.meta.key)


def peer_pods(cluster, policy: NetworkPolicy, peer: Peer) -> list[Pod]:
    """The pods a pod-or-namespace peer stands for (none for an ipBlock)."""
    if peer.ip_block is not None:
        return []
    out = []
    for pod in cluster.pods.values():
        if peer.namespace_selector is None:
            if pod.meta.namespace != policy.meta.namespace:
                continue
        elif not peer.namespace_selector.matches(namespace_labels(cluster, pod.meta.namespace)):
            continue
        if peer.pod_selector is not None and not peer.pod_selector.matches(pod.meta.labels):
            continue
        out.append(pod)
    return sorted(out, key=lambda p: p.meta.key)


def named_port(pod: Pod, name: str, protocol: str) -> int:
    for c in pod.spec.containers:
        for p in c.ports:
            if p.name == name and p.protocol == protocol:
                return p.container_port
    return 0


def port_matches(pp: PolicyPort, dst_pod: Optional[Pod], port: int, protocol: str) -> bool:
    if pp.protocol != protocol:
        return False
    if pp.name:
        return dst_pod is not None and named_port(dst_pod, pp.name, protocol) == port
    if not pp.port:
        return True
    return pp.port <= port <= (pp.end_port or pp.port)


def _peer_matches(cluster, policy: NetworkPolicy, peer: Peer, ip: str, pod: Optional[Pod]) -> bool:
    if peer.ip_block is not None:
        return peer.ip_block.contains(ip)
    return pod is not None and pod in peer_pods(cluster, policy, peer)


def _rule_allows(cluster, policy, rule: Rule, peer_ip: str, peer_pod, dst_pod, port: int, protocol: str) -> bool:
    peer_ok = not rule.peers or any(_peer_matches(cluster, policy, p, peer_ip, peer_pod) for p in rule.peers)
    port_ok = not rule.ports or any(port_matches(pp, dst_pod, port, protocol) for pp in rule.ports)
    return peer_ok and port_ok


@dataclass
class Verdict:
    allowed: bool
    why: str


def decide(cluster, src_ip: str, src_pod: Optional[Pod], dst_ip: str, dst_pod: Optional[Pod],
           port: int, protocol: str = "TCP") -> Verdict:
    """Whether a new connection src -> dst:port is allowed by the lab's policies, and why."""
    if src_pod is not None:
        egress = policies_for(cluster, src_pod, "Egress")
        if egress:
            allowing = [p for p in egress if any(_rule_allows(cluster, p, r, dst_ip, dst_pod, dst_pod, port, protocol)
                                                 for r in p.egress)]
            if not allowing:
                return Verdict(False, f"egress of {src_pod.meta.key} isolated by "
                               f"{', '.join(p.meta.name for p in egress)}; none allows {dst_ip}:{port}/{protocol}")
    if dst_pod is not None:
        ingress = policies_for(cluster, dst_pod, "Ingress")
        if ingress:
            allowing = [p for p in ingress if any(_rule_allows(cluster, p, r, src_ip, src_pod, dst_pod, port, protocol)
                                                  for r in p.ingress)]
            if not allowing:
                return Verdict(False, f"ingress of {dst_pod.meta.key} isolated by "
                               f"{', '.join(p.meta.name for p in ingress)}; none allows {src_ip} to port {port}/{protocol}")
            return Verdict(True, f"allowed by {', '.join(p.meta.name for p in allowing)}")
    return Verdict(True, "not isolated" if src_pod is None or not policies_for(cluster, src_pod, "Egress")
                   else "allowed by egress policy")

