"""The lessons' own checks: small predicates over the live lab, each proven with real
connections (HTTP /hostname to netexec, which answers with the pod's name), like verify.

Each kind takes the check's dict from lesson.yaml and returns (passed, what was seen)."""
from __future__ import annotations

from collections import Counter
from typing import Callable

from ..probe import sockets
from ..probe.lab import LabView

KINDS: dict[str, Callable[[LabView, dict], tuple[bool, str]]] = {}


def kind(name: str):
    def register(fn):
        KINDS[name] = fn
        return fn
    return register


def run_exercise(view: LabView, spec: dict) -> tuple[bool, str]:
    fn = KINDS.get(spec.get("kind", ""))
    if fn is None:
        return False, f"unknown exercise kind {spec.get('kind')!r}"
    try:
        return fn(view, spec)
    except Exception as exc:            # a check that cannot run never passes
        return False, f"could not run: {type(exc).__name__}: {exc}"


def _service(view: LabView, spec: dict):
    key = f"{spec.get('namespace', 'default')}/{spec['service']}"
    return view.cluster.services.get(key)


def _hostnames(ns: str, ip: str, port: int, count: int) -> Counter:
    """Open `count` connections from namespace ns and count which pod answered each."""
    def go() -> Counter:
        seen: Counter = Counter()
        for _ in range(count):
            out = sockets.attempt_http(ip, port, "/hostname")
            seen[out.body if out.ok else f"({out.seen})"] += 1
        return seen
    return sockets.in_netns(ns, go)


@kind("serving-pods")
def serving_pods(view: LabView, spec: dict) -> tuple[bool, str]:
    """The Service has `count` ready endpoints, and connections to its ClusterIP from a pod
    land on `count` different pods."""
    svc = _service(view, spec)
    if svc is None:
        return False, f"no service {spec['service']}"
    port = svc.ports[0]
    eps = view.endpoints(svc, port)
    want = int(spec["count"])
    client = view.client_for(svc)
    seen = _hostnames(view.netns(client), svc.cluster_ip, port.port, max(12, want * 8))
    answered = {h for h in seen if not h.startswith("(")}
    line = (f"{len(eps)} endpoints; {sum(seen.values())} connections from {client.meta.name} to "
            f"{svc.cluster_ip}:{port.port} landed on {len(answered)} pods")
    return len(eps) == want and len(answered) == want, line


@kind("sticky")
def sticky(view: LabView, spec: dict) -> tuple[bool, str]:
    """sessionAffinity: ClientIP is set and every connection from one pod lands on one pod."""
    svc = _service(view, spec)
    if svc is None:
        return False, f"no service {spec['service']}"
    port = svc.ports[0]
    client = view.client_for(svc)
    seen = _hostnames(view.netns(client), svc.cluster_ip, port.port, 12)
    line = f"sessionAffinity {svc.session_affinity}; 12 connections from {client.meta.name} landed on {dict(seen)}"
    return svc.session_affinity == "ClientIP" and len(seen) == 1 and \
        not next(iter(seen)).startswith("("), line


@kind("nodeport")
def nodeport(view: LabView, spec: dict) -> tuple[bool, str]:
    """The Service is a NodePort (or LoadBalancer) on `nodePort`, and the outside client
    reaches a pod through that port of every node."""
    svc = _service(view, spec)
    if svc is None:
        return False, f"no service {spec['service']}"
    want = int(spec["nodePort"])
    ports = [p.node_port for p in svc.ports]
    if want not in ports:
        return False, f"service {svc.meta.name} is {svc.type} with node ports {ports or 'none'}, not {want}"
    seen = []
    ok = True
    for node in view.cluster.nodes:
        out = sockets.in_netns(view.client_netns, sockets.attempt_http, node.internal_ip, want, "/hostname")
        ok &= out.ok
        seen.append(f"{node.internal_ip}:{want} -> {out.body if out.ok else out.seen}")
    return ok, "from the outside client: " + "; ".join(seen)


@kind("no-service-var")
def no_service_var(view: LabView, spec: dict) -> tuple[bool, str]:
    """The Service exists, yet a pod (name prefix) that started before it has no
    {SVC}_SERVICE_HOST variable: kubelet writes them at container start."""
    svc = _service(view, spec)
    if svc is None:
        return False, f"no service {spec['service']} yet"
    var = spec["service"].upper().replace("-", "_") + "_SERVICE_HOST"
    pods = [p for p in view.pods if p.meta.name.startswith(spec["pod"])]
    if not pods:
        return False, f"no pod named {spec['pod']}*"
    pid = next(iter(view.container_pids(pods[0]).values()))
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
    has = var.encode() in env
    return not has, f"pod {pods[0].meta.name} {'has' if has else 'has no'} {var} (service {svc.cluster_ip})"
