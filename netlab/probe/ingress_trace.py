"""`netlab trace client HOST/PATH --ingress`: the two legs of a request through the Ingress
controller (document 004's figures), each walked and confirmed as `trace` does: the client to
a node's NodePort of the controller (kube-proxy -> the nginx pod), then the nginx pod to the
endpoints of the upstream the Ingress rules pick for that host and path (nginx connects to
pod IPs, not the ClusterIP)."""
from __future__ import annotations

from ..dataplane import endpoints
from ..model.addons import INGRESS_NAMESPACE, INGRESS_NODE_PORTS
from ..model.errors import InvalidError, NotFoundError
from ..plan.ingress import expected_route, plan
from .lab import LabView
from .trace import TraceResult, trace

MAX_ENDPOINTS = 3


def trace_ingress(view: LabView, src: str, target: str, confirm: bool = True) -> tuple[str, list[TraceResult]]:
    """(what the rules say, [leg 1, leg 2 per endpoint]) for a request to HOST[/PATH]."""
    host, slash, path = target.partition("/")
    path = slash + path if slash else "/"
    if not host:
        raise InvalidError("give the request's host and path, e.g. cafe.example.net/tea", value=target)
    cluster = view.cluster
    controller = next((p for p in view.pods if p.meta.namespace == INGRESS_NAMESPACE
                       and p.meta.key in view.ready), None)
    if controller is None:
        raise NotFoundError("no ready ingress controller pod in namespace ingress-nginx")
    eps = endpoints(cluster, view.ready)
    route = expected_route(cluster, eps, host, path)
    node = cluster.nodes[0]
    legs = [trace(view, src, f"{node.internal_ip}:{INGRESS_NODE_PORTS['http']}", confirm=confirm)]
    up = plan(cluster, eps)[1].get(route.upstream)
    said = f"{host}{path} -> {route} (HTTP {route.status})"
    for addr in (up.servers if up else [])[:MAX_ENDPOINTS]:
        legs.append(trace(view, controller.meta.key, addr, confirm=confirm))
    return said, legs
