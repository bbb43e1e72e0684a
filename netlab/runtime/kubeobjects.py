"""The lab's objects as the Kubernetes API serves them, built inside the agent.

- v1 objects with full metadata (uid, creationTimestamp, resourceVersion, labels,
  annotations, ownerReferences) and status (a pod's phase, conditions, podIP(s), hostIP,
  containerStatuses; a service's loadBalancer; a node's addresses, podCIDR, conditions);
  netlab's own facts (a pod's network namespace and holder PID, a node's namespace) are
  annotations under netlab.io/.
- resourceVersions and the watch history: `Versions` gives every object a version that
  changes when its served form changes, and keeps the last changes for watches.
- Tables (meta.k8s.io Table) with the columns kubectl's server-side printers give
  (pkg/printers/internalversion/printers.go), so kubectl prints what it prints for a cluster.
- Discovery documents (/api, /apis, /api/v1, /version).

Views are computed from the agent's cluster and pod runs; nothing here writes.
"""
from __future__ import annotations

import copy
import hashlib
import json
import time
import uuid
from collections import deque
from typing import Any, Callable, Iterable, Optional

from ..model.cluster import to_manifest

SERVER_VERSION = {"major": "1", "minor": "30", "gitVersion": "v1.30.0-netlab",
                  "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                  "buildDate": "2024-04-17T00:00:00Z", "goVersion": "go1.22.2", "compiler": "gc",
                  "platform": "linux/amd64"}
ANN = "netlab.io/"
INTERNAL_ANNOTATIONS = ("netlab/source", "netlab/created")
HISTORY = 2000                    # watch events kept; a watch from before them gets 410 Gone


def timestamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t or 0))


def uid_of(lab_id: str, kind: str, key: str, created: float) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"netlab:{lab_id}/{kind}/{key}/{created!r}"))


# ---------------------------------------------------------------------- objects


class Views:
    """Builds v1 objects for one agent (its cluster, pod runs and faults)."""

    def __init__(self, agent):
        self.agent = agent
        self.first_seen: dict[str, float] = {}
        from .. import state
        owner = state.read_json(state.owner_file(agent.lab)) or {}
        self.lab_id = owner.get("id", agent.lab)
        self.lab_created = float(owner.get("created") or time.time())
        # What exists when the views are first asked for dates from the lab's creation; what
        # comes later, from when it was first seen.
        for rc in agent.cluster.rcs.values():
            self.first_seen[f"ReplicationController/{rc.meta.key}"] = self.lab_created
        for name in agent.cluster.namespaces:
            self.first_seen[f"Namespace/{name}"] = self.lab_created

    def created(self, kind: str, key: str, obj=None) -> float:
        t = getattr(obj, "created", 0.0) if obj is not None else 0.0
        if t:
            return t
        # RCs and namespaces carry no time of their own: the lab's, or when the agent first saw them.
        return self.first_seen.setdefault(f"{kind}/{key}", time.time())

    def meta(self, doc: dict, kind: str, key: str, obj=None) -> dict:
        md = doc.setdefault("metadata", {})
        ann = dict(md.get("annotations") or {})
        source = ann.pop("netlab/source", "")
        for name in INTERNAL_ANNOTATIONS:
            ann.pop(name, None)
        if source:
            ann[ANN + "source"] = source
        created = self.created(kind, key, obj)
        md["creationTimestamp"] = timestamp(created)
        md["uid"] = getattr(obj, "uid", "") or uid_of(self.lab_id, kind, key, created)
        if ann:
            md["annotations"] = ann
        else:
            md.pop("annotations", None)
        if not md.get("labels"):
            md.pop("labels", None)
        return md

    def of(self, obj) -> dict:
        kind = obj.kind
        if kind == "Pod":
            return self.pod(obj)
        doc = to_manifest(obj)
        key = obj.meta.key if kind != "Namespace" else obj.meta.name
        md = self.meta(doc, kind, key, obj)
        if kind == "Service":
            doc.setdefault("status", {}).setdefault("loadBalancer", {})
            spec = doc.setdefault("spec", {})
            if obj.cluster_ip:
                spec["clusterIPs"] = [obj.cluster_ip]
            spec.setdefault("sessionAffinity", obj.session_affinity)
            for port in spec.get("ports") or []:
                port.setdefault("protocol", "TCP")
                port.setdefault("targetPort", port.get("port"))
        elif kind == "ReplicationController":
            pods = self.agent.cluster.rc_pods(obj)
            ready = sum(1 for p in pods if self._pod_ready(p))
            doc["status"] = {"replicas": len(pods), "fullyLabeledReplicas": len(pods),
                             "readyReplicas": ready, "availableReplicas": ready,
                             "observedGeneration": 1}
            md["generation"] = 1
            doc.setdefault("spec", {}).setdefault("selector", dict(obj.template_labels))
        elif kind == "Namespace":
            doc["spec"] = {"finalizers": ["kubernetes"]}
            doc["status"] = {"phase": "Active"}
            md.setdefault("labels", {})["kubernetes.io/metadata.name"] = obj.meta.name
        return doc

    def _pod_ready(self, pod) -> bool:
        run = self.agent.pods.get(pod.meta.key)
        return bool(run) and self.agent.pod_status(run).get("ready", False)

    def pod(self, pod) -> dict:
        agent = self.agent
        doc = to_manifest(pod)
        md = self.meta(doc, "Pod", pod.meta.key, pod)
        for ref in md.get("ownerReferences") or []:
            if ref.get("kind") == "ReplicationController":
                rc = agent.cluster.rcs.get(f"{pod.meta.namespace}/{ref.get('name')}")
                if rc is not None:
                    ref["uid"] = self.of_uid("ReplicationController", rc.meta.key, rc)
                ref.setdefault("blockOwnerDeletion", True)
        run = agent.pods.get(pod.meta.key)
        st = agent.pod_status(run) if run else {"phase": "Pending", "containers": [], "ready": False}
        for c in (doc.get("spec") or {}).get("containers") or []:
            for port in c.get("ports") or []:
                port.setdefault("protocol", "TCP")
        ann = md.setdefault("annotations", {})
        ann[ANN + "netns"] = agent.cluster.pod_netns(pod)
        if st.get("holderPid"):
            ann[ANN + "holder-pid"] = str(st["holderPid"])
        node = agent.cluster.node(pod.spec.node_name)
        started = min((c.get("startedAt") or 0 for c in st["containers"]), default=0) or pod.created
        ready = "True" if st.get("ready") else "False"
        conditions = [{"type": "Initialized", "status": "True"},
                      {"type": "Ready", "status": ready},
                      {"type": "ContainersReady", "status": ready},
                      {"type": "PodScheduled", "status": "True"}]
        for c in conditions:
            c["lastProbeTime"] = None
            c["lastTransitionTime"] = timestamp(pod.created)
        statuses = []
        specs = {c.name: c for c in pod.spec.containers}
        for c in st["containers"]:
            state = c["state"]
            if state == "Running":
                detail = {"running": {"startedAt": timestamp(c.get("startedAt") or 0)}}
            elif state == "Terminated":
                detail = {"terminated": {"exitCode": c.get("exitCode") or 0, "reason": c.get("reason") or "Error",
                                         "startedAt": timestamp(c.get("startedAt") or 0)}}
            else:
                detail = {"waiting": {"reason": c.get("reason") or "ContainerCreating"}}
            image = specs[c["name"]].image if c["name"] in specs else ""
            statuses.append({"name": c["name"], "ready": bool(c.get("ready")),
                             "restartCount": c.get("restartCount", 0), "state": detail,
                             "image": image, "imageID": "", "started": state == "Running",
                             "containerID": f"netlab://{c.get('pid') or 0}"})
        if not statuses:
            statuses = [{"name": c.name, "ready": False, "restartCount": 0, "image": c.image, "imageID": "",
                         "started": False, "state": {"waiting": {"reason": "ContainerCreating"}}}
                        for c in pod.spec.containers]
        doc["status"] = {"phase": st.get("phase", "Pending"), "conditions": conditions,
                         "hostIP": node.internal_ip, "hostIPs": [{"ip": node.internal_ip}],
                         "podIP": pod.pod_ip, "podIPs": [{"ip": pod.pod_ip}] if pod.pod_ip else [],
                         "startTime": timestamp(started), "qosClass": "BestEffort",
                         "containerStatuses": statuses}
        return doc

    def of_uid(self, kind: str, key: str, obj) -> str:
        return uid_of(self.lab_id, kind, key, self.created(kind, key, obj))

    def node(self, node) -> dict:
        agent = self.agent
        ready = node.name not in agent.cluster.not_ready and node.name not in agent.faults["nodes"]
        created = node.created or self.lab_created     # a node added to the running lab: then
        cfg = agent.cluster.config
        return {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": node.name, "labels": dict(node.labels),
                             "uid": uid_of(self.lab_id, "Node", node.name, created),
                             "creationTimestamp": timestamp(created),
                             "annotations": {ANN + "netns": node.netns, ANN + "backend": cfg.backend,
                                             ANN + "vtep-mac": node.vtep_mac}},
                "spec": {"podCIDR": node.pod_cidr, "podCIDRs": [node.pod_cidr]},
                "status": {"addresses": [{"type": "InternalIP", "address": node.internal_ip},
                                         {"type": "Hostname", "address": node.name}],
                           "conditions": [{"type": "Ready", "status": "True" if ready else "Unknown",
                                           "reason": "KubeletReady" if ready else "NodeStatusUnknown",
                                           "message": "kubelet is posting ready status" if ready else
                                           "Kubelet stopped posting node status.",
                                           "lastHeartbeatTime": timestamp(created),
                                           "lastTransitionTime": timestamp(created)}],
                           "nodeInfo": node_info(),
                           "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}}

    def endpoints(self) -> list[dict]:
        """Endpoints of every Service (the endpoints controller's, or the hand-written ones)."""
        from ..model.services import service_endpoints
        agent = self.agent
        ready = agent.ready_pods() if agent.published_ready is not None else None
        out = []
        for key, svc in sorted(agent.cluster.services.items()):
            if svc.type == "ExternalName":
                continue
            written = agent.cluster.endpoints.get(key)
            if written is not None and svc.selector is None:
                out.append(self.of(written))
                continue
            by_port = service_endpoints(agent.cluster, svc, ready)
            subsets = []
            for port in svc.ports:
                eps = by_port.get(port.name, [])
                if not eps:
                    continue
                addresses = [{"ip": e.ip, **({"nodeName": e.node} if e.node else {}),
                              **({"targetRef": {"kind": "Pod", "namespace": e.pod.split("/")[0],
                                                "name": e.pod.split("/")[1]}} if "/" in (e.pod or "") else {})}
                             for e in eps]
                p = {"port": eps[0].port, "protocol": port.protocol, **({"name": port.name} if port.name else {})}
                same = next((s for s in subsets if s["addresses"] == addresses), None)
                if same:
                    same["ports"].append(p)
                else:
                    subsets.append({"addresses": addresses, "ports": [p]})
            md = {"name": svc.meta.name, "namespace": svc.meta.namespace}
            if svc.meta.labels:
                md["labels"] = dict(svc.meta.labels)
            created = svc.created
            md["creationTimestamp"] = timestamp(created)
            md["uid"] = uid_of(self.lab_id, "Endpoints", key, created)
            out.append({"apiVersion": "v1", "kind": "Endpoints", "metadata": md, "subsets": subsets})
        return out

    def events(self) -> list[dict]:
        """The pods' events as v1 Events (kubelet is their source)."""
        out = []
        agent = self.agent
        for key, run in agent.pods.items():
            pod = agent.cluster.pods.get(key)
            if pod is None:
                continue
            ns, name = key.split("/", 1)
            for i, e in enumerate(run.events):
                digest = f"{int(e['time'] * 1e9):x}{i:02x}"
                ts = timestamp(e["time"])
                out.append({"apiVersion": "v1", "kind": "Event",
                            "metadata": {"name": f"{name}.{digest}", "namespace": ns,
                                         "creationTimestamp": ts,
                                         "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{key}/{digest}"))},
                            "involvedObject": {"kind": "Pod", "namespace": ns, "name": name,
                                               "uid": pod.uid, "apiVersion": "v1"},
                            "reason": e["reason"], "message": e["message"], "type": e["type"],
                            "source": {"component": "kubelet", "host": pod.spec.node_name},
                            "firstTimestamp": ts, "lastTimestamp": ts, "count": 1,
                            "reportingComponent": "kubelet", "reportingInstance": pod.spec.node_name})
        return out


_NODE_INFO: dict = {}


def node_info() -> dict:
    if not _NODE_INFO:
        import os
        import platform
        pretty = "Linux"
        try:
            with open("/etc/os-release") as f:
                for line in f:
                    if line.startswith("PRETTY_NAME="):
                        pretty = line.split("=", 1)[1].strip().strip('"')
        except OSError:
            pass
        _NODE_INFO.update({"kubeletVersion": SERVER_VERSION["gitVersion"], "kubeProxyVersion": SERVER_VERSION["gitVersion"],
                           "osImage": pretty, "kernelVersion": os.uname().release,
                           "containerRuntimeVersion": "netlab://0.1.0", "operatingSystem": "linux",
                           "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(),
                                                                                     platform.machine()),
                           "machineID": "", "systemUUID": "", "bootID": ""})
    return dict(_NODE_INFO)


# ---------------------------------------------------------------------- resources


class Resource:
    def __init__(self, name: str, kind: str, namespaced: bool, short: list[str], verbs: list[str],
                 items: Callable[["Views"], Iterable[dict]], singular: str):
        self.name, self.kind, self.namespaced, self.short, self.verbs = name, kind, namespaced, short, verbs
        self.items, self.singular = items, singular


RW = ["create", "delete", "get", "list", "patch", "update", "watch"]


def _cluster_items(attr: str):
    def items(views: Views):
        return (views.of(o) for o in getattr(views.agent.cluster, attr).values())
    return items


RESOURCES = {
    "pods": Resource("pods", "Pod", True, ["po"], RW, _cluster_items("pods"), "pod"),
    "services": Resource("services", "Service", True, ["svc"], RW, _cluster_items("services"), "service"),
    "replicationcontrollers": Resource("replicationcontrollers", "ReplicationController", True, ["rc"], RW,
                                       _cluster_items("rcs"), "replicationcontroller"),
    "endpoints": Resource("endpoints", "Endpoints", True, ["ep"], RW, lambda v: v.endpoints(), "endpoints"),
    "namespaces": Resource("namespaces", "Namespace", False, ["ns"], ["create", "delete", "get", "list", "patch",
                                                                     "update", "watch"],
                           _cluster_items("namespaces"), "namespace"),
    "nodes": Resource("nodes", "Node", False, ["no"], ["get", "list", "watch"],
                      lambda v: (v.node(n) for n in v.agent.cluster.nodes), "node"),
    "events": Resource("events", "Event", True, ["ev"], ["get", "list", "watch"], lambda v: v.events(), "event"),
}


def api_resources() -> dict:
    res = []
    for r in RESOURCES.values():
        entry = {"name": r.name, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
                 "verbs": r.verbs, "shortNames": r.short}
        if r.name in ("pods", "services", "replicationcontrollers"):
            entry["categories"] = ["all"]
        res.append(entry)
    res += [
        {"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]},
        {"name": "pods/exec", "singularName": "", "namespaced": True, "kind": "PodExecOptions",
         "verbs": ["create", "get"]},
        {"name": "pods/portforward", "singularName": "", "namespaced": True, "kind": "PodPortForwardOptions",
         "verbs": ["create", "get"]},
        {"name": "replicationcontrollers/scale", "singularName": "", "namespaced": True, "group": "autoscaling",
         "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]},
    ]
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": res}


def api_versions(address: str = "127.0.0.1:6443") -> dict:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}]}


def api_groups() -> dict:
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}


# ---------------------------------------------------------------------- versions and watch


class Versions:
    """resourceVersions by content, and the recent changes for watches.

    Every observation of a resource compares each object's served form with the last one;
    a changed object gets the next version and an event. Versions start from the time the
    agent started (in milliseconds), so they grow across agent restarts, and a watch from
    before the history kept (or before this agent) is told 410 Gone, as the API server
    says "too old resource version", and lists again."""

    def __init__(self):
        self.current = int(time.time() * 1000)
        self.floor = self.current
        self.seen: dict[str, dict[str, tuple[str, int, dict]]] = {}   # resource -> key -> (digest, rv, doc)
        self.history: deque = deque()                                    # (rv, resource, type, doc)

    def observe(self, resource: str, docs: Iterable[dict]) -> list[dict]:
        """Stamp docs with their resourceVersion; record what changed since the last look."""
        before = self.seen.get(resource)
        now: dict[str, tuple[str, int, dict]] = {}
        out = []
        for doc in docs:
            md = doc["metadata"]
            key = f"{md.get('namespace', '')}/{md['name']}"
            digest = hashlib.sha1(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
            old = (before or {}).get(key)
            if old and old[0] == digest:
                rv = old[1]
            else:
                self.current += 1
                rv = self.current
                if before is not None:
                    self._record(rv, resource, "MODIFIED" if old else "ADDED", doc)
            md["resourceVersion"] = str(rv)
            now[key] = (digest, rv, doc)
            out.append(doc)
        for key, (digest, rv, doc) in (before or {}).items():
            if key not in now:
                self.current += 1
                gone = copy.deepcopy(doc)
                gone["metadata"]["resourceVersion"] = str(self.current)
                self._record(self.current, resource, "DELETED", gone)
        self.seen[resource] = now
        return out

    def _record(self, rv: int, resource: str, kind: str, doc: dict) -> None:
        self.history.append((rv, resource, kind, doc))
        while len(self.history) > HISTORY:
            self.floor = self.history.popleft()[0]

    def since(self, resource: str, rv: int) -> Optional[list[tuple[str, dict]]]:
        """Events of resource after rv, or None if rv is older than what is kept."""
        if rv < self.floor:
            return None
        return [(kind, doc) for v, res, kind, doc in self.history if res == resource and v > rv]


# ---------------------------------------------------------------------- selectors


def field_value(doc: dict, path: str) -> str:
    value: Any = doc
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def field_selector(text: str):
    """kubectl's --field-selector: a,b with =, == and !=; returns a predicate on docs."""
    from ..model.errors import InvalidError
    terms = []
    for term in filter(None, (t.strip() for t in (text or "").split(","))):
        for op in ("!=", "==", "="):
            if op in term:
                path, value = term.split(op, 1)
                terms.append((path.strip(), op, value.strip()))
                break
        else:
            raise InvalidError(f'invalid field selector: "{term}"', field="fieldSelector")
    return lambda doc: all((field_value(doc, p) == v) == (op != "!=") for p, op, v in terms)


def label_selector(text: str):
    from ..model.selectors import parse_selector
    if not text:
        return lambda doc: True
    sel = parse_selector(text, field="labelSelector")
    return lambda doc: sel.matches((doc.get("metadata") or {}).get("labels") or {})


# ---------------------------------------------------------------------- tables


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration, as kubectl's AGE column shows it."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if dy == 0 else f"{hours // 24 // 365}y{dy}d"
    return f"{hours // 24 // 365}y"


def age_of(ts: Optional[str]) -> str:
    if not ts:
        return "<unknown>"
    import calendar
    t = calendar.timegm(time.strptime(ts, "%Y-%m-%dT%H:%M:%SZ"))
    return human_duration(time.time() - t)


def _col(name: str, kind: str = "string", priority: int = 0, fmt: str = "", desc: str = "") -> dict:
    return {"name": name, "type": kind, "format": fmt, "description": desc or name, "priority": priority}


def _pod_row(doc: dict) -> list:
    """printPod."""
    st = doc.get("status") or {}
    statuses = st.get("containerStatuses") or []
    total = len((doc.get("spec") or {}).get("containers") or [])
    restarts, ready, reason, running = 0, 0, st.get("reason") or st.get("phase") or "Pending", False
    for c in reversed(statuses):
        restarts += c.get("restartCount", 0)
        state = c.get("state") or {}
        if state.get("waiting", {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif state.get("terminated", {}).get("reason"):
            reason = state["terminated"]["reason"]
        elif "terminated" in state:
            t = state["terminated"]
            reason = f"Signal:{t['signal']}" if t.get("signal") else f"ExitCode:{t.get('exitCode', 0)}"
        elif "running" in state and c.get("ready"):
            running = True
            ready += 1
    if reason == "Completed" and running:
        ready_cond = any(c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or [])
        reason = "Running" if ready_cond else "NotReady"
    if (doc.get("metadata") or {}).get("deletionTimestamp"):
        reason = "Terminating"
    return [doc["metadata"]["name"], f"{ready}/{total}", reason, restarts,
            age_of(doc["metadata"].get("creationTimestamp")), st.get("podIP") or "<none>",
            (doc.get("spec") or {}).get("nodeName") or "<none>", "<none>", "<none>"]


def _ports(spec: dict) -> str:
    out = []
    for p in spec.get("ports") or []:
        text = f"{p.get('port')}"
        if p.get("nodePort"):
            text += f":{p['nodePort']}"
        out.append(f"{text}/{p.get('protocol', 'TCP')}")
    return ",".join(out) or "<none>"


def _external_ip(doc: dict) -> str:
    """getServiceExternalIP (wide: no cut)."""
    spec, st = doc.get("spec") or {}, doc.get("status") or {}
    kind = spec.get("type", "ClusterIP")
    ext = list(spec.get("externalIPs") or [])
    if kind == "ExternalName":
        return spec.get("externalName", "")
    if kind == "LoadBalancer":
        lb = [i.get("ip") or i.get("hostname") for i in (st.get("loadBalancer") or {}).get("ingress") or []]
        shown = ",".join([x for x in lb if x] + ext)
        return shown or "<pending>"
    return ",".join(ext) or "<none>"


def _selector(sel: Optional[dict]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((sel or {}).items())) or "<none>"


def _endpoints_cell(doc: dict) -> str:
    shown = []
    for subset in doc.get("subsets") or []:
        for port in subset.get("ports") or []:
            for a in subset.get("addresses") or []:
                shown.append(f"{a['ip']}:{port['port']}")
    if not shown:
        return "<none>"
    more = f" + {len(shown) - 3} more..." if len(shown) > 3 else ""
    return ",".join(shown[:3]) + more


def _node_row(doc: dict) -> list:
    st = doc.get("status") or {}
    ready = next((c for c in st.get("conditions") or [] if c.get("type") == "Ready"), {})
    status = "Ready" if ready.get("status") == "True" else "NotReady"
    if (doc.get("spec") or {}).get("unschedulable"):
        status += ",SchedulingDisabled"
    labels = (doc.get("metadata") or {}).get("labels") or {}
    roles = sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/"))
    info = st.get("nodeInfo") or {}
    ip = next((a["address"] for a in st.get("addresses") or [] if a.get("type") == "InternalIP"), "<none>")
    return [doc["metadata"]["name"], status, ",".join(roles) or "<none>",
            age_of(doc["metadata"].get("creationTimestamp")), info.get("kubeletVersion", ""), ip, "<none>",
            info.get("osImage", ""), info.get("kernelVersion", ""), info.get("containerRuntimeVersion", "")]


def _event_row(doc: dict) -> list:
    obj = doc.get("involvedObject") or {}
    src = doc.get("source") or {}
    return [age_of(doc.get("lastTimestamp")), doc.get("type", ""), doc.get("reason", ""),
            f"{obj.get('kind', '').lower()}/{obj.get('name', '')}", doc.get("message", ""),
            obj.get("fieldPath", ""), ", ".join(x for x in (src.get("component"), src.get("host")) if x),
            age_of(doc.get("firstTimestamp")), doc.get("count", 1), doc["metadata"]["name"]]


TABLES: dict[str, tuple[list[dict], Callable[[dict], list]]] = {
    "pods": ([_col("Name", fmt="name"), _col("Ready"), _col("Status"), _col("Restarts", "integer"), _col("Age"),
              _col("IP", priority=1), _col("Node", priority=1), _col("Nominated Node", priority=1),
              _col("Readiness Gates", priority=1)], _pod_row),
    "services": ([_col("Name", fmt="name"), _col("Type"), _col("Cluster-IP"), _col("External-IP"),
                  _col("Port(s)"), _col("Age"), _col("Selector", priority=1)],
                 lambda d: [d["metadata"]["name"], d["spec"].get("type", "ClusterIP"),
                            d["spec"].get("clusterIP") or "<none>", _external_ip(d), _ports(d["spec"]),
                            age_of(d["metadata"].get("creationTimestamp")), _selector(d["spec"].get("selector"))]),
    "replicationcontrollers": ([_col("Name", fmt="name"), _col("Desired", "integer"), _col("Current", "integer"),
                                _col("Ready", "integer"), _col("Age"), _col("Containers", priority=1),
                                _col("Images", priority=1), _col("Selector", priority=1)],
                               lambda d: [d["metadata"]["name"], d["spec"].get("replicas", 1),
                                          d["status"].get("replicas", 0), d["status"].get("readyReplicas", 0),
                                          age_of(d["metadata"].get("creationTimestamp")),
                                          ",".join(c["name"] for c in d["spec"]["template"]["spec"]["containers"]),
                                          ",".join(c.get("image", "") for c in
                                                   d["spec"]["template"]["spec"]["containers"]),
                                          _selector(d["spec"].get("selector"))]),
    "endpoints": ([_col("Name", fmt="name"), _col("Endpoints"), _col("Age")],
                  lambda d: [d["metadata"]["name"], _endpoints_cell(d),
                             age_of(d["metadata"].get("creationTimestamp"))]),
    "namespaces": ([_col("Name", fmt="name"), _col("Status"), _col("Age")],
                   lambda d: [d["metadata"]["name"], (d.get("status") or {}).get("phase", "Active"),
                              age_of(d["metadata"].get("creationTimestamp"))]),
    "nodes": ([_col("Name", fmt="name"), _col("Status"), _col("Roles"), _col("Age"), _col("Version"),
               _col("Internal-IP", priority=1), _col("External-IP", priority=1), _col("OS-Image", priority=1),
               _col("Kernel-Version", priority=1), _col("Container-Runtime", priority=1)], _node_row),
    "events": ([_col("Last Seen"), _col("Type"), _col("Reason"), _col("Object"), _col("Message"),
                _col("Subobject", priority=1), _col("Source", priority=1), _col("First Seen", priority=1),
                _col("Count", "integer", priority=1), _col("Name", priority=1)], _event_row),
}


def table(resource: str, docs: list[dict], version: str = "v1", include: str = "Metadata",
          rv: str = "") -> dict:
    columns, row_of = TABLES[resource]
    rows = []
    for doc in docs:
        row = {"cells": row_of(doc)}
        if include == "Object":
            row["object"] = doc
        elif include != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": f"meta.k8s.io/{version}",
                             "metadata": doc.get("metadata", {})}
        rows.append(row)
    return {"kind": "Table", "apiVersion": f"meta.k8s.io/{version}", "metadata": {"resourceVersion": rv},
            "columnDefinitions": columns, "rows": rows}


def wants_table(accept: str) -> Optional[str]:
    """The Table version the Accept header asks for first (v1 or v1beta1), or None."""
    for part in (accept or "").split(","):
        params = dict(p.strip().partition("=")[::2] for p in part.split(";")[1:])
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io":
            return params.get("v", "v1")
    return None


# ---------------------------------------------------------------------- incoming objects


SERVER_FIELDS = ("resourceVersion", "creationTimestamp", "managedFields", "selfLink", "generation", "uid",
                 "deletionTimestamp", "deletionGracePeriodSeconds")


def sanitize(doc: Any) -> Any:
    """A client's object back into what netlab stores: server-filled metadata dropped,
    netlab.io/ facts dropped (netlab.io/source back to the internal source annotation), and
    the status of pods and controllers ignored, as the API server ignores it on writes."""
    if not isinstance(doc, dict):
        return doc
    doc = copy.deepcopy(doc)
    md = doc.get("metadata")
    if isinstance(md, dict):
        for name in SERVER_FIELDS:
            md.pop(name, None)
        ann = md.get("annotations")
        if isinstance(ann, dict):
            source = ann.pop(ANN + "source", None)
            for key in [k for k in ann if isinstance(k, str) and k.startswith(ANN)]:
                del ann[key]
            if source and "netlab/source" not in ann:
                ann["netlab/source"] = source
            if not ann:
                md.pop("annotations")
        labels = md.get("labels")
        if doc.get("kind") == "Namespace" and isinstance(labels, dict):
            labels.pop("kubernetes.io/metadata.name", None)
            if not labels:
                md.pop("labels")
    if doc.get("kind") in ("Pod", "ReplicationController", "Namespace"):
        doc.pop("status", None)
    if doc.get("kind") == "Namespace":
        doc.pop("spec", None)
    if doc.get("kind") == "Service":
        spec = doc.get("spec")
        if isinstance(spec, dict):
            spec.pop("clusterIPs", None)
        st = doc.get("status")
        if isinstance(st, dict) and not (st.get("loadBalancer") or {}).get("ingress"):
            doc.pop("status")
    return doc
