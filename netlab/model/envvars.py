"""Service discovery through environment variables, as kubelet writes them.

Follows kubelet's pkg/kubelet/envvars/envvars.go (FromServices, makeLinkVariables) and
makeEnvironmentVariables: a pod sees the services of its own namespace that have a
ClusterIP, plus the master service `kubernetes` of namespace default, as they were when
the pod started (the caller passes the services known then). The container's own env
comes after and wins on a name clash; its values may use $(VAR) to refer to earlier
entries and to service variables.

kubelet keeps these in Go maps, so the order a real container sees is arbitrary; netlab
sorts services by name and keeps FromServices' order within a service, so output is
stable and reads like the documents' examples.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Optional

from .objects import Container, Pod, Service

if TYPE_CHECKING:
    from .cluster import Cluster

MASTER_NAMESPACE = "default"
MASTER_SERVICES = ("kubernetes",)


def env_name(name: str) -> str:
    """makeEnvVariableName: upper case, '-' and '.' to '_', a leading digit gets a '_'."""
    out = name.replace(".", "_").replace("-", "_").upper()
    return "_" + out if out[:1].isdigit() else out


def _link_vars(svc: Service) -> list[tuple[str, str]]:
    """Docker-link compatible variables (makeLinkVariables)."""
    prefix = env_name(svc.meta.name)
    out: list[tuple[str, str]] = []
    for i, port in enumerate(svc.ports):
        proto = (port.protocol or "TCP").lower()
        url = f"{proto}://{svc.cluster_ip}:{port.port}"
        if i == 0:
            out.append((f"{prefix}_PORT", url))   # Docker special-cases the first port
        pp = f"{prefix}_PORT_{port.port}_{proto.upper()}"
        out += [(pp, url), (f"{pp}_PROTO", proto), (f"{pp}_PORT", str(port.port)),
                (f"{pp}_ADDR", svc.cluster_ip)]
    return out


def from_services(services: Iterable[Service]) -> list[tuple[str, str]]:
    """FromServices: the variables of each service with a ClusterIP, in the given order."""
    out: list[tuple[str, str]] = []
    for svc in services:
        if not svc.cluster_ip or svc.headless or not svc.ports:
            continue
        name = env_name(svc.meta.name)
        out.append((f"{name}_SERVICE_HOST", svc.cluster_ip))
        out.append((f"{name}_SERVICE_PORT", str(svc.ports[0].port)))
        out += [(f"{name}_SERVICE_PORT_{env_name(p.name)}", str(p.port)) for p in svc.ports if p.name]
        out += _link_vars(svc)
    return out


def service_env(services: Iterable[Service], namespace: str) -> list[tuple[str, str]]:
    """The service variables for a pod in `namespace`, given the services that existed
    when it started (kubelet's getServiceEnvVarMap)."""
    chosen: dict[str, Service] = {}
    for svc in services:
        if not svc.cluster_ip or svc.headless:
            continue
        if svc.meta.namespace == MASTER_NAMESPACE and svc.meta.name in MASTER_SERVICES:
            chosen.setdefault(svc.meta.name, svc)
        elif svc.meta.namespace == namespace:
            chosen[svc.meta.name] = svc
    return from_services(chosen[name] for name in sorted(chosen))


def expand(value: str, lookup: dict[str, str]) -> str:
    """kubelet's $(VAR) expansion: known names are replaced, `$$` is a literal `$`,
    anything else (unknown names, a lone `$`, an unclosed `$(`) stays as written."""
    out, i = [], 0
    while i < len(value):
        ch = value[i]
        if ch != "$" or i + 1 == len(value):
            out.append(ch)
            i += 1
        elif value[i + 1] == "$":
            out.append("$")
            i += 2
        elif value[i + 1] == "(" and ")" in value[i + 2:]:
            end = value.index(")", i + 2)
            name = value[i + 2:end]
            out.append(lookup.get(name, value[i:end + 1]))
            i = end + 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def container_env(cluster: "Cluster", pod: Pod, container: Container,
                  services: Optional[Iterable[Service]] = None) -> list[tuple[str, str]]:
    """The container's environment: service variables, then its own env (which wins).

    `services` are those that existed when the pod started; by default all of the
    cluster's (right for pods created after every service, as `netlab up` does).
    """
    svc_env = dict(service_env(cluster.services.values() if services is None else services,
                               pod.meta.namespace))
    own: dict[str, str] = {}
    for name, value in container.env:
        # Earlier container entries shadow service variables, as in kubelet's mapping.
        own[name] = expand(value, {**svc_env, **own}) if value else value
    return [(k, v) for k, v in svc_env.items() if k not in own] + list(own.items())
