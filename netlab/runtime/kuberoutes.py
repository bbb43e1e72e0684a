"""The lab API's Kubernetes routes: what kubectl needs, served by the agent (its one writer).

    GET  /version  /api  /apis  /api/v1  /openapi/v2          discovery
    GET  /api/v1[/namespaces/{ns}]/{resource}[/{name}]        list/get: labelSelector,
         fieldSelector, Table (Accept: ...;as=Table), watch (see below)
    POST /api/v1/namespaces/{ns}/{resource}, /api/v1/namespaces   create
    PUT  .../{resource}/{name}                                 replace (409 on a stale resourceVersion)
    PATCH .../{resource}/{name}                                json, merge and strategic merge patch
    GET|PUT|PATCH .../replicationcontrollers/{name}/scale
    GET  .../pods/{name}/log                                   container log (text)
    POST|GET .../pods/{name}/exec|attach|portforward           501: use `netlab exec`

resources: pods, services, replicationcontrollers, endpoints, events, namespaces, nodes.

A watch never holds the agent: `?watch=1&resourceVersion=N` answers at once with the events
after N ({"kind": "WatchEvents", "resourceVersion": latest, "events": [...]}); the kubectl
front-end (runtime/kubeapi.py) holds kubectl's watch connection and asks again. A version
older than the history kept is 410 Gone (kubectl lists again), as on a real API server.
"""
from __future__ import annotations

from typing import Any

from ..model.errors import InvalidError, NotFoundError
from . import kubeobjects as ko
from .api import ApiError, Raw, Request
from .apiserver import ROUTES, PathPattern, _object_of

_RES = r"(?P<res>pods|services|replicationcontrollers|endpoints|events)"
_NS = r"/api/v1/namespaces/(?P<ns>[^/]+)"
_NAME = r"(?P<name>[^/]+)"
_MINE: list = []


def route(method: str, pattern: str):
    def register(fn):
        _MINE.append((method, PathPattern(pattern), fn))
        return fn
    return register


def state(agent) -> tuple[ko.Views, ko.Versions]:
    if getattr(agent, "kube_views", None) is None:
        agent.kube_views = ko.Views(agent)
        agent.kube_versions = ko.Versions()
    return agent.kube_views, agent.kube_versions


def observed(agent, resource: str) -> list[dict]:
    """Every object of a resource, stamped with its resourceVersion."""
    views, versions = state(agent)
    return versions.observe(resource, list(ko.RESOURCES[resource].items(views)))


def _filter(docs: list[dict], req: Request, ns, name=None) -> list[dict]:
    labels = ko.label_selector(req.query.get("labelSelector", ""))
    fields = ko.field_selector(req.query.get("fieldSelector", ""))
    return [d for d in docs if (ns is None or d["metadata"].get("namespace") == ns)
            and (name is None or d["metadata"]["name"] == name) and labels(d) and fields(d)]


def _sorted(docs: list[dict]) -> list[dict]:
    return sorted(docs, key=lambda d: (d["metadata"].get("namespace", ""), d["metadata"]["name"]))


def _not_found(res: str, name: str) -> NotFoundError:
    singular = {"replicationcontrollers": "replicationcontrollers"}.get(res, res)
    return NotFoundError(f'{singular} "{name}" not found')


def _present(agent, res: str, req: Request, docs: list[dict], single: bool):
    views, versions = state(agent)
    version = ko.wants_table(req.headers.get("accept", ""))
    rv = str(versions.current)
    if version:
        return 200, ko.table(res, docs, version, req.query.get("includeObject", "Metadata"), rv)
    if single:
        return 200, docs[0]
    kind = ko.RESOURCES[res].kind
    return 200, {"kind": f"{kind}List", "apiVersion": "v1", "metadata": {"resourceVersion": rv},
                 "items": docs}


def _read(agent, res: str, ns, name, req: Request):
    docs = _sorted(observed(agent, res))
    if req.query.get("watch") in ("1", "true", "True"):
        return _watch(agent, res, ns, name, req, docs)
    found = _filter(docs, req, ns, name)
    if name is not None and not found:
        raise _not_found(res, name)
    return _present(agent, res, req, found, name is not None)


def _watch(agent, res: str, ns, name, req: Request, docs: list[dict]):
    views, versions = state(agent)
    since = req.query.get("resourceVersion", "")
    if since in ("", "0"):
        events = [("ADDED", d) for d in docs]
    else:
        try:
            events = versions.since(res, int(since))
        except ValueError:
            raise ApiError(400, "BadRequest", f"invalid resourceVersion {since!r}") from None
        if events is None:
            raise ApiError(410, "Expired", f"too old resource version: {since} ({versions.floor})")
    version = ko.wants_table(req.headers.get("accept", ""))
    out = []
    for kind, doc in events:
        if not _filter([doc], req, ns, name):
            continue
        obj = ko.table(res, [doc], version, req.query.get("includeObject", "Metadata"),
                       doc["metadata"].get("resourceVersion", "")) if version else doc
        out.append({"type": kind, "object": obj})
    return 200, {"kind": "WatchEvents", "resourceVersion": str(versions.current), "events": out}


# ---------------------------------------------------------------------- discovery


@route("GET", r"/version")
def version(agent, m, req):
    return 200, dict(ko.SERVER_VERSION)


@route("GET", r"/api")
def api_versions(agent, m, req):
    return 200, ko.api_versions()


@route("GET", r"/apis")
def api_groups(agent, m, req):
    return 200, ko.api_groups()


@route("GET", r"/api/v1")
def api_resources(agent, m, req):
    return 200, ko.api_resources()


@route("GET", r"/openapi/v2")
def openapi_v2(agent, m, req):
    """A valid OpenAPI v2 document without definitions. kubectl's client-side validation
    then skips its schema check (netlab's own validation is strict: unknown fields are 422
    errors), and apply computes strategic merge patches from its compiled-in types."""
    if "protobuf" in req.headers.get("accept", ""):
        # gnostic openapi_v2.Document{swagger: "2.0", info: {title, version}}
        title, ver = b"netlab", b"v1.30.0"
        info = b"\x0a" + bytes([len(title)]) + title + b"\x22" + bytes([len(ver)]) + ver
        return 200, Raw(b"\x0a\x032.0" + b"\x12" + bytes([len(info)]) + info,
                        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf")
    return 200, {"swagger": "2.0", "info": {"title": "netlab", "version": "v1.30.0"}, "paths": {},
                 "definitions": {}}


# ---------------------------------------------------------------------- reads


@route("GET", r"/api/v1(?:/namespaces/(?P<ns>[^/]+))?/" + _RES + "(?:/" + _NAME + ")?")
def read_namespaced(agent, m, req):
    return _read(agent, m["res"], m["ns"], m["name"], req)


@route("GET", r"/api/v1/(?P<res>namespaces|nodes)(?:/" + _NAME + ")?")
def read_cluster(agent, m, req):
    return _read(agent, m["res"], None, m["name"], req)


# ---------------------------------------------------------------------- writes


def _dry_run(req: Request) -> None:
    if req.query.get("dryRun"):
        raise ApiError(400, "BadRequest", "netlab does not support dry runs on the server "
                                          "(use kubectl's --dry-run=client)")


def _incoming(doc: Any) -> Any:
    return ko.sanitize(doc)


def _written(agent, res: str, obj) -> dict:
    key = obj.meta.name if obj.kind == "Namespace" else obj.meta.key
    for doc in observed(agent, res):
        md = doc["metadata"]
        if (md["name"] if obj.kind == "Namespace" else f"{md.get('namespace')}/{md['name']}") == key:
            return doc
    raise NotFoundError(f'{res} "{obj.meta.name}" not found')


def _check_place(obj, res: str, ns, name) -> None:
    kind = ko.RESOURCES[res].kind
    if obj.kind != kind:
        raise InvalidError(f"must be {kind} on this path", value=obj.kind, field="kind")
    if ns is not None and obj.meta.namespace != ns:
        raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the "
                                          "namespace sent on the request")
    if name is not None and obj.meta.name != name:
        raise ApiError(400, "BadRequest", f"the name of the object ({obj.meta.name}) does not match "
                                          f"the name on the URL ({name})")


@route("POST", _NS + r"/(?P<res>pods|services|replicationcontrollers|endpoints)")
def create(agent, m, req):
    _dry_run(req)
    state(agent)
    body = _incoming(req.body)
    if isinstance(body, dict) and isinstance(body.get("metadata"), dict):
        body["metadata"].setdefault("namespace", m["ns"])
    obj = _object_of(body, "request")
    _check_place(obj, m["res"], m["ns"], None)
    agent.apply([obj], mode="create")
    return 201, _written(agent, m["res"], obj)


@route("POST", r"/api/v1/namespaces")
def create_namespace(agent, m, req):
    _dry_run(req)
    state(agent)
    obj = _object_of(_incoming(req.body), "request")
    _check_place(obj, "namespaces", None, None)
    if obj.meta.name in agent.cluster.namespaces:
        from .api import Conflict
        raise Conflict(f'namespaces "{obj.meta.name}" already exists')
    agent.apply([obj], mode="create")
    return 201, _written(agent, "namespaces", obj)


def _current(agent, res: str, ns, name) -> dict:
    found = [d for d in observed(agent, res) if d["metadata"]["name"] == name
             and (ns is None or d["metadata"].get("namespace") == ns)]
    if not found:
        raise _not_found(res, name)
    return found[0]


def _replace(agent, res: str, ns, name, doc: Any, req: Request):
    _dry_run(req)
    current = _current(agent, res, ns, name)
    wanted = (doc.get("metadata") or {}).get("resourceVersion") if isinstance(doc, dict) else None
    if wanted and wanted != current["metadata"]["resourceVersion"]:
        from .api import Conflict
        raise Conflict(f'Operation cannot be fulfilled on {res} "{name}": the object has been modified; '
                       f"please apply your changes to the latest version and try again")
    body = _incoming(doc)
    if isinstance(body, dict) and isinstance(body.get("metadata"), dict) and ns is not None:
        body["metadata"].setdefault("namespace", ns)
    obj = _object_of(body, "request")
    _check_place(obj, res, ns, name)
    agent.apply([obj], mode="replace")
    return 200, _written(agent, res, obj)


@route("PUT", _NS + r"/(?P<res>pods|services|replicationcontrollers|endpoints)/" + _NAME)
def replace(agent, m, req):
    return _replace(agent, m["res"], m["ns"], m["name"], req.body, req)


@route("PUT", r"/api/v1/(?P<res>namespaces)/" + _NAME)
def replace_namespace(agent, m, req):
    return _replace(agent, "namespaces", None, m["name"], req.body, req)


PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json",
               "application/strategic-merge-patch+json")


def _patched(doc: dict, req: Request, kind: str) -> dict:
    from ..model.patch import PatchError, apply_patch
    ctype = req.headers.get("content-type", "").split(";")[0].strip()
    if ctype == "application/apply-patch+yaml":
        raise ApiError(415, "UnsupportedMediaType", "server-side apply is not supported by netlab: "
                                                   "use `kubectl apply` without --server-side")
    if ctype not in PATCH_TYPES:
        raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                                                   f"accepted media types include: {', '.join(PATCH_TYPES)}")
    try:
        return apply_patch(doc, req.body, ctype, kind)
    except PatchError as exc:
        raise ApiError(422 if ctype != "application/json-patch+json" else 422, "Invalid", str(exc)) from None


@route("PATCH", _NS + r"/(?P<res>pods|services|replicationcontrollers|endpoints)/" + _NAME)
def patch(agent, m, req):
    current = _current(agent, m["res"], m["ns"], m["name"])
    doc = _patched(current, req, ko.RESOURCES[m["res"]].kind)
    doc.setdefault("metadata", {}).pop("resourceVersion", None)
    return _replace(agent, m["res"], m["ns"], m["name"], doc, req)


@route("PATCH", r"/api/v1/(?P<res>namespaces)/" + _NAME)
def patch_namespace(agent, m, req):
    current = _current(agent, "namespaces", None, m["name"])
    doc = _patched(current, req, "Namespace")
    doc.setdefault("metadata", {}).pop("resourceVersion", None)
    return _replace(agent, "namespaces", None, m["name"], doc, req)


@route("PATCH", _NS + r"/replicationcontrollers/" + _NAME + "/scale")
def patch_scale(agent, m, req):
    from .apiserver import _scale_object
    rc = agent.cluster.rcs.get(f'{m["ns"]}/{m["name"]}')
    if rc is None:
        raise NotFoundError(f'replicationcontrollers "{m["name"]}" not found')
    doc = _patched(_scale_object(rc, agent), req, "Scale")
    replicas = (doc.get("spec") or {}).get("replicas")
    if replicas is None:
        raise InvalidError("Required value", field="spec.replicas")
    agent.scale(m["name"], m["ns"], replicas)
    return 200, _scale_object(agent.cluster.rcs[f'{m["ns"]}/{m["name"]}'], agent)


# ---------------------------------------------------------------------- pods' subresources


@route("GET", _NS + r"/pods/" + _NAME + "/log")
def pod_log(agent, m, req):
    from .. import state as st
    pod = agent.cluster.pod(m["name"], m["ns"])
    names = [c.name for c in pod.spec.containers]
    container = req.query.get("container") or (names[0] if len(names) == 1 else "")
    if not container:
        raise ApiError(400, "BadRequest", f"a container name must be specified for pod {pod.meta.name}, "
                                          f"choose one of: [{' '.join(names)}]")
    if container not in names:
        raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {pod.meta.name}")
    try:
        with open(st.container_log(agent.lab, m["ns"], m["name"], container), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        data = b""
    size = len(data)
    offset = req.query.get("netlabOffset")          # the front-end's follow: bytes after this
    if offset is not None and offset.isdigit():
        data = data[int(offset):]
    tail = req.query.get("tailLines")
    if tail is not None and tail.lstrip("-").isdigit() and int(tail) >= 0:
        lines = data.splitlines(keepends=True)
        data = b"".join(lines[len(lines) - int(tail):]) if int(tail) else b""
    limit = req.query.get("limitBytes")
    if limit and limit.isdigit():
        data = data[:int(limit)]
    return 200, Raw(data, "text/plain", {"X-Netlab-Log-Size": str(size)})


@route("(POST|GET)", _NS + r"/pods/" + _NAME + r"/(?P<sub>exec|attach|portforward)")
def pod_stream(agent, m, req):
    agent.cluster.pod(m["name"], m["ns"])
    verb = {"exec": "exec", "attach": "exec", "portforward": "exec"}[m["sub"]]
    raise ApiError(501, "NotImplemented",
                   f"netlab does not stream {m['sub']} (SPDY/websocket) to kubectl: use "
                   f"`netlab {verb} {m['name']} -n {m['ns']} -- COMMAND` instead")


def _install() -> None:
    """Put these routes before the older ones (they serve the same paths more fully)."""
    for i, entry in enumerate(_MINE):
        method, pattern, fn = entry
        if method == "(POST|GET)":
            ROUTES.insert(i, ("POST", pattern, fn))
            ROUTES.insert(i, ("GET", pattern, fn))
        else:
            ROUTES.insert(i, entry)


_install()
