"""The lab API's apps/v1 routes (Deployment, ReplicaSet, DaemonSet, StatefulSet), served by the
agent, the lab's one writer:

    GET    /apis/apps/v1                                               discovery
    GET    /apis/apps/v1[/namespaces/{ns}]/{resource}[/{name}]         list/get (?watch: see below)
    POST   /apis/apps/v1/namespaces/{ns}/{resource}                    create
    PUT    /apis/apps/v1/namespaces/{ns}/{resource}/{name}             replace
    PATCH  /apis/apps/v1/namespaces/{ns}/{resource}/{name}             merge / strategic / json patch
    DELETE /apis/apps/v1/namespaces/{ns}/{resource}/{name}             cascading
    GET|PUT|PATCH /apis/apps/v1/namespaces/{ns}/{resource}/{name}/scale
    GET    /apis/netlab.io/v1/namespaces/{ns}/deployments/{name}/rollout    `rollout status`'s answer

A watch answers at once with the current object as one ADDED/MODIFIED event (kubectl's
`rollout status` asks again), so the agent is never held.
"""
from __future__ import annotations

import copy
from typing import Any

from ..model import workloads as W
from ..model.errors import InvalidError, NotFoundError
from .api import ApiError, Request, ok_status
from .apiserver import ROUTES, PathPattern, _object_of
from .changes import APPS_RESOURCES, workload

_RES = r"(?P<res>deployments|replicasets|daemonsets|statefulsets)"
_APPS = r"/apis/apps/v1"
_NS = _APPS + r"/namespaces/(?P<ns>[^/]+)"
_NAME = r"(?P<name>[^/]+)"
_MINE: list = []
SHORT = {"deployments": ["deploy"], "replicasets": ["rs"], "daemonsets": ["ds"], "statefulsets": ["sts"]}


def route(method: str, pattern: str):
    def register(fn):
        _MINE.append((method, PathPattern(pattern), fn))
        return fn
    return register


def view(agent, obj) -> dict:
    """The object as the API serves it: its manifest, metadata filled in, and live status."""
    cluster = agent.cluster
    from . import kubeobjects as ko
    doc = W.manifest(obj)
    doc["apiVersion"], doc["kind"] = W.APPS, obj.kind
    md = doc.setdefault("metadata", {})
    md["name"], md["namespace"] = obj.meta.name, obj.meta.namespace
    ann = md.get("annotations") or {}
    for key in ko.INTERNAL_ANNOTATIONS:
        ann.pop(key, None)
    if ann:
        md["annotations"] = ann
    else:
        md.pop("annotations", None)
    md.setdefault("uid", ko.uid_of(agent.lab, obj.kind, obj.meta.key, obj.created))
    md.setdefault("generation", 1)
    md.setdefault("creationTimestamp", ko.timestamp(obj.created))
    if obj.owner:
        kind, _, name = obj.owner.partition("/")
        owner = agent.cluster.apps.get(f"{kind}/{obj.meta.namespace}/{name}")
        for ref in md.get("ownerReferences") or []:
            if owner is not None and ref.get("kind") == kind and ref.get("name") == name:
                ref["uid"] = ko.uid_of(agent.lab, kind, owner.meta.key, owner.created)
    ready = agent.ready_pods()
    avail = agent.available_pods() if hasattr(agent, "available_pods") else ready
    if isinstance(obj, W.Deployment):
        doc["status"] = W.deployment_status(cluster, obj, avail, ready)
        rs = W.current_replicaset(cluster, obj)
        if rs is not None:
            md.setdefault("annotations", {})[W.REVISION] = str(rs.revision)
    elif isinstance(obj, (W.ReplicaSet,)):
        pods = W.owned_pods(cluster, obj)
        doc["status"] = {"replicas": len(pods), "fullyLabeledReplicas": len(pods),
                         "readyReplicas": sum(p.meta.key in ready for p in pods),
                         "availableReplicas": sum(p.meta.key in avail for p in pods), "observedGeneration": 1}
    elif isinstance(obj, W.DaemonSet):
        doc["status"] = W.daemonset_status(cluster, obj, ready)
    else:
        doc["status"] = W.statefulset_status(cluster, obj, ready)
    return doc


def _kind(res: str) -> str:
    return APPS_RESOURCES[res]


def _list(agent, res: str, ns) -> list[dict]:
    kind = _kind(res)
    objs = sorted((o for o in agent.cluster.apps.values() if o.kind == kind
                   and (ns is None or o.meta.namespace == ns)), key=lambda o: (o.meta.namespace, o.meta.name))
    return [view(agent, o) for o in objs]


@route("GET", _APPS)
def discovery(agent, m, req):
    return 200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": W.APPS, "resources": [
        r for res in APPS_RESOURCES for r in (
            {"name": res, "singularName": _kind(res).lower(), "namespaced": True, "kind": _kind(res),
             "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
             "shortNames": SHORT[res], "categories": ["all"]},
            {"name": f"{res}/scale", "singularName": "", "namespaced": True, "group": "autoscaling",
             "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]},
            {"name": f"{res}/status", "singularName": "", "namespaced": True, "kind": _kind(res),
             "verbs": ["get"]})
        if res != "daemonsets" or not r["name"].endswith("/scale")]}


@route("GET", _APPS + r"(?:/namespaces/(?P<ns>[^/]+))?/" + _RES + "(?:/" + _NAME + ")?")
def read(agent, m, req):
    """As kuberoutes serves core objects: resourceVersions by content, Tables, watch events."""
    from . import kubeobjects as ko
    from . import kuberoutes as kr
    res, ns, name = m["res"], m["ns"], m["name"]
    _, versions = kr.state(agent)
    docs = kr._sorted(versions.observe(res, _list(agent, res, None)))
    if req.query.get("watch") in ("1", "true", "True"):
        return kr._watch(agent, res, ns, name, req, docs)
    found = kr._filter(docs, req, ns, name)
    if name is not None and not found:
        raise NotFoundError(f'{res}.apps "{name}" not found')
    version = ko.wants_table(req.headers.get("accept", ""))
    rv = str(versions.current)
    if version:
        return 200, ko.table(res, found, version, req.query.get("includeObject", "Metadata"), rv)
    if name is not None:
        return 200, found[0]
    return 200, {"kind": f"{_kind(res)}List", "apiVersion": W.APPS, "metadata": {"resourceVersion": rv},
                 "items": found}


def _check(obj, res: str, ns: str, name) -> None:
    if obj.kind != _kind(res):
        raise InvalidError(f"must be {_kind(res)} on this path", value=obj.kind, field="kind")
    if obj.meta.namespace != ns:
        raise ApiError(400, "BadRequest", f"the namespace of the object ({obj.meta.namespace}) does not "
                                          f"match the namespace on the request ({ns})")
    if name is not None and obj.meta.name != name:
        raise ApiError(400, "BadRequest", f"the name of the object ({obj.meta.name}) does not match "
                                          f"the name on the URL ({name})")


def _body(doc: Any, ns: str) -> Any:
    if isinstance(doc, dict) and isinstance(doc.get("metadata"), dict):
        doc["metadata"].setdefault("namespace", ns)
        for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
            doc["metadata"].pop(key, None)
        doc.pop("status", None)
    return doc


@route("POST", _NS + "/" + _RES)
def create(agent, m, req):
    obj = _object_of(_body(req.body, m["ns"]), "request")
    _check(obj, m["res"], m["ns"], None)
    if req.query.get("dryRun"):
        return 201, view(agent, obj)
    agent.apply([obj], mode="create")
    return 201, view(agent, agent.stored(obj))


@route("PUT", _NS + "/" + _RES + "/" + _NAME)
def replace(agent, m, req):
    obj = _object_of(_body(req.body, m["ns"]), "request")
    _check(obj, m["res"], m["ns"], m["name"])
    agent.apply([obj], mode="replace")
    return 200, view(agent, agent.stored(obj))


@route("PATCH", _NS + "/" + _RES + "/" + _NAME)
def patch(agent, m, req):
    obj = workload(agent.cluster, m["res"], m["name"], m["ns"])
    doc = W.manifest(obj)
    doc.pop("status", None)
    new = _patched(doc, req)
    new_obj = _object_of(_body(new, m["ns"]), obj.meta.source or "request")
    _check(new_obj, m["res"], m["ns"], m["name"])
    agent.apply([new_obj], mode="replace")
    return 200, view(agent, agent.stored(new_obj))


def _patched(doc: dict, req: Request) -> dict:
    from ..model.patch import PatchError, apply_patch
    ctype = (req.headers.get("content-type") or "application/merge-patch+json").split(";")[0].strip()
    try:
        return apply_patch(doc, req.body, ctype, doc.get("kind", ""))
    except PatchError as exc:
        raise ApiError(422, "Invalid", str(exc)) from None


@route("DELETE", _NS + "/" + _RES + "/" + _NAME)
def delete(agent, m, req):
    lines = agent.delete(m["res"], m["name"], m["ns"])
    return 200, ok_status(lines[0], name=m["name"], kind=m["res"])


def _scale_doc(agent, obj) -> dict:
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": obj.meta.name, "namespace": obj.meta.namespace},
            "spec": {"replicas": obj.replicas},
            "status": {"replicas": len(W.owned_pods(agent.cluster, obj)) if not isinstance(obj, W.Deployment)
                       else W.deployment_status(agent.cluster, obj, set())["replicas"],
                       "selector": str(obj.selector)}}


@route("GET", _NS + "/" + _RES + "/" + _NAME + "/scale")
def get_scale(agent, m, req):
    return 200, _scale_doc(agent, workload(agent.cluster, m["res"], m["name"], m["ns"]))


@route("PUT", _NS + "/" + _RES + "/" + _NAME + "/scale")
@route("PATCH", _NS + "/" + _RES + "/" + _NAME + "/scale")
def put_scale(agent, m, req):
    body = req.body if isinstance(req.body, dict) else {}
    replicas = (body.get("spec") or {}).get("replicas") if isinstance(body.get("spec"), dict) else None
    if replicas is None:
        raise InvalidError("Required value", field="spec.replicas")
    line = agent.scale(m["name"], m["ns"], replicas, m["res"])
    return 200, dict(_scale_doc(agent, workload(agent.cluster, m["res"], m["name"], m["ns"])), message=line)


@route("GET", r"/apis/netlab\.io/v1/namespaces/(?P<ns>[^/]+)/" + _RES + "/" + _NAME + "/rollout")
def rollout(agent, m, req):
    """`netlab rollout status`: done or not, kubectl's words, and the revision history."""
    obj = workload(agent.cluster, m["res"], m["name"], m["ns"])
    ready = agent.ready_pods()
    if isinstance(obj, W.Deployment):
        done, message = W.rollout_done(agent.cluster, obj, agent.available_pods())
        history = [{"revision": rs.revision, "name": rs.meta.name, "replicas": rs.replicas,
                    "hash": rs.meta.labels.get(W.HASH_LABEL, ""),
                    "changeCause": rs.meta.annotations.get("kubernetes.io/change-cause", ""),
                    "images": [c.image for c in rs.template.containers]}
                   for rs in W.owned_replicasets(agent.cluster, obj)]
        return 200, {"done": done, "message": message, "history": history}
    if isinstance(obj, W.StatefulSet):
        st = W.statefulset_status(agent.cluster, obj, ready)
        done = st["readyReplicas"] == obj.replicas == st["replicas"]
        msg = (f"partitioned roll out complete: {obj.replicas} new pods have been updated..." if done else
               f"Waiting for {obj.replicas - st['readyReplicas']} pods to be ready...")
        return 200, {"done": done, "message": msg, "history": []}
    if isinstance(obj, W.DaemonSet):
        st = W.daemonset_status(agent.cluster, obj, ready)
        done = st["numberReady"] == st["desiredNumberScheduled"] == st["currentNumberScheduled"]
        msg = (f'daemon set "{obj.meta.name}" successfully rolled out' if done else
               f'Waiting for daemon set "{obj.meta.name}" rollout to finish: {st["numberReady"]} of '
               f'{st["desiredNumberScheduled"]} updated pods are available...')
        return 200, {"done": done, "message": msg, "history": []}
    raise ApiError(400, "BadRequest", "rollout is for deployments, daemonsets and statefulsets")


@route("POST", r"/apis/netlab\.io/v1/namespaces/(?P<ns>[^/]+)/deployments/" + _NAME + "/rollback")
def rollback(agent, m, req):
    """`netlab rollout undo [--to-revision N]`: the Deployment's template becomes that of an
    older ReplicaSet (the previous one by default); the controller rolls it out."""
    dep = workload(agent.cluster, "deployments", m["name"], m["ns"])
    body = req.body if isinstance(req.body, dict) else {}
    to = body.get("toRevision") or 0
    rss = W.owned_replicasets(agent.cluster, dep)
    current = W.current_replicaset(agent.cluster, dep)
    older = [rs for rs in rss if rs is not current]
    target = next((rs for rs in rss if rs.revision == to), None) if to else (older[-1] if older else None)
    if target is None:
        raise ApiError(400, "BadRequest", f"unable to find specified revision {to} in history" if to
                       else "no rollout history found for deployment " + repr(dep.meta.name))
    doc = W.manifest(dep)
    template = copy.deepcopy(target.raw_template)
    labels = dict((template.get("metadata") or {}).get("labels") or {})
    labels.pop(W.HASH_LABEL, None)
    template.setdefault("metadata", {})["labels"] = labels
    doc["spec"]["template"] = template
    new = _object_of(doc, dep.meta.source or "request")
    new.meta.source = dep.meta.source
    agent.apply([new], mode="replace")
    return 200, ok_status(f"deployment.apps/{dep.meta.name} rolled back")


@route("GET", r"/apis")
def api_groups(agent, m, req):
    """The API groups kubectl discovers: apps/v1 here (networking.k8s.io is served, unlisted)."""
    from . import kubeobjects as ko
    groups = ko.api_groups()
    gv = {"groupVersion": W.APPS, "version": "v1"}
    groups["groups"] = [g for g in groups["groups"] if g.get("name") != "apps"] + [
        {"name": "apps", "versions": [gv], "preferredVersion": gv}]
    return 200, groups


def _tables() -> None:
    """kubectl get's columns, as the API server's Table for each kind."""
    from . import kubeobjects as ko
    col = ko._col

    def age(d):
        return ko.age_of(d["metadata"].get("creationTimestamp"))

    def containers(d):
        cs = ((d["spec"].get("template") or {}).get("spec") or {}).get("containers") or []
        return [",".join(c["name"] for c in cs), ",".join(c.get("image", "") for c in cs)]

    def selector(d):
        sel = d["spec"].get("selector") or {}
        return ",".join(f"{k}={v}" for k, v in (sel.get("matchLabels") or {}).items()) or "<none>"
    wide = [col("Containers", priority=1), col("Images", priority=1), col("Selector", priority=1)]
    ko.TABLES["deployments"] = (
        [col("Name", fmt="name"), col("Ready"), col("Up-to-date", "integer"), col("Available", "integer"),
         col("Age")] + wide,
        lambda d: [d["metadata"]["name"], f'{d["status"]["readyReplicas"]}/{d["spec"].get("replicas", 1)}',
                   d["status"]["updatedReplicas"], d["status"]["availableReplicas"], age(d)]
        + containers(d) + [selector(d)])
    ko.TABLES["replicasets"] = (
        [col("Name", fmt="name"), col("Desired", "integer"), col("Current", "integer"), col("Ready", "integer"),
         col("Age")] + wide,
        lambda d: [d["metadata"]["name"], d["spec"].get("replicas", 1), d["status"]["replicas"],
                   d["status"]["readyReplicas"], age(d)] + containers(d) + [selector(d)])
    ko.TABLES["daemonsets"] = (
        [col("Name", fmt="name"), col("Desired", "integer"), col("Current", "integer"), col("Ready", "integer"),
         col("Up-to-date", "integer"), col("Available", "integer"), col("Node Selector"), col("Age")] + wide,
        lambda d: [d["metadata"]["name"], d["status"]["desiredNumberScheduled"],
                   d["status"]["currentNumberScheduled"], d["status"]["numberReady"],
                   d["status"]["updatedNumberScheduled"], d["status"]["numberAvailable"],
                   ",".join(f"{k}={v}" for k, v in (((d["spec"].get("template") or {}).get("spec") or {})
                                                    .get("nodeSelector") or {}).items()) or "<none>", age(d)]
        + containers(d) + [selector(d)])
    ko.TABLES["statefulsets"] = (
        [col("Name", fmt="name"), col("Ready"), col("Age")] + wide[:2],
        lambda d: [d["metadata"]["name"], f'{d["status"]["readyReplicas"]}/{d["spec"].get("replicas", 1)}',
                   age(d)] + containers(d))


_tables()


def _install() -> None:
    for i, entry in enumerate(_MINE):
        ROUTES.insert(i, entry)


_install()


def _patch_schemas() -> None:
    """Strategic merge patches (kubectl set image, apply) merge containers by name, as for an RC."""
    from ..model import patch
    for kind in W.APPS_KINDS:
        patch.SCHEMAS.setdefault(kind, patch.SCHEMAS["ReplicationController"])


_patch_schemas()
