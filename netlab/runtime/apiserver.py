"""The lab API's routes: Kubernetes-shaped paths onto the agent's write path and its facts.

    GET    /api/v1/namespaces[/{name}]                       DELETE /api/v1/namespaces/{name}
    GET    /api/v1/nodes[/{name}]
    POST   /api/v1/nodes                                     a node joins (body: a v1 Node)
    DELETE /api/v1/nodes/{name}                              a node is drained and leaves
    GET    /api/v1[/namespaces/{ns}]/{pods|services|replicationcontrollers|endpoints}[/{name}]
    POST   /api/v1/namespaces/{ns}/{resource}                create (409 AlreadyExists)
    PUT    /api/v1/namespaces/{ns}/{resource}/{name}         replace (404 NotFound)
    DELETE /api/v1/namespaces/{ns}/{resource}/{name}
    GET|PUT /api/v1/namespaces/{ns}/replicationcontrollers/{name}/scale
    POST   /apis/netlab.io/v1/apply        a List: create or update each item, all or nothing
    GET|POST|DELETE /apis/netlab.io/v1/faults   list, inject, heal
    GET    /apis/netlab.io/v1/status       the agent's live process facts (status.json's content)
    POST   /apis/netlab.io/v1/sync         `up`: these pods are wired ({"wired": [...] | "all"})
    POST   /apis/netlab.io/v1/stop
    GET    /healthz
"""
from __future__ import annotations

import re
from typing import Any, Callable, Optional

from ..model.cluster import to_manifest
from ..model.errors import InvalidError, NotFoundError
from ..model.objects import parse_object
from .api import ApiError, Request, ok_status

RESOURCES = {"pods": ("Pod", "pods"), "services": ("Service", "services"),
             "replicationcontrollers": ("ReplicationController", "rcs"),
             "endpoints": ("Endpoints", "endpoints")}      # the hand-written ones
_NAME = r"(?P<name>[^/]+)"
_NS = r"/api/v1/namespaces/(?P<ns>[^/]+)"
_RES = r"(?P<res>pods|services|replicationcontrollers|endpoints)"

Handler = Callable[[Any, re.Match, Request], tuple[int, Any]]


class PathPattern:
    """A route's path regex, compiled when a path first gets past its literal prefix: the
    agent's first request (during `up`) compiled all 60-odd at once, about 25 ms of CPU."""

    _SPECIAL = frozenset("()[]{}.*+?\\^$|")

    def __init__(self, pattern: str):
        self.pattern = pattern + "$"
        self.prefix = pattern[:next((i for i, c in enumerate(pattern) if c in self._SPECIAL), len(pattern))]
        self._compiled: Optional[re.Pattern] = None

    def match(self, path: str) -> Optional[re.Match]:
        if not path.startswith(self.prefix):
            return None
        if self._compiled is None:
            self._compiled = re.compile(self.pattern)
        return self._compiled.match(path)


ROUTES: list[tuple[str, PathPattern, Handler]] = []


def route(method: str, pattern: str):
    def register(fn: Handler) -> Handler:
        ROUTES.append((method, PathPattern(pattern), fn))
        return fn
    return register


def dispatch(agent, req: Request) -> tuple[int, Any]:
    allowed = False
    for method, pattern, fn in ROUTES:
        m = pattern.match(req.path)
        if m:
            allowed = True
            if method == req.method:
                return fn(agent, m, req)
    if allowed:
        raise ApiError(405, "MethodNotAllowed", f"{req.method} is not allowed on {req.path}")
    raise ApiError(404, "NotFound", f"the server could not find the requested resource ({req.path})")


def _object_of(doc: Any, where: str):
    """A request body back into netlab's object; the source file travels as an annotation."""
    if not isinstance(doc, dict):
        raise ApiError(400, "BadRequest", "the body must be a JSON object")
    ann = (doc.get("metadata") or {}).get("annotations") if isinstance(doc.get("metadata"), dict) else None
    source = ann.get("netlab/source", where) if isinstance(ann, dict) else where
    obj = parse_object(doc, str(source))
    obj.meta.source = str(source)
    return obj


def _listing(kind: str, items: list) -> dict:
    return {"kind": f"{kind}List", "apiVersion": "v1", "metadata": {}, "items": items}


# ---------------------------------------------------------------------- reads


@route("GET", r"/healthz")
def healthz(agent, m, req):
    return 200, "ok"


@route("GET", r"/api/v1/namespaces")
def list_namespaces(agent, m, req):
    return 200, _listing("Namespace", [to_manifest(n) for n in agent.cluster.namespaces.values()])


@route("GET", r"/api/v1/namespaces/" + _NAME)
def get_namespace(agent, m, req):
    ns = agent.cluster.namespaces.get(m["name"])
    if ns is None:
        raise NotFoundError(f'namespaces "{m["name"]}" not found')
    return 200, to_manifest(ns)


@route("GET", r"/api/v1/nodes(?:/" + _NAME + ")?")
def get_nodes(agent, m, req):
    nodes = [agent.node_object(n) for n in agent.cluster.nodes if not m["name"] or n.name == m["name"]]
    if m["name"]:
        if not nodes:
            raise NotFoundError(f'nodes "{m["name"]}" not found')
        return 200, nodes[0]
    return 200, _listing("Node", nodes)


@route("POST", r"/api/v1/nodes")
def create_node(agent, m, req):
    """A node joins the lab (runtime/nodechanges.py); the body is a v1 Node, its name
    optional (netlab picks node<k>), its labels kept."""
    from ..model.nodes import node_of_request
    name, labels = node_of_request(req.body)
    node = agent.add_node(name, labels)
    return 201, agent.node_object(node)


@route("DELETE", r"/api/v1/nodes/" + _NAME)
def delete_node(agent, m, req):
    """The node is drained (its pods deleted, the controllers' replaced elsewhere) and leaves."""
    gone = agent.remove_node(m["name"])
    status = ok_status(f'node "{m["name"]}" deleted', name=m["name"], kind="nodes")
    status["details"]["evicted"] = gone
    return 200, status


@route("GET", r"/api/v1(?:/namespaces/(?P<ns>[^/]+))?/" + _RES + "(?:/" + _NAME + ")?")
def get_objects(agent, m, req):
    kind, attr = RESOURCES[m["res"]]
    store = getattr(agent.cluster, attr)
    objs = [o for o in store.values() if m["ns"] is None or o.meta.namespace == m["ns"]]
    if m["name"]:
        objs = [o for o in objs if o.meta.name == m["name"]]
        if not objs:
            raise NotFoundError(f'{m["res"]} "{m["name"]}" not found')
        return 200, agent.object_view(objs[0])
    return 200, _listing(kind, [agent.object_view(o) for o in objs])


# ---------------------------------------------------------------------- NetworkPolicy

_NETPOL = r"/apis/networking\.k8s\.io/v1(?:/namespaces/(?P<ns>[^/]+))?/networkpolicies"


@route("GET", _NETPOL + "(?:/" + _NAME + ")?")
def get_network_policies(agent, m, req):
    objs = sorted((p for p in agent.cluster.policies.values() if m["ns"] is None or p.meta.namespace == m["ns"]),
                  key=lambda p: p.meta.key)
    if m["name"]:
        objs = [p for p in objs if p.meta.name == m["name"]]
        if not objs:
            raise NotFoundError(f'networkpolicies.networking.k8s.io "{m["name"]}" not found')
        return 200, to_manifest(objs[0])
    listing = _listing("NetworkPolicy", [to_manifest(p) for p in objs])
    listing["apiVersion"] = "networking.k8s.io/v1"
    return 200, listing


@route("POST", _NETPOL)
@route("PUT", _NETPOL + "/" + _NAME)
def write_network_policy(agent, m, req):
    obj = _object_of(req.body, "request")
    if obj.kind != "NetworkPolicy":
        raise InvalidError("must be NetworkPolicy on this path", value=obj.kind, field="kind")
    if m["ns"] is None or obj.meta.namespace != m["ns"] or (m.groupdict().get("name") or obj.meta.name) != obj.meta.name:
        raise ApiError(400, "BadRequest", "the namespace and name of the object must match the request's")
    creating = req.method == "POST"
    agent.apply([obj], mode="create" if creating else "replace")
    return (201 if creating else 200), to_manifest(agent.cluster.policies[obj.meta.key])


@route("DELETE", _NETPOL + "/" + _NAME)
def delete_network_policy(agent, m, req):
    lines = agent.delete("networkpolicies", m["name"], m["ns"] or "default")
    return 200, ok_status(lines[0], name=m["name"], kind="networkpolicies")


@route("GET", r"/apis/netlab.io/v1/status")
def get_status(agent, m, req):
    agent.publish()
    return 200, agent.status(with_env=True)


@route("GET", r"/apis/netlab.io/v1/faults")
def get_faults(agent, m, req):
    return 200, agent.faults


# ---------------------------------------------------------------------- writes


@route("POST", _NS + "/" + _RES)
def create(agent, m, req):
    obj = _object_of(req.body, "request")
    _same_place(obj, m, None)
    agent.apply([obj], mode="create")
    return 201, agent.object_view(agent.stored(obj))


@route("PUT", _NS + "/" + _RES + "/" + _NAME)
def replace(agent, m, req):
    obj = _object_of(req.body, "request")
    _same_place(obj, m, m["name"])
    agent.apply([obj], mode="replace")
    return 200, agent.object_view(agent.stored(obj))


def _same_place(obj, m, name) -> None:
    kind, _ = RESOURCES[m["res"]]
    if obj.kind != kind:
        raise InvalidError(f"must be {kind} on this path", value=obj.kind, field="kind")
    if obj.meta.namespace != m["ns"]:
        raise ApiError(400, "BadRequest", f'the namespace of the object ({obj.meta.namespace}) does not '
                                          f'match the namespace on the request ({m["ns"]})')
    if name is not None and obj.meta.name != name:
        raise ApiError(400, "BadRequest", f'the name of the object ({obj.meta.name}) does not match '
                                          f'the name on the URL ({name})')


@route("DELETE", _NS + "/" + _RES + "/" + _NAME)
def delete(agent, m, req):
    lines = agent.delete(RESOURCES[m["res"]][1], m["name"], m["ns"])
    return 200, ok_status(lines[0], name=m["name"], kind=m["res"])


@route("DELETE", r"/api/v1/namespaces/" + _NAME)
def delete_namespace(agent, m, req):
    lines = agent.delete("namespaces", m["name"], "")
    return 200, ok_status(lines[0], name=m["name"], kind="namespaces")


@route("GET", _NS + r"/replicationcontrollers/" + _NAME + "/scale")
def get_scale(agent, m, req):
    rc = agent.cluster.rcs.get(f'{m["ns"]}/{m["name"]}')
    if rc is None:
        raise NotFoundError(f'replicationcontrollers "{m["name"]}" not found in namespace "{m["ns"]}"')
    return 200, _scale_object(rc, agent)


@route("PUT", _NS + r"/replicationcontrollers/" + _NAME + "/scale")
def put_scale(agent, m, req):
    body = req.body if isinstance(req.body, dict) else {}
    replicas = (body.get("spec") or {}).get("replicas") if isinstance(body.get("spec"), dict) else None
    if replicas is None:
        raise InvalidError("Required value", field="spec.replicas")
    line = agent.scale(m["name"], m["ns"], replicas)
    rc = agent.cluster.rcs[f'{m["ns"]}/{m["name"]}']
    return 200, dict(_scale_object(rc, agent), message=line)


def _scale_object(rc, agent) -> dict:
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": rc.meta.name, "namespace": rc.meta.namespace},
            "spec": {"replicas": rc.replicas},
            "status": {"replicas": len(agent.cluster.rc_pods(rc))}}


@route("POST", r"/apis/netlab.io/v1/apply")
def apply_list(agent, m, req):
    body = req.body
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise ApiError(400, "BadRequest", "the body must be a List with items")
    objects = [_object_of(doc, "request") for doc in body["items"]]
    return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success",
                 "lines": agent.apply(objects, mode="apply")}


@route("POST", r"/apis/netlab.io/v1/faults")
def inject_fault(agent, m, req):
    body = req.body if isinstance(req.body, dict) else {}
    return 201, ok_status(agent.inject_fault(**{k: body[k] for k in
                                                ("kind", "target", "namespace", "container", "grace")
                                                if k in body}))


@route("DELETE", r"/apis/netlab.io/v1/faults")
def heal_faults(agent, m, req):
    return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success", "lines": agent.heal_faults()}


@route("POST", r"/apis/netlab.io/v1/sync")
def sync(agent, m, req):
    body = req.body if isinstance(req.body, dict) else {}
    if agent.bootstrap_sync(body.get("wired", "all")):
        return 202, ok_status("pods recorded as wired; starting them")
    agent.publish()
    return 200, ok_status("synced")


@route("POST", r"/apis/netlab.io/v1/stop")
def stop(agent, m, req):
    agent.running = False
    return 200, ok_status("stopping")


# ---------------------------------------------------------------------- Ingress, IngressClass, Secret

_NET = r"/apis/networking\.k8s\.io/v1"
_INGRESS_KINDS = {"ingresses": ("Ingress", "ingresses"), "ingressclasses": ("IngressClass", "ingress_classes"),
                  "secrets": ("Secret", "secrets")}


def _ingress_view(obj, cluster) -> dict:
    """An Ingress with status.loadBalancer filled in, as ingress-nginx publishes its Service's
    address on the Ingresses it serves."""
    doc = to_manifest(obj)
    if obj.kind == "Ingress":
        from .ingress import ingress_address
        ip = ingress_address(cluster, obj)
        if ip:
            doc["status"] = {"loadBalancer": {"ingress": [{"ip": ip}]}}
    return doc


@route("GET", _NET + r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<res>ingresses)(?:/" + _NAME + ")?")
@route("GET", r"/api/v1(?:/namespaces/(?P<ns>[^/]+))?/(?P<res>secrets)(?:/" + _NAME + ")?")
@route("GET", _NET + r"/(?P<res>ingressclasses)(?:/" + _NAME + ")?")
def get_ingress_kinds(agent, m, req):
    kind, attr = _INGRESS_KINDS[m["res"]]
    ns = m.groupdict().get("ns")
    objs = [o for o in getattr(agent.cluster, attr).values() if ns is None or o.meta.namespace == ns]
    if m["name"]:
        objs = [o for o in objs if o.meta.name == m["name"]]
        if not objs:
            raise NotFoundError(f'{m["res"]} "{m["name"]}" not found')
        return 200, _ingress_view(objs[0], agent.cluster)
    listing = _listing(kind, [_ingress_view(o, agent.cluster) for o in objs])
    listing["apiVersion"] = "v1" if kind == "Secret" else "networking.k8s.io/v1"
    return 200, listing


@route("DELETE", _NET + r"/namespaces/(?P<ns>[^/]+)/(?P<res>ingresses)/" + _NAME)
@route("DELETE", r"/api/v1/namespaces/(?P<ns>[^/]+)/(?P<res>secrets)/" + _NAME)
@route("DELETE", _NET + r"/(?P<res>ingressclasses)/" + _NAME)
def delete_ingress_kind(agent, m, req):
    lines = agent.delete(m["res"], m["name"], m.groupdict().get("ns") or "")
    return 200, ok_status(lines[0], name=m["name"], kind=m["res"])


@route("POST", _NET + r"/namespaces/(?P<ns>[^/]+)/(?P<res>ingresses)")
@route("POST", r"/api/v1/namespaces/(?P<ns>[^/]+)/(?P<res>secrets)")
@route("POST", _NET + r"/(?P<res>ingressclasses)")
def create_ingress_kind(agent, m, req):
    obj = _object_of(req.body, "request")
    kind, attr = _INGRESS_KINDS[m["res"]]
    if obj.kind != kind:
        raise InvalidError(f"must be {kind} on this path", value=obj.kind, field="kind")
    if kind != "IngressClass" and obj.meta.namespace != m["ns"]:
        raise ApiError(400, "BadRequest", f'the namespace of the object ({obj.meta.namespace}) does not '
                                          f'match the namespace on the request ({m["ns"]})')
    agent.apply([obj], mode="create")
    stored = getattr(agent.cluster, attr)[obj.meta.name if kind == "IngressClass" else obj.meta.key]
    return 201, _ingress_view(stored, agent.cluster)


# kubectl's routes (discovery, Tables, watch, patch, logs) go before the ones above.
from . import kuberoutes  # noqa: E402,F401

# apps/v1 (runtime/appsroutes.py): Deployments, ReplicaSets, DaemonSets, StatefulSets.
from . import appsroutes  # noqa: E402,F401
