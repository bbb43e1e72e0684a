"""The Kubernetes objects netlab understands, parsed from ordinary v1 manifests.

Fields the API server would fill in (a pod's node and IP, a service's clusterIP and
nodePorts) live on the objects too, so the stored state reads like `kubectl get -o yaml`.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from .errors import PART_MAX, InvalidError
from .names import (check_dns_label, check_dns_subdomain, check_env_name, check_label_key,
                    check_label_value, check_pod_file_names, check_port_name, generated_name_length)
from .schema import KIND_SCHEMAS, find_unknown, unknown_field_message
from .selectors import Selector, selector_from_api

DEFAULT_NAMESPACE = "default"


@dataclass
class Meta:
    name: str
    namespace: str = DEFAULT_NAMESPACE
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    source: str = ""             # the file the object came from, for error messages
    raw: dict = field(default_factory=dict, repr=False)   # the manifest as written

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class ContainerPort:
    container_port: int
    name: str = ""
    protocol: str = "TCP"


@dataclass
class Probe:
    kind: str                    # httpGet, tcpSocket, exec
    port: Any = None             # number or named port
    path: str = "/"
    command: list[str] = field(default_factory=list)
    initial_delay: float = 0
    period: float = 10
    timeout: float = 1
    success_threshold: int = 1
    failure_threshold: int = 3


@dataclass
class Container:
    name: str
    image: str = ""
    command: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    ports: list[ContainerPort] = field(default_factory=list)
    env: list[tuple[str, str]] = field(default_factory=list)
    readiness_probe: Optional[Probe] = None
    liveness_probe: Optional[Probe] = None

    def port_named(self, name: str) -> Optional[ContainerPort]:
        return next((p for p in self.ports if p.name == name), None)


@dataclass
class PodSpec:
    containers: list[Container]
    node_name: str = ""
    node_selector: dict[str, str] = field(default_factory=dict)
    restart_policy: str = "Always"
    dns_policy: str = "ClusterFirst"
    hostname: str = ""
    subdomain: str = ""


@dataclass
class Pod:
    meta: Meta
    spec: PodSpec
    owner: str = ""              # "ReplicationController/<name>" for pods an RC made
    pod_ip: str = ""             # filled in by IPAM
    uid: str = ""
    created: float = 0.0

    kind = "Pod"

    @property
    def node(self) -> str:
        return self.spec.node_name

    @property
    def hostname(self) -> str:
        """kubelet's GeneratePodHostNameAndDomain: spec.hostname, else the pod's name cut to
        63 characters (a kernel hostname's limit) without a trailing '-' or '.'."""
        return self.spec.hostname or self.meta.name[:63].rstrip("-.")

    def find_port(self, name: str) -> Optional[ContainerPort]:
        for c in self.spec.containers:
            p = c.port_named(name)
            if p:
                return p
        return None


@dataclass
class ReplicationController:
    meta: Meta
    replicas: int
    selector: Selector
    template_labels: dict[str, str]
    template: PodSpec
    raw_template: dict = field(default_factory=dict)

    kind = "ReplicationController"


@dataclass
class ServicePort:
    port: int
    name: str = ""
    protocol: str = "TCP"
    target_port: Any = None      # int or a container port's name; defaults to port
    node_port: int = 0

    @property
    def target(self) -> Any:
        return self.port if self.target_port in (None, "", 0) else self.target_port


@dataclass
class Service:
    meta: Meta
    ports: list[ServicePort]
    selector: Optional[dict[str, str]] = None
    type: str = "ClusterIP"
    cluster_ip: str = ""         # "" = allocate; "None" = headless
    session_affinity: str = "None"
    affinity_timeout: int = 10800
    load_balancer_ip: str = ""   # requested (spec.loadBalancerIP) or allocated
    external_ips: list[str] = field(default_factory=list)
    created: float = 0.0         # when the API server admitted it (kubelet's env vars depend on it)
    external_name: str = ""      # type ExternalName: the DNS name it aliases (a CNAME, no rules)
    external_traffic_policy: str = ""    # Cluster | Local; "" when not externally accessible
    internal_traffic_policy: str = "Cluster"
    health_check_node_port: int = 0      # LoadBalancer + externalTrafficPolicy Local: allocated
    source_ranges: list[str] = field(default_factory=list)   # spec.loadBalancerSourceRanges
    lb_requested: list[str] = field(default_factory=list)    # several ingress IPs asked for by annotation
    lb_ingress: list[str] = field(default_factory=list)      # status.loadBalancer.ingress[].ip

    kind = "Service"

    @property
    def headless(self) -> bool:
        return self.cluster_ip == "None"

    @property
    def load_balancer_ips(self) -> list[str]:
        """The load balancer's addresses (status.loadBalancer.ingress), as kube-proxy reads them."""
        if self.type != "LoadBalancer":
            return []
        return list(self.lb_ingress) or ([self.load_balancer_ip] if self.load_balancer_ip else [])

    @property
    def externally_accessible(self) -> bool:
        """apiservice.ExternallyAccessible: a NodePort/LoadBalancer type or external IPs."""
        return self.type in ("NodePort", "LoadBalancer") or bool(self.external_ips)

    @property
    def external_policy_local(self) -> bool:
        return self.externally_accessible and self.external_traffic_policy == "Local"

    @property
    def internal_policy_local(self) -> bool:
        return self.internal_traffic_policy == "Local"


@dataclass
class Namespace:
    meta: Meta
    kind = "Namespace"


@dataclass
class EndpointAddress:
    """One backend address of a manually written Endpoints or EndpointSlice object."""
    ip: str
    node: str = ""               # nodeName: where kube-proxy's Local traffic policy looks
    ready: bool = True
    hostname: str = ""
    target: str = ""             # targetRef "ns/name" of a Pod, if any


@dataclass
class EndpointPortSpec:
    port: int
    name: str = ""
    protocol: str = "TCP"


@dataclass
class Endpoints:
    """v1 Endpoints written by hand, for a Service without a selector (the endpoints
    controller owns those of services with one)."""
    meta: Meta
    subsets: list[tuple[list[EndpointAddress], list[EndpointPortSpec]]]
    kind = "Endpoints"


SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass
class EndpointSlice:
    """discovery.k8s.io/v1 EndpointSlice; it belongs to the Service its
    kubernetes.io/service-name label names."""
    meta: Meta
    endpoints: list[EndpointAddress]
    ports: list[EndpointPortSpec]
    kind = "EndpointSlice"

    @property
    def service(self) -> str:
        return self.meta.labels.get(SERVICE_NAME_LABEL, "")


KINDS = {"Namespace": "v1", "Pod": "v1", "ReplicationController": "v1", "Service": "v1",
         "Endpoints": "v1", "EndpointSlice": "discovery.k8s.io/v1"}


# ---------------------------------------------------------------- parsing helpers

INT32_MAX = 2 ** 31 - 1
ANNOTATIONS_MAX = 256 * 1024           # the API server's limit on all annotations of an object
_BAD_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_BAD_TEXT = re.compile(r"\x00")


class _Where:
    """Carries file and object into every error raised while parsing one object."""

    def __init__(self, file: str, obj: str):
        self.file, self.obj = file, obj

    def err(self, field_path: str, message: str, value=None) -> InvalidError:
        return InvalidError(message, value=value, file=self.file, obj=self.obj, field=field_path)

    def map(self, value, path: str) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.err(path, "must be a mapping", value)
        return value

    def list(self, value, path: str) -> list:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.err(path, "must be a list", value)
        return value

    def str(self, value, path: str, required: bool = False, text: bool = False) -> str:
        """A string field. Numbers are taken as their text, as before; anything else is refused.

        No control character may reach a rule, a file or a process's environment: a single-line
        field refuses them all; `text=True` (command, args, env values) allows tab and newline
        but never NUL, which no exec or environment can carry.
        """
        if value is None or value == "":
            if required:
                raise self.err(path, "Required value")
            return ""
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise self.err(path, "must be a string", value)
        value = str(value)
        bad = _BAD_TEXT if text else _BAD_LINE
        if bad.search(value):
            what = "a NUL character" if text else "control characters (such as a newline)"
            raise self.err(path, f"must not contain {what}", value)
        return value

    def int(self, value, path: str, lo: int | None = None, hi: int | None = None,
            required: bool = False, default: int = 0) -> int:
        if value is None:
            if required:
                raise self.err(path, "Required value")
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.err(path, "must be an integer", value)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            if hi is None:
                raise self.err(path, f"must be greater than or equal to {lo}", value)
            if lo is None:
                raise self.err(path, f"must be less than or equal to {hi}", value)
            raise self.err(path, f"must be between {lo} and {hi}, inclusive", value)
        if not -INT32_MAX - 1 <= value <= INT32_MAX:      # the API's int32 fields
            raise self.err(path, f"must be less than or equal to {INT32_MAX}", value)
        return value

    def ipv4(self, value, path: str) -> str:
        """An IPv4 address (netlab's networks are IPv4 only), as the API server checks IPs."""
        text = self.str(value, path, required=True)
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            raise self.err(path, "must be a valid IP address, (e.g. 10.9.8.7)", value) from None
        if addr.version != 4:
            raise self.err(path, "must be a valid IP address: netlab's networks are IPv4 only", value)
        return str(addr)

    def external_ip(self, value, path: str) -> str:
        text = self.ipv4(value, path)
        addr = ipaddress.IPv4Address(text)
        if addr.is_unspecified or addr.is_loopback or addr.is_link_local or addr.is_multicast:
            raise self.err(path, "may not be unspecified (0.0.0.0), loopback (127.0.0.0/8), "
                           "link-local (169.254.0.0/16) or multicast (224.0.0.0/4)", value)
        return text

    def cidr(self, value, path: str) -> str:
        text = self.str(value, path, required=True)
        try:
            return str(ipaddress.IPv4Network(text, strict=False))
        except ValueError:
            raise self.err(path, "must be a valid IPv4 CIDR (e.g. 192.0.2.0/24)", value) from None

    def port_name(self, value: str, path: str) -> str:
        problem = check_port_name(value)
        if problem:
            raise self.err(path, problem, value)
        return value

    def port_num_or_name(self, value, path: str):
        """An IntOrString port (a probe's port, a service's targetPort): 1-65535 or a port name."""
        if value is None or value == "":
            raise self.err(path, "Required value")
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return self.int(value, path, 1, 65535)
        return self.port_name(self.str(value, path), path)

    def labels(self, value, path: str) -> dict[str, str]:
        """A map of label keys to label values (labels, selectors, nodeSelector), checked as
        the API server checks them."""
        out = {}
        for k, v in self.map(value, path).items():
            if not isinstance(k, str):
                raise self.err(path, "label keys must be strings", k)
            kpath = f"{path}[{k}]" if len(k) <= 100 else path
            problem = check_label_key(k)
            if problem:
                raise self.err(kpath, problem, k)
            if isinstance(v, (dict, list)):
                raise self.err(kpath, "must be a string", v)
            v = "" if v is None else self.str(v if not isinstance(v, bool) else str(v).lower(), kpath)
            problem = check_label_value(v)
            if problem:
                raise self.err(kpath, problem, v)
            out[k] = v
        return out

    def annotations(self, value, path: str) -> dict[str, str]:
        out = {}
        for k, v in self.map(value, path).items():
            if not isinstance(k, str):
                raise self.err(path, "annotation keys must be strings", k)
            problem = check_label_key(k)
            if problem:
                raise self.err(f"{path}[{k}]" if len(k) <= 100 else path, problem, k)
            if v is not None and not isinstance(v, str):
                raise self.err(f"{path}[{k}]", "must be a string", v)
            out[k] = v or ""
        if sum(len(k) + len(v) for k, v in out.items()) > ANNOTATIONS_MAX:
            raise self.err(path, f"Too long: must have at most {ANNOTATIONS_MAX} bytes")
        return out

    def strlist(self, value, path: str, text: bool = False) -> list[str]:
        return [self.str(v, f"{path}[{i}]", text=text) for i, v in enumerate(self.list(value, path))]


def parse_meta(doc: dict, w: _Where, namespaced: bool = True) -> Meta:
    md = w.map(doc.get("metadata"), "metadata")
    name = w.str(md.get("name"), "metadata.name", required=True)
    problem = check_dns_subdomain(name)
    if problem:
        raise w.err("metadata.name", problem, name)
    ns = w.str(md.get("namespace"), "metadata.namespace") or DEFAULT_NAMESPACE
    if namespaced:
        problem = check_dns_label(ns)
        if problem:
            raise w.err("metadata.namespace", problem, ns)
    for key in ("generateName", "uid", "resourceVersion", "selfLink"):
        w.str(md.get(key), f"metadata.{key}")
    return Meta(name=name, namespace=ns if namespaced else "", raw=doc,
                labels=w.labels(md.get("labels"), "metadata.labels"),
                annotations=w.annotations(md.get("annotations"), "metadata.annotations"),
                source=w.file)


def _protocol(value, path: str, w: _Where) -> str:
    proto = w.str(value, path) or "TCP"
    if proto not in ("TCP", "UDP", "SCTP"):
        raise w.err(path, 'supported values: "SCTP", "TCP", "UDP"', proto)
    return proto


def _parse_probe(raw, path: str, w: _Where, ports: list[ContainerPort]) -> Optional[Probe]:
    if raw is None:
        return None
    raw = w.map(raw, path)
    common = dict(
        initial_delay=w.int(raw.get("initialDelaySeconds"), f"{path}.initialDelaySeconds", 0),
        period=w.int(raw.get("periodSeconds"), f"{path}.periodSeconds", 1, default=10),
        timeout=w.int(raw.get("timeoutSeconds"), f"{path}.timeoutSeconds", 1, default=1),
        success_threshold=w.int(raw.get("successThreshold"), f"{path}.successThreshold", 1, default=1),
        failure_threshold=w.int(raw.get("failureThreshold"), f"{path}.failureThreshold", 1, default=3),
    )

    def port(handler: dict, hpath: str):
        value = w.port_num_or_name(handler.get("port"), f"{hpath}.port")
        # The kubelet resolves a named probe port among the container's own ports only.
        if isinstance(value, str) and not any(p.name == value for p in ports):
            raise w.err(f"{hpath}.port", "port name is not declared by this container", value)
        return value

    handlers = [h for h in ("httpGet", "tcpSocket", "exec", "grpc") if h in raw]
    if len(handlers) > 1:
        raise w.err(f"{path}.{handlers[1]}", "may not specify more than 1 handler type")
    if "httpGet" in raw:
        hg = w.map(raw["httpGet"], f"{path}.httpGet")
        probe_path = w.str(hg.get("path"), f"{path}.httpGet.path") or "/"
        if " " in probe_path:
            raise w.err(f"{path}.httpGet.path", "must not contain spaces", probe_path)
        return Probe("httpGet", port=port(hg, f"{path}.httpGet"), path=probe_path, **common)
    if "tcpSocket" in raw:
        ts = w.map(raw["tcpSocket"], f"{path}.tcpSocket")
        return Probe("tcpSocket", port=port(ts, f"{path}.tcpSocket"), **common)
    if "exec" in raw:
        ex = w.map(raw["exec"], f"{path}.exec")
        return Probe("exec", command=w.strlist(ex.get("command"), f"{path}.exec.command", text=True),
                     **common)
    if "grpc" in raw:
        raise w.err(f"{path}.grpc", "netlab does not run gRPC probes: use httpGet, tcpSocket or exec")
    raise w.err(path, "must specify one of httpGet, tcpSocket or exec")


def _parse_container(rc, cpath: str, w: _Where) -> Container:
    rc = w.map(rc, cpath)
    name = w.str(rc.get("name"), f"{cpath}.name", required=True)
    problem = check_dns_label(name)
    if problem:
        raise w.err(f"{cpath}.name", problem, name)
    ports: list[ContainerPort] = []
    for j, rp in enumerate(w.list(rc.get("ports"), f"{cpath}.ports")):
        ppath = f"{cpath}.ports[{j}]"
        rp = w.map(rp, ppath)
        pname = w.str(rp.get("name"), f"{ppath}.name")
        ports.append(ContainerPort(
            container_port=w.int(rp.get("containerPort"), f"{ppath}.containerPort", 1, 65535, required=True),
            name=w.port_name(pname, f"{ppath}.name") if pname else "",
            protocol=_protocol(rp.get("protocol"), f"{ppath}.protocol", w)))
        w.int(rp.get("hostPort"), f"{ppath}.hostPort", 0, 65535)
    env = []
    for j, re_ in enumerate(w.list(rc.get("env"), f"{cpath}.env")):
        epath = f"{cpath}.env[{j}]"
        re_ = w.map(re_, epath)
        ename = w.str(re_.get("name"), f"{epath}.name", required=True)
        problem = check_env_name(ename)
        if problem:
            raise w.err(f"{epath}.name", problem, ename)
        env.append((ename, w.str(re_.get("value"), f"{epath}.value", text=True)))
    return Container(
        name=name, image=w.str(rc.get("image"), f"{cpath}.image"),
        command=w.strlist(rc.get("command"), f"{cpath}.command", text=True),
        args=w.strlist(rc.get("args"), f"{cpath}.args", text=True),
        ports=ports, env=env,
        readiness_probe=_parse_probe(rc.get("readinessProbe"), f"{cpath}.readinessProbe", w, ports),
        liveness_probe=_parse_probe(rc.get("livenessProbe"), f"{cpath}.livenessProbe", w, ports))


def parse_pod_spec(raw: dict, w: _Where, path: str = "spec") -> PodSpec:
    spec = w.map(raw, path)
    from .podsecurity import check as check_security   # volumes, users, capabilities (issue 9)
    check_security(spec, w.file, w.obj, path)
    containers = []
    seen_names: set[str] = set()
    seen_ports: set[str] = set()
    raw_containers = w.list(spec.get("containers"), f"{path}.containers")
    if not raw_containers:
        raise w.err(f"{path}.containers", "Required value: a pod needs at least one container")
    for i, rc in enumerate(raw_containers):
        cpath = f"{path}.containers[{i}]"
        container = _parse_container(rc, cpath, w)
        if container.name in seen_names:
            raise w.err(f"{cpath}.name", "Duplicate value", container.name)
        seen_names.add(container.name)
        for j, port in enumerate(container.ports):
            if port.name and port.name in seen_ports:
                # Named ports are looked up pod-wide (a service's targetPort): one name, one port.
                raise w.err(f"{cpath}.ports[{j}].name", "Duplicate value", port.name)
            seen_ports.add(port.name)
        containers.append(container)
    for i, ic in enumerate(w.list(spec.get("initContainers"), f"{path}.initContainers")):
        name = w.str(w.map(ic, f"{path}.initContainers[{i}]").get("name"),
                     f"{path}.initContainers[{i}].name", required=True)
        problem = check_dns_label(name)
        if problem:
            raise w.err(f"{path}.initContainers[{i}].name", problem, name)
    restart = w.str(spec.get("restartPolicy"), f"{path}.restartPolicy") or "Always"
    if restart not in ("Always", "OnFailure", "Never"):
        raise w.err(f"{path}.restartPolicy", 'supported values: "Always", "OnFailure", "Never"', restart)
    dns_policy = w.str(spec.get("dnsPolicy"), f"{path}.dnsPolicy") or "ClusterFirst"
    if dns_policy not in ("ClusterFirst", "Default", "None", "ClusterFirstWithHostNet"):
        raise w.err(f"{path}.dnsPolicy", 'supported values: "ClusterFirst", "Default", "None"', dns_policy)
    names = {}
    for key in ("hostname", "subdomain"):
        # Both are written into the pod's /etc/hosts and DNS records: RFC 1123 labels.
        value = w.str(spec.get(key), f"{path}.{key}")
        problem = check_dns_label(value) if value else None
        if problem:
            raise w.err(f"{path}.{key}", problem, value)
        names[key] = value
    return PodSpec(
        containers=containers,
        node_name=w.str(spec.get("nodeName"), f"{path}.nodeName"),
        node_selector=w.labels(spec.get("nodeSelector"), f"{path}.nodeSelector"),
        restart_policy=restart, dns_policy=dns_policy,
        hostname=names["hostname"], subdomain=names["subdomain"])


def _check_file_names(w: _Where, namespace: str, pod_len: int, spec: PodSpec, field_path: str,
                      name: str) -> None:
    problem = check_pod_file_names(namespace, pod_len, [c.name for c in spec.containers])
    if problem:
        raise w.err(field_path, problem, name)


def parse_pod(doc: dict, w: _Where) -> Pod:
    meta = parse_meta(doc, w)
    status = w.map(doc.get("status"), "status")
    md = w.map(doc.get("metadata"), "metadata")
    owner = ""
    for i, ref in enumerate(w.list(md.get("ownerReferences"), "metadata.ownerReferences")):
        ref = w.map(ref, f"metadata.ownerReferences[{i}]")
        kind = w.str(ref.get("kind"), f"metadata.ownerReferences[{i}].kind")
        name = w.str(ref.get("name"), f"metadata.ownerReferences[{i}].name")
        if ref.get("controller") is True:
            owner = f"{kind}/{name}"
    spec = parse_pod_spec(doc.get("spec"), w)
    _check_file_names(w, meta.namespace, len(meta.name.encode()), spec, "metadata.name", meta.name)
    # The API server ignores a new object's status; netlab reads back the address it gave a
    # pod (state.json), and drops one that is not an address at all.
    pod_ip = status.get("podIP")
    try:
        pod_ip = str(ipaddress.IPv4Address(pod_ip)) if isinstance(pod_ip, str) and pod_ip else ""
    except ValueError:
        pod_ip = ""
    return Pod(meta=meta, spec=spec, owner=owner, pod_ip=pod_ip,
               uid=w.str(md.get("uid"), "metadata.uid"))


def _rc_selector(raw, w: _Where) -> dict:
    """Check the selector's keys and values before the selector parser turns them into text."""
    raw = w.map(raw, "spec.selector")
    if "matchLabels" not in raw and "matchExpressions" not in raw:
        return w.labels(raw, "spec.selector")
    w.labels(raw.get("matchLabels"), "spec.selector.matchLabels")
    for i, expr in enumerate(w.list(raw.get("matchExpressions"), "spec.selector.matchExpressions")):
        epath = f"spec.selector.matchExpressions[{i}]"
        expr = w.map(expr, epath)
        key = w.str(expr.get("key"), f"{epath}.key")
        problem = check_label_key(key) if key else None
        if problem:
            raise w.err(f"{epath}.key", problem, key)
        w.str(expr.get("operator"), f"{epath}.operator")
        for j, value in enumerate(w.list(expr.get("values"), f"{epath}.values")):
            problem = check_label_value(w.str(value, f"{epath}.values[{j}]"))
            if problem:
                raise w.err(f"{epath}.values[{j}]", problem, value)
    return raw


def parse_rc(doc: dict, w: _Where) -> ReplicationController:
    meta = parse_meta(doc, w)
    if generated_name_length(meta.name) > 253:
        raise w.err("metadata.name", "must be no more than 247 characters: the pods it makes are "
                    "named <name>-<5 characters>, and a pod name has at most 253", meta.name)
    spec = w.map(doc.get("spec"), "spec")
    replicas = w.int(spec.get("replicas"), "spec.replicas", 0, 10000, default=1)
    w.int(spec.get("minReadySeconds"), "spec.minReadySeconds", 0)
    template = w.map(spec.get("template"), "spec.template")
    if not template:
        raise w.err("spec.template", "Required value")
    tmeta = w.map(template.get("metadata"), "spec.template.metadata")
    tlabels = w.labels(tmeta.get("labels"), "spec.template.metadata.labels")
    w.annotations(tmeta.get("annotations"), "spec.template.metadata.annotations")
    raw_selector = _rc_selector(spec.get("selector"), w)
    # As the API server does: an RC without a selector selects its template's labels.
    selector = selector_from_api(raw_selector or tlabels, file=w.file, obj=w.obj, field="spec.selector")
    if selector.empty():
        raise w.err("spec.selector", "Required value: selector or template labels")
    if not selector.matches(tlabels):
        raise w.err("spec.template.metadata.labels", "`selector` does not match template `labels`",
                    tlabels)
    pod_spec = parse_pod_spec(template.get("spec"), w, "spec.template.spec")
    if pod_spec.restart_policy != "Always":
        # As the API server insists: a controller's pods restart in place, always.
        raise w.err("spec.template.spec.restartPolicy", 'Unsupported value: supported values: "Always"',
                    pod_spec.restart_policy)
    _check_file_names(w, meta.namespace, generated_name_length(meta.name), pod_spec, "metadata.name",
                      meta.name)
    return ReplicationController(meta=meta, replicas=replicas, selector=selector,
                                 template_labels=tlabels, template=pod_spec, raw_template=template)


SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
# Several load-balancer addresses for one Service, the way MetalLB is asked for them.
LB_IPS_ANNOTATIONS = ("metallb.universe.tf/loadBalancerIPs", "metallb.io/loadBalancerIPs")


def parse_service(doc: dict, w: _Where) -> Service:
    meta = parse_meta(doc, w)
    problem = check_dns_label(meta.name)
    if problem:
        # Services become DNS names, so their names are labels, not subdomains.
        raise w.err("metadata.name", problem, meta.name)
    spec = w.map(doc.get("spec"), "spec")
    stype = w.str(spec.get("type"), "spec.type") or "ClusterIP"
    if stype not in SERVICE_TYPES:
        raise w.err("spec.type", 'supported values: "ClusterIP", "ExternalName", "LoadBalancer", '
                    '"NodePort"', stype)
    raw_ports = w.list(spec.get("ports"), "spec.ports")
    if not raw_ports and stype != "ExternalName":
        raise w.err("spec.ports", "Required value")
    ports: list[ServicePort] = []
    seen: set = set()
    for i, rp in enumerate(raw_ports):
        ppath = f"spec.ports[{i}]"
        rp = w.map(rp, ppath)
        name = w.str(rp.get("name"), f"{ppath}.name")
        if len(raw_ports) > 1 and not name:
            raise w.err(f"{ppath}.name", "Required value: ports of a multi-port service must be named")
        if name:
            problem = check_dns_label(name, 15)
            if problem:
                raise w.err(f"{ppath}.name", problem, name)
        port = w.int(rp.get("port"), f"{ppath}.port", 1, 65535, required=True)
        proto = _protocol(rp.get("protocol"), f"{ppath}.protocol", w)
        tp = rp.get("targetPort")
        if tp is not None and tp != "":
            tp = w.port_num_or_name(tp, f"{ppath}.targetPort")
        for key, what in (((port, proto), "port"), ((name,), "name")):
            if key in seen and key != ("",):
                raise w.err(f"{ppath}.{what}", "Duplicate value", key[0])
            seen.add(key)
        node_port = w.int(rp.get("nodePort"), f"{ppath}.nodePort", 0, 65535)
        if node_port and stype in ("ClusterIP", "ExternalName"):
            raise w.err(f"{ppath}.nodePort", f"may not be used when `type` is '{stype}'", node_port)
        w.str(rp.get("appProtocol"), f"{ppath}.appProtocol")
        ports.append(ServicePort(port=port, name=name, protocol=proto, target_port=tp, node_port=node_port))
    cluster_ip = w.str(spec.get("clusterIP"), "spec.clusterIP")
    if cluster_ip == "None" and stype != "ClusterIP":
        raise w.err("spec.clusterIP", f"may not be set to 'None' for {stype} services", cluster_ip)
    if cluster_ip and stype == "ExternalName":
        raise w.err("spec.clusterIP", "may not be set for ExternalName services", cluster_ip)
    if cluster_ip not in ("", "None"):
        cluster_ip = w.ipv4(cluster_ip, "spec.clusterIP")
    external_name = w.str(spec.get("externalName"), "spec.externalName")
    if stype == "ExternalName":
        problem = check_dns_subdomain(external_name.removesuffix(".")) if external_name else "Required value"
        if problem:
            raise w.err("spec.externalName", problem, external_name or None)
    selector = spec.get("selector")
    affinity = w.str(spec.get("sessionAffinity"), "spec.sessionAffinity") or "None"
    if affinity not in ("None", "ClientIP"):
        raise w.err("spec.sessionAffinity", 'supported values: "ClientIP", "None"', affinity)
    cfg = w.map(w.map(spec.get("sessionAffinityConfig"), "spec.sessionAffinityConfig").get("clientIP"),
                "spec.sessionAffinityConfig.clientIP")
    timeout = w.int(cfg.get("timeoutSeconds"), "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    1, 86400, default=10800)
    lb_ip = w.str(spec.get("loadBalancerIP"), "spec.loadBalancerIP")
    if lb_ip:
        lb_ip = w.ipv4(lb_ip, "spec.loadBalancerIP")
    external_ips = [w.external_ip(ip, f"spec.externalIPs[{i}]")
                    for i, ip in enumerate(w.list(spec.get("externalIPs"), "spec.externalIPs"))]
    ranges = [w.cidr(rng, f"spec.loadBalancerSourceRanges[{i}]")
              for i, rng in enumerate(w.list(spec.get("loadBalancerSourceRanges"),
                                             "spec.loadBalancerSourceRanges"))]
    if ranges and stype != "LoadBalancer":
        raise w.err("spec.loadBalancerSourceRanges", "may only be used when `type` is 'LoadBalancer'")
    accessible = stype in ("NodePort", "LoadBalancer") or bool(external_ips)
    etp = w.str(spec.get("externalTrafficPolicy"), "spec.externalTrafficPolicy")
    if etp and not accessible:
        raise w.err("spec.externalTrafficPolicy", "may only be set for externally-accessible services", etp)
    if etp and etp not in ("Cluster", "Local"):
        raise w.err("spec.externalTrafficPolicy", 'supported values: "Cluster", "Local"', etp)
    etp = (etp or "Cluster") if accessible else ""
    itp = w.str(spec.get("internalTrafficPolicy"), "spec.internalTrafficPolicy") or "Cluster"
    if itp not in ("Cluster", "Local"):
        raise w.err("spec.internalTrafficPolicy", 'supported values: "Cluster", "Local"', itp)
    hc_port = w.int(spec.get("healthCheckNodePort"), "spec.healthCheckNodePort", 0, 65535)
    if hc_port and not (stype == "LoadBalancer" and etp == "Local"):
        raise w.err("spec.healthCheckNodePort", "may only be set when `type` is 'LoadBalancer' and "
                    "`externalTrafficPolicy` is 'Local'", hc_port)
    requested: list[str] = []
    for key in LB_IPS_ANNOTATIONS:
        if key in meta.annotations and stype == "LoadBalancer":
            path = f"metadata.annotations[{key}]"
            requested = [w.ipv4(ip.strip(), path) for ip in meta.annotations[key].split(",") if ip.strip()]
            if lb_ip and requested:
                raise w.err(path, "may not be used together with spec.loadBalancerIP")
    status = w.map(doc.get("status"), "status")
    lb_status = w.map(w.map(status.get("loadBalancer"), "status.loadBalancer"), "status.loadBalancer")
    ingress = []
    for i, item in enumerate(w.list(lb_status.get("ingress"), "status.loadBalancer.ingress")):
        ip = w.map(item, f"status.loadBalancer.ingress[{i}]").get("ip")
        if ip:
            ingress.append(w.ipv4(ip, f"status.loadBalancer.ingress[{i}].ip"))
    return Service(meta=meta, ports=ports,
                   selector=w.labels(selector, "spec.selector") if selector is not None else None,
                   type=stype, cluster_ip=cluster_ip,
                   session_affinity=affinity, affinity_timeout=timeout,
                   load_balancer_ip=lb_ip, external_ips=external_ips,
                   external_name=external_name if stype == "ExternalName" else "",
                   external_traffic_policy=etp, internal_traffic_policy=itp,
                   health_check_node_port=hc_port, source_ranges=ranges,
                   lb_requested=requested, lb_ingress=ingress if stype == "LoadBalancer" else [])


def parse_namespace(doc: dict, w: _Where) -> Namespace:
    meta = parse_meta(doc, w, namespaced=False)
    problem = check_dns_label(meta.name)
    if problem:
        raise w.err("metadata.name", problem, meta.name)
    return Namespace(meta=meta)


def _endpoint_ip(w: _Where, value, path: str) -> str:
    """An endpoint address, checked as the API server checks them (ValidateEndpointIP)."""
    ip = w.ipv4(value, path)
    addr = ipaddress.IPv4Address(ip)
    for bad, what in ((addr.is_unspecified, "unspecified"), (addr.is_loopback, "loopback"),
                      (addr.is_link_local, "link-local"), (addr.is_multicast, "multicast")):
        if bad:
            raise w.err(path, f"may not be {what} address" if what == "unspecified" else
                        f"may not be in the {what} range (" + {"loopback": "127.0.0.0/8",
                        "link-local": "169.254.0.0/16", "multicast": "224.0.0.0/4"}[what] + ")", ip)
    return ip


def _endpoint_ports(w: _Where, raw, path: str, required_port: bool = True) -> list[EndpointPortSpec]:
    ports, seen = [], set()
    for i, rp in enumerate(w.list(raw, path)):
        ppath = f"{path}[{i}]"
        rp = w.map(rp, ppath)
        name = w.str(rp.get("name"), f"{ppath}.name")
        if name:
            problem = check_dns_label(name, 15)
            if problem:
                raise w.err(f"{ppath}.name", problem, name)
        if name in seen:
            raise w.err(f"{ppath}.name", "Duplicate value", name)
        seen.add(name)
        w.str(rp.get("appProtocol"), f"{ppath}.appProtocol")
        ports.append(EndpointPortSpec(
            port=w.int(rp.get("port"), f"{ppath}.port", 1, 65535, required=required_port),
            name=name, protocol=_protocol(rp.get("protocol"), f"{ppath}.protocol", w)))
    return ports


def _target(w: _Where, raw, path: str, namespace: str) -> str:
    ref = w.map(raw, path)
    if ref.get("kind", "Pod") != "Pod" or not ref.get("name"):
        return ""
    return f"{w.str(ref.get('namespace'), path + '.namespace') or namespace}/{w.str(ref.get('name'), path + '.name')}"


def parse_endpoints(doc: dict, w: _Where) -> Endpoints:
    meta = parse_meta(doc, w)
    subsets = []
    for i, raw in enumerate(w.list(doc.get("subsets"), "subsets")):
        spath = f"subsets[{i}]"
        raw = w.map(raw, spath)
        addresses = []
        for key, ready in (("addresses", True), ("notReadyAddresses", False)):
            for j, ra in enumerate(w.list(raw.get(key), f"{spath}.{key}")):
                apath = f"{spath}.{key}[{j}]"
                ra = w.map(ra, apath)
                hostname = w.str(ra.get("hostname"), f"{apath}.hostname")
                if hostname and check_dns_label(hostname):
                    raise w.err(f"{apath}.hostname", check_dns_label(hostname), hostname)
                addresses.append(EndpointAddress(
                    ip=_endpoint_ip(w, ra.get("ip"), f"{apath}.ip"), ready=ready, hostname=hostname,
                    node=w.str(ra.get("nodeName"), f"{apath}.nodeName"),
                    target=_target(w, ra.get("targetRef"), f"{apath}.targetRef", meta.namespace)))
        subsets.append((addresses, _endpoint_ports(w, raw.get("ports"), f"{spath}.ports")))
    return Endpoints(meta=meta, subsets=subsets)


def parse_endpoint_slice(doc: dict, w: _Where) -> EndpointSlice:
    meta = parse_meta(doc, w)
    family = w.str(doc.get("addressType"), "addressType", required=True)
    if family not in ("IPv4", "IPv6", "FQDN"):
        raise w.err("addressType", 'supported values: "FQDN", "IPv4", "IPv6"', family)
    if family != "IPv4":
        raise w.err("addressType", "netlab's networks are IPv4 only", family)
    if not meta.labels.get(SERVICE_NAME_LABEL):
        # Without it no Service owns the slice; kube-proxy would ignore it.
        raise w.err(f"metadata.labels[{SERVICE_NAME_LABEL}]", "Required value: the name of the "
                    "Service this slice belongs to")
    endpoints = []
    for i, re_ in enumerate(w.list(doc.get("endpoints"), "endpoints")):
        epath = f"endpoints[{i}]"
        re_ = w.map(re_, epath)
        addrs = w.list(re_.get("addresses"), f"{epath}.addresses")
        if len(addrs) != 1:
            raise w.err(f"{epath}.addresses", "must contain exactly 1 address" if addrs else "Required value")
        cond = w.map(re_.get("conditions"), f"{epath}.conditions")
        ready = cond.get("ready")
        if ready is not None and not isinstance(ready, bool):
            raise w.err(f"{epath}.conditions.ready", "must be a boolean", ready)
        hostname = w.str(re_.get("hostname"), f"{epath}.hostname")
        if hostname and check_dns_label(hostname):
            raise w.err(f"{epath}.hostname", check_dns_label(hostname), hostname)
        endpoints.append(EndpointAddress(
            ip=_endpoint_ip(w, addrs[0], f"{epath}.addresses[0]"), ready=ready is not False,
            hostname=hostname, node=w.str(re_.get("nodeName"), f"{epath}.nodeName"),
            target=_target(w, re_.get("targetRef"), f"{epath}.targetRef", meta.namespace)))
    return EndpointSlice(meta=meta, endpoints=endpoints, ports=_endpoint_ports(w, doc.get("ports"), "ports"))


PARSERS = {"Namespace": parse_namespace, "Pod": parse_pod,
           "ReplicationController": parse_rc, "Service": parse_service,
           "Endpoints": parse_endpoints, "EndpointSlice": parse_endpoint_slice}


OTHER_API_VERSIONS: dict[str, tuple[str, ...]] = {}   # kind -> older apiVersions still read

# Ingress, IngressClass and Secret: model/ingress.py (the ingress controller's objects) adds
# its kinds to PARSERS, KINDS and OTHER_API_VERSIONS when imported.
from . import ingress as _ingress  # noqa: E402,F401  (it imports this module's helpers)

# NetworkPolicy: model/netpol.py adds its kind to PARSERS and KINDS when imported.
from . import netpol as _netpol  # noqa: E402,F401  (it imports this module's helpers)


def describe_obj(doc: Any) -> str:
    """'Kind/name' for error messages: what the document says, when it says it as text."""
    if not isinstance(doc, dict):
        return ""
    md = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    kind, name = doc.get("kind", "?"), md.get("name", "?")
    kind = kind if isinstance(kind, str) and kind else "?"
    name = str(name) if isinstance(name, (str, int)) and not isinstance(name, bool) and name != "" else "?"
    return f"{kind[:PART_MAX]}/{name[:PART_MAX]}"


def parse_object(doc: Any, file: str, index: int = 0):
    """Parse one manifest document into its object; raise a one-line InvalidError if it is wrong."""
    if not isinstance(doc, dict):
        raise InvalidError(f"document {index + 1} is not a mapping", file=file)
    w = _Where(file, describe_obj(doc))
    kind = doc.get("kind")
    api = doc.get("apiVersion")
    if kind is None or kind == "":
        raise w.err("kind", "Required value")
    if not isinstance(kind, str):
        raise w.err("kind", "must be a string", kind)
    if kind not in PARSERS:
        raise w.err("kind", f"unknown kind (netlab knows {', '.join(sorted(PARSERS))})", kind)
    if api is None or api == "":
        raise w.err("apiVersion", "Required value")
    if api != KINDS[kind] and api not in OTHER_API_VERSIONS.get(kind, ()):
        raise w.err("apiVersion", f"{kind} is served as apiVersion {KINDS[kind]!r}", api)
    unknown = find_unknown(doc, KIND_SCHEMAS[kind])
    if unknown:
        # As `kubectl apply --validate=strict`: a misspelt field is an error, not a no-op.
        raise InvalidError(unknown_field_message(*unknown), file=file, obj=w.obj)
    return PARSERS[kind](doc, w)

# apps/v1 Deployment, ReplicaSet, DaemonSet, StatefulSet: model/workloads.py adds its kinds.
from . import workloads as _workloads  # noqa: E402,F401  (it imports this module's helpers)
