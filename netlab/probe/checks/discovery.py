"""Service discovery: environment variables in the containers, and cluster DNS.

The expected variables are spelled out here from the documents, not taken from netlab's own
generator, so a mistake there shows up as a failure.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Optional

from ... import state
from ...model.objects import Pod, Service
from .. import sockets
from ..catalog import check
from ..lab import LabView, pod_label
from ..result import Evidence
from . import DOC000, DOC001, DOC002

MASTER = "default/kubernetes"     # the one service every namespace's pods also get variables for


def env_prefix(name: str) -> str:
    """{SVCNAME}: the service name upper-cased, '-' turned into '_' (001; kubelet also maps '.')."""
    return name.upper().replace("-", "_").replace(".", "_")


def expected_vars(svc: Service) -> dict[str, str]:
    """The variables 001 lists for a service (REDIS_MASTER_SERVICE_HOST=10.0.0.11, ...)."""
    name = env_prefix(svc.meta.name)
    first = svc.ports[0]
    want = {f"{name}_SERVICE_HOST": svc.cluster_ip, f"{name}_SERVICE_PORT": str(first.port),
            f"{name}_PORT": f"{first.protocol.lower()}://{svc.cluster_ip}:{first.port}"}
    for port in svc.ports:
        proto = port.protocol.lower()
        head = f"{name}_PORT_{port.port}_{port.protocol.upper()}"
        want.update({head: f"{proto}://{svc.cluster_ip}:{port.port}", f"{head}_PROTO": proto,
                     f"{head}_PORT": str(port.port), f"{head}_ADDR": svc.cluster_ip})
    return want


def started_envs(view: LabView, pod: Pod) -> dict[str, dict[str, str]]:
    """Each running container's environment as the agent started it (what `netlab exec` gets).

    /proc/PID/environ cannot stand in for it: netlab's built-in servers are forked from the
    agent without an exec, so the kernel still shows the agent's environment, and
    redis-server overwrites that memory with its process title.
    """
    return {c["name"]: c.get("env") or {} for c in view.status.get(pod.meta.key, {}).get("containers", [])
            if c.get("state") == "Running"}


def _env_capable(view: LabView) -> bool:
    return importlib.util.find_spec("netlab.model.envvars") is not None and bool(view.services)


def _visible(view: LabView, pod: Pod) -> list[Service]:
    return [s for s in view.services if s.meta.namespace == pod.meta.namespace or s.meta.key == MASTER]


@check("env-service-vars",
       claim="Every container gets {SVC}_SERVICE_HOST/_PORT and the Docker-link variables "
             "({SVC}_PORT_<port>_TCP...) of each service of its namespace, with the ClusterIP.",
       source=f"{DOC001} (环境变量: REDIS_MASTER_SERVICE_HOST=…), {DOC002} (容器的Service环境变量)",
       needs="environment-variable discovery in netlab and a service with a ClusterIP",
       applies=lambda view: _env_capable(view) and any(_visible(view, p) and started_envs(view, p)
                                                        for p in view.pods))
def env_service_vars(view: LabView, ev: Evidence) -> str:
    # netlab keeps no creation time for services; labs built by `up` create them before pods.
    ev.note("every service is taken to be older than every pod, as `netlab up` makes them")
    for pod in view.pods:
        services = _visible(view, pod)
        want = {k: v for svc in services for k, v in expected_vars(svc).items()}
        for name, env in started_envs(view, pod).items():
            wrong = [f"{k}={env.get(k, '<unset>')}" for k, v in want.items() if env.get(k) != v]
            ev.add(f"container {pod.meta.key}/{name}", f"{len(services)} services", "its environment at start",
                   "; ".join(wrong[:3]) or f"{len(want)} variables as documented",
                   not wrong, "; ".join(f"{k}={want[k]}" for k in list(want)[:2]) + " ...")
    return "every container carries its namespace's service variables"


def _foreign(view: LabView, pod: Pod) -> list[Service]:
    own = {s.meta.name for s in _visible(view, pod)}
    return [s for s in view.services if s.meta.namespace != pod.meta.namespace
            and s.meta.key != MASTER and s.meta.name not in own]


@check("env-namespace-scoped",
       claim="Service variables are per namespace: a pod gets none for services of other "
             "namespaces.",
       source=f"{DOC001} (环境变量是租户隔离的，即Pod只能获取同Namespace中的Service的环境变量)",
       needs="environment-variable discovery and a service in a namespace other than a pod's",
       applies=lambda view: _env_capable(view) and any(_foreign(view, p) and started_envs(view, p)
                                                        for p in view.pods))
def env_namespace_scoped(view: LabView, ev: Evidence) -> str:
    for pod in view.pods:
        foreign = _foreign(view, pod)
        for name, env in started_envs(view, pod).items() if foreign else ():
            leaked = [f"{env_prefix(s.meta.name)}_SERVICE_HOST" for s in foreign
                      if f"{env_prefix(s.meta.name)}_SERVICE_HOST" in env]
            ev.add(f"container {pod.meta.key}/{name}",
                   f"services of other namespaces: {', '.join(s.meta.key for s in foreign)}",
                   "its environment at start", f"has {', '.join(leaked)}" if leaked else "none of theirs",
                   not leaked, "no variables of other namespaces")
    return "no container saw another namespace's services"


# ---------------------------------------------------------------------- DNS


def query_a(server: str, name: str, timeout: float = sockets.CONNECT_TIMEOUT) -> tuple[list[str], str]:
    """One A query over UDP from the calling thread's namespace: (addresses, rcode name)."""
    from dnslib import QTYPE, RCODE, DNSRecord

    try:
        reply = DNSRecord.parse(DNSRecord.question(name, "A").send(server, 53, timeout=timeout))
    except OSError as exc:
        return [], sockets.describe_error(exc, timeout)
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A], RCODE[reply.header.rcode]


@dataclass
class ResolvConf:
    nameservers: list[str]
    search: list[str]
    ndots: int = 1


def resolv_conf(view: LabView, pod: Pod) -> ResolvConf:
    """What the pod sees as /etc/resolv.conf (netlab binds /etc/netns/<netns>/resolv.conf there)."""
    path = state.ETC_NETNS / view.netns(pod) / "resolv.conf"
    conf = ResolvConf([], [])
    for line in path.read_text().splitlines() if path.exists() else []:
        words = line.split()
        if words[:1] == ["nameserver"] and len(words) > 1:
            conf.nameservers.append(words[1])
        elif words[:1] == ["search"]:
            conf.search = words[1:]
        elif words[:1] == ["options"]:
            conf.ndots = next((int(w.split(":")[1]) for w in words[1:] if w.startswith("ndots:")), conf.ndots)
    return conf


def resolve(view: LabView, pod: Pod, name: str) -> tuple[list[str], str]:
    """What the pod's resolver answers for `name`, asked the way glibc asks: its first
    nameserver, the search domains first when the name has fewer than ndots dots."""
    conf = resolv_conf(view, pod)
    if not conf.nameservers:
        return [], "the pod's resolv.conf names no nameserver"
    tries = [f"{name}.{d}" for d in conf.search] if name.count(".") < conf.ndots else []
    tries.append(name)
    seen = "no query"
    for fqdn in tries:
        found, rcode = sockets.in_netns(view.netns(pod), query_a, conf.nameservers[0], fqdn)
        if found:
            return found, f"{fqdn} -> {', '.join(found)} (from {conf.nameservers[0]})"
        seen = f"{fqdn}: {rcode} (from {conf.nameservers[0]})"
        if silent(rcode):
            break
    return [], seen


def silent(seen: str) -> bool:
    """The server did not answer at all: further queries to it would only wait as long."""
    return "no answer within" in seen


def cluster_first(view: LabView) -> list[Pod]:
    """Pods whose dnsPolicy sends them to the cluster DNS (kube-dns's own pod uses Default)."""
    return [p for p in view.pods if p.spec.dns_policy in ("ClusterFirst", "ClusterFirstWithHostNet")]


def _dns(view: LabView) -> bool:
    """A cluster DNS service, reachable at its ClusterIP only through kube-proxy's rules."""
    return view.dns_service is not None and view.dataplane


def _zone(view: LabView) -> str:
    return view.cluster.config.dns_domain


def _named(view: LabView) -> list[Service]:
    return [s for s in view.services if s is not view.dns_service]


@check("dns-service-fqdn",
       claim="Cluster DNS answers <service>.<namespace>.svc.cluster.local with the service's ClusterIP.",
       source=f"{DOC000} §6 (service名称.namespace.svc.cluster.local的A记录), {DOC002} (DNS)",
       needs="a cluster DNS service (at the lab's dnsServiceIP), the service data plane and a ClusterFirst pod",
       applies=lambda view: _dns(view) and bool(cluster_first(view)))
def dns_service_fqdn(view: LabView, ev: Evidence) -> str:
    client = cluster_first(view)[0]
    for svc in view.services:
        fqdn = f"{svc.meta.name}.{svc.meta.namespace}.svc.{_zone(view)}"
        found, rcode = sockets.in_netns(view.netns(client), query_a, view.dns_service.cluster_ip, fqdn)
        ev.add(pod_label(client), f"{view.dns_service.cluster_ip}:53", f"A {fqdn}",
               ", ".join(found) or rcode, found == [svc.cluster_ip], svc.cluster_ip)
        if silent(rcode):
            break
    return "every service name resolved to its ClusterIP"


def _short_name_pairs(view: LabView) -> list[tuple[Pod, Service]]:
    pairs = []
    for svc in _named(view):
        pod = next((p for p in cluster_first(view) if p.meta.namespace == svc.meta.namespace), None)
        if pod:
            pairs.append((pod, svc))
    return pairs


@check("dns-short-name",
       claim="A pod finds a service of its own namespace by its bare name, through the search "
             "list in the pod's resolv.conf.",
       source=f"{DOC001} (同在这个命名空间的Pod就可以通过\"my-service\"来得到这个Service分配到的Cluster IP)",
       needs="a cluster DNS service, the service data plane and a ClusterFirst pod in a service's namespace",
       applies=lambda view: _dns(view) and bool(_short_name_pairs(view)))
def dns_short_name(view: LabView, ev: Evidence) -> str:
    for pod, svc in _short_name_pairs(view):
        found, seen = resolve(view, pod, svc.meta.name)
        ev.add(pod_label(pod), f"{view.dns_service.cluster_ip}:53", f"resolve {svc.meta.name!r} (search list)",
               seen, found == [svc.cluster_ip], svc.cluster_ip)
        if silent(seen):
            break
    return "bare service names resolved inside their namespace"


def _cross_pairs(view: LabView) -> list[tuple[Pod, Service]]:
    pairs = []
    for svc in view.services:
        pod: Optional[Pod] = next((p for p in cluster_first(view) if p.meta.namespace != svc.meta.namespace), None)
        if pod:
            pairs.append((pod, svc))
    return pairs


@check("dns-other-namespace",
       claim="A pod finds a service of another namespace as <service>.<namespace>.",
       source=f"{DOC001} (在其它名字空间的Pod则可以用全限定名\"my-service.my-ns\"来获得这个Service的地址)",
       needs="a cluster DNS service, the service data plane and a service outside a ClusterFirst pod's namespace",
       applies=lambda view: _dns(view) and bool(_cross_pairs(view)))
def dns_other_namespace(view: LabView, ev: Evidence) -> str:
    for pod, svc in _cross_pairs(view):
        name = f"{svc.meta.name}.{svc.meta.namespace}"
        found, seen = resolve(view, pod, name)
        ev.add(pod_label(pod), f"{view.dns_service.cluster_ip}:53", f"resolve {name!r} (search list)",
               seen, found == [svc.cluster_ip], svc.cluster_ip)
        if silent(seen):
            break
    return "services of other namespaces resolved by name.namespace"
