"""Service discovery: environment variables in the containers, and cluster DNS.

The expected variables are spelled out here from the documents, not taken from netlab's own
generator, so a mistake there shows up as a failure. The environment compared is the one the
container really has (its netexec's /env over the pod IP, or /proc/PID/environ of a process
proven to sit in the pod's network namespace), never the agent's record of what it passed.
"""
from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ...kernel import netns
from ...model.objects import Pod, Service
from .. import sockets
from ..catalog import check
from ..lab import LabView, pod_hostname, pod_label
from ..result import SOCKET, STATE, Evidence, Kind
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


ENV_TIMEOUT = 2.0


@dataclass
class RealEnv:
    """A running container's environment as the container itself has it (not the agent's
    record of what it passed): read from the process, or asked of netexec over the pod IP."""

    container: str
    started: float                  # the container's start time (the agent's status)
    env: Optional[dict[str, str]]   # None: not readable (why says so)
    how: str                        # how it was read, or why it could not be
    kind: Kind = STATE
    bad: bool = False               # the read itself is a finding (a PID in another netns)
    own: frozenset[str] = frozenset()   # names the container's spec sets itself (they win)


def _netexec_port(view: LabView, pod: Pod, container) -> int:
    """A TCP port this container serves netexec on (its HTTP has /env), or 0."""
    for port in (p.container_port for p in container.ports if p.protocol == "TCP"):
        if view.serves_netexec(pod, port):
            return port
    return 0


def _parse_environ(raw: bytes) -> dict[str, str]:
    out = {}
    for entry in raw.split(b"\0"):
        key, eq, value = entry.partition(b"=")
        if eq and key:
            out[key.decode(errors="replace")] = value.decode(errors="replace")
    return out


def _from_proc(view: LabView, pod: Pod, name: str, pid: int, started: float) -> RealEnv:
    """/proc/PID/environ, once /proc/PID/ns/net is proven to be the pod's namespace. netlab's
    own servers (forked from the pod spawner, no exec) show the agent's environment there, and
    redis-server writes its process title over it: neither carries the pod's HOSTNAME."""
    ns = view.netns(pod)
    want, inode = netns.inode(ns), None
    try:
        inode = os.stat(f"/proc/{pid}/ns/net").st_ino
        raw = open(f"/proc/{pid}/environ", "rb").read()
    except OSError as exc:
        return RealEnv(name, started, None, f"/proc/{pid}/environ: {exc.strerror or exc}")
    if inode != want:
        return RealEnv(name, started, None, f"pid {pid} is in net:[{inode}], not the pod's net:[{want}] "
                       f"(/run/netns/{ns})", bad=True)
    env = _parse_environ(raw)
    if env.get("HOSTNAME") != pod_hostname(pod):
        # A built-in server forked without exec shows the agent's; redis-server writes over it.
        return RealEnv(name, started, None, f"/proc/{pid}/environ lacks HOSTNAME={pod_hostname(pod)}")
    return RealEnv(name, started, env, f"read /proc/{pid}/environ (pid in the pod's net:[{want}])")


def _from_netexec(view: LabView, pod: Pod, name: str, port: int, started: float) -> Optional[RealEnv]:
    out = sockets.in_netns(view.netns(pod), sockets.attempt_http, pod.pod_ip, port, "/env", ENV_TIMEOUT)
    if not out.ok:
        return None
    try:
        env = json.loads(out.body)
    except ValueError:
        return None
    return RealEnv(name, started, {str(k): str(v) for k, v in env.items()},
                   f"GET /env on {pod.pod_ip}:{port} (its netexec)", SOCKET)


def real_envs(view: LabView, pod: Pod) -> list[RealEnv]:
    """Each running container's own environment (or why it cannot be read)."""
    found = []
    pids = view.container_pids(pod)
    status = {c["name"]: c for c in view.status.get(pod.meta.key, {}).get("containers", [])}
    for container in pod.spec.containers:
        if container.name not in pids:
            continue
        started = float(status.get(container.name, {}).get("startedAt") or 0.0)
        port = _netexec_port(view, pod, container)
        got = _from_netexec(view, pod, container.name, port, started) if port else None
        real = got or _from_proc(view, pod, container.name, pids[container.name], started)
        real.own = frozenset(name for name, _ in container.env)
        found.append(real)
    return found


def service_created(svc: Service) -> float:
    """When the Service was created (0.0: the model does not say)."""
    return float(getattr(svc, "created", 0.0) or 0.0)


def judge_env(env: dict[str, str], services: list[Service], started: float, own: frozenset[str] = frozenset()
              ) -> tuple[dict[str, str], list[str], list[str], list[str]]:
    """(variables wanted, wrong ones as "K=V", services taken as newer for want of a creation
    time, services created after the container started) for one container's environment.

    A service created after the container started is rightly absent (kubelet sets the
    variables at start; a predecessor of the same name may have left old ones). One the
    model gives no creation time is judged by what is there: none of its variables means it
    may be newer; some of them means all must be right. Names the container's own spec sets
    (`own`) win over service variables, as in kubelet, and are not compared."""
    want: dict[str, str] = {}
    absent, later = [], []
    for svc in services:
        created = service_created(svc)
        if created and started and created > started:
            later.append(svc.meta.key)
            continue
        expected = expected_vars(svc)
        if not created and not any(k in env for k in expected):
            absent.append(svc.meta.key)
            continue
        want.update({k: v for k, v in expected.items() if k not in own})
    wrong = [f"{k}={env.get(k, '<unset>')}" for k, v in want.items() if env.get(k) != v]
    return want, wrong, absent, later


def _env_capable(view: LabView) -> bool:
    return importlib.util.find_spec("netlab.model.envvars") is not None and bool(view.services)


def _visible(view: LabView, pod: Pod) -> list[Service]:
    return [s for s in view.services if s.meta.namespace == pod.meta.namespace or s.meta.key == MASTER]


def _unreadable(ev: Evidence, skipped: list[str]) -> None:
    """Containers with neither netexec's /env nor a /proc/PID/environ of their own (netlab's
    built-in servers are forked without exec; redis-server writes its title over it)."""
    if skipped:
        ev.note(f"left out, environment not readable: {', '.join(skipped[:3])}" + (" ..." if len(skipped) > 3 else ""))


@check("env-service-vars",
       claim="Every container gets {SVC}_SERVICE_HOST/_PORT and the Docker-link variables "
             "({SVC}_PORT_<port>_TCP...) of each service of its namespace that existed when it "
             "started, with the ClusterIP (a service created later is absent: kubelet sets the "
             "variables at container start).",
       source=f"{DOC001} (环境变量: REDIS_MASTER_SERVICE_HOST=…), {DOC002} (容器的Service环境变量)",
       needs="environment-variable discovery in netlab and a service with a ClusterIP",
       applies=lambda view: _env_capable(view) and any(_visible(view, p) and view.container_pids(p)
                                                        for p in view.pods), evidence=STATE)
def env_service_vars(view: LabView, ev: Evidence) -> str:
    skipped, newer, undated = [], 0, set()
    for pod in view.pods:
        services = _visible(view, pod)
        if not services:
            continue
        for real in real_envs(view, pod):
            where = f"container {pod.meta.key}/{real.container}"
            if real.env is None:
                if real.bad:
                    ev.read(where, "its process (agent's status)", "compare /proc/PID/ns/net with the pod's",
                            real.how, False, "a process in the pod's network namespace")
                else:
                    skipped.append(f"{pod.meta.key}/{real.container}")
                continue
            want, wrong, absent, later = judge_env(real.env, services, real.started, real.own)
            newer += len(later)
            undated.update(absent)
            counted = len(services) - len(absent) - len(later)
            seen = "; ".join(wrong[:3]) or f"{len(want)} variables as documented"
            if absent:
                seen += f"; none for {', '.join(absent)}"
            ev.add(where, f"{counted} of {len(services)} services", real.how, seen, not wrong,
                   "; ".join(f"{k}={want[k]}" for k in list(want)[:2]) + " ...", kind=real.kind)
    _unreadable(ev, skipped)
    if newer:
        ev.note(f"{newer} service/container pair(s) left out: the service was created after the container started")
    if undated:
        ev.note(f"no variables for {', '.join(sorted(undated))} in some containers, taken as created after "
                "them: the model records no creation time for services")
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
       applies=lambda view: _env_capable(view) and any(_foreign(view, p) and view.container_pids(p)
                                                        for p in view.pods), evidence=STATE)
def env_namespace_scoped(view: LabView, ev: Evidence) -> str:
    skipped = []
    for pod in view.pods:
        foreign = _foreign(view, pod)
        for real in real_envs(view, pod) if foreign else ():
            where = f"container {pod.meta.key}/{real.container}"
            if real.env is None:
                if real.bad:
                    ev.read(where, "its process (agent's status)", "compare /proc/PID/ns/net with the pod's",
                            real.how, False, "a process in the pod's network namespace")
                else:
                    skipped.append(f"{pod.meta.key}/{real.container}")
                continue
            leaked = [f"{env_prefix(s.meta.name)}_SERVICE_HOST" for s in foreign
                      if f"{env_prefix(s.meta.name)}_SERVICE_HOST" in real.env]
            ev.add(where, f"services of other namespaces: {', '.join(s.meta.key for s in foreign)}",
                   real.how, f"has {', '.join(leaked)}" if leaked else "none of theirs",
                   not leaked, "no variables of other namespaces", kind=real.kind)
    _unreadable(ev, skipped)
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
    """What the pod sees as /etc/resolv.conf: read through its holder's root, in its own mount
    namespace (nothing if the pod has no holder)."""
    holder = view.holder(pod)
    try:
        text = Path(f"/proc/{holder}/root/etc/resolv.conf").read_text() if holder else ""
    except OSError:
        text = ""
    conf = ResolvConf([], [])
    for line in text.splitlines():
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
    """A cluster DNS service (reachable at its ClusterIP through kube-proxy's rules)."""
    return view.dns_service is not None


def _zone(view: LabView) -> str:
    return view.cluster.config.dns_domain


def _named(view: LabView) -> list[Service]:
    return [s for s in view.services if s is not view.dns_service]


@check("dns-service-fqdn",
       claim="Cluster DNS answers <service>.<namespace>.svc.cluster.local with the service's ClusterIP.",
       source=f"{DOC000} §6 (service名称.namespace.svc.cluster.local的A记录), {DOC002} (DNS)",
       needs="a cluster DNS service (at the lab's dnsServiceIP) and a ClusterFirst pod",
       applies=lambda view: _dns(view) and bool(cluster_first(view)), evidence=SOCKET)
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
       needs="a cluster DNS service and a ClusterFirst pod in a service's namespace",
       applies=lambda view: _dns(view) and bool(_short_name_pairs(view)), evidence=SOCKET)
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
       needs="a cluster DNS service and a service outside a ClusterFirst pod's namespace",
       applies=lambda view: _dns(view) and bool(_cross_pairs(view)), evidence=SOCKET)
def dns_other_namespace(view: LabView, ev: Evidence) -> str:
    for pod, svc in _cross_pairs(view):
        name = f"{svc.meta.name}.{svc.meta.namespace}"
        found, seen = resolve(view, pod, name)
        ev.add(pod_label(pod), f"{view.dns_service.cluster_ip}:53", f"resolve {name!r} (search list)",
               seen, found == [svc.cluster_ip], svc.cluster_ip)
        if silent(seen):
            break
    return "services of other namespaces resolved by name.namespace"
