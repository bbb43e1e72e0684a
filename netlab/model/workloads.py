"""apps/v1 workloads: Deployment, ReplicaSet, DaemonSet, StatefulSet. Pure: no kernel here.

A manifest from a real cluster loads unchanged. The controllers' decisions are pure functions
of the cluster and of which pods are ready/available (`plan_*`): each returns the next step as
a short list of actions, and the lab's agent (runtime/workloads.py) applies one step per loop
round through the write path, so a rolling update is gated on readiness step by step, as the
deployment controller does it:

- Deployment -> ReplicaSets named <deployment>-<pod-template-hash>, the hash of the pod
  template (fnv-32a, rendered with kube's safe alphabet), the label `pod-template-hash` on the
  ReplicaSet's selector, template and pods; `deployment.kubernetes.io/revision` on each
  ReplicaSet; RollingUpdate honours maxSurge/maxUnavailable (ints or percentages: surge rounds
  up, unavailable down) and minReadySeconds; Recreate scales the old ones to 0 first.
- ReplicaSet: an RC with a set-based selector; its pods are <rs>-<5 chars>.
- DaemonSet: one pod per node whose labels match the template's nodeSelector.
- StatefulSet: pods <name>-0..N-1 with hostname <name>-i and subdomain = serviceName, created
  in order (OrderedReady: pod i only once 0..i-1 are ready), removed from the highest ordinal.
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from .names import generated_name_length
from .objects import (KINDS, PARSERS, Meta, Pod, PodSpec, _check_file_names, _rc_selector, _Where,
                      parse_meta, parse_pod_spec)
from .selectors import Selector, selector_from_api

APPS = "apps/v1"
APPS_KINDS = ("Deployment", "ReplicaSet", "DaemonSet", "StatefulSet")
HASH_LABEL = "pod-template-hash"
REVISION_LABEL = "controller-revision-hash"      # DaemonSet and StatefulSet pods: their template's
REVISION = "deployment.kubernetes.io/revision"
_SAFE = "bcdfghjklmnpqrstvwxz2456789"


@dataclass
class Workload:
    """What every apps/v1 controller has: a selector and a pod template."""
    meta: Meta
    replicas: int
    selector: Selector
    template_labels: dict[str, str]
    template: PodSpec
    raw_template: dict = field(default_factory=dict)
    min_ready: int = 0
    owner: str = ""                  # "Deployment/<name>" for a Deployment's ReplicaSets
    created: float = 0.0

    kind = ""
    api_version = APPS

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.meta.namespace}/{self.meta.name}"


@dataclass
class ReplicaSet(Workload):
    kind = "ReplicaSet"

    @property
    def revision(self) -> int:
        try:
            return int(self.meta.annotations.get(REVISION, "0"))
        except ValueError:
            return 0


@dataclass
class Deployment(Workload):
    strategy: str = "RollingUpdate"
    max_surge: Any = "25%"
    max_unavailable: Any = "25%"
    history_limit: int = 10
    paused: bool = False
    kind = "Deployment"


@dataclass
class DaemonSet(Workload):
    kind = "DaemonSet"


@dataclass
class StatefulSet(Workload):
    service_name: str = ""
    parallel: bool = False
    kind = "StatefulSet"


def _int_or_percent(w: _Where, value, path: str, default: str):
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise w.err(path, "must be an integer or a percentage", value)
    if isinstance(value, int):
        if value < 0:
            raise w.err(path, "must be greater than or equal to 0", value)
        return value
    if not value.endswith("%") or not value[:-1].isdigit():
        raise w.err(path, 'a valid percent string must be a numeric string followed by an ending \'%\'', value)
    return value


def scaled(value, total: int, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent."""
    if isinstance(value, int):
        return value
    exact = int(value[:-1]) * total / 100
    return math.ceil(exact) if round_up else math.floor(exact)


def _parse(doc: dict, w: _Where, cls, suffix_len: int):
    meta = parse_meta(doc, w)
    if generated_name_length(meta.name) + suffix_len > 253:
        raise w.err("metadata.name", "too long for the names of the pods it makes", meta.name)
    spec = w.map(doc.get("spec"), "spec")
    replicas = w.int(spec.get("replicas"), "spec.replicas", 0, 10000, default=1)
    min_ready = w.int(spec.get("minReadySeconds"), "spec.minReadySeconds", 0, default=0)
    template = w.map(spec.get("template"), "spec.template")
    if not template:
        raise w.err("spec.template", "Required value")
    tmeta = w.map(template.get("metadata"), "spec.template.metadata")
    tlabels = w.labels(tmeta.get("labels"), "spec.template.metadata.labels")
    w.annotations(tmeta.get("annotations"), "spec.template.metadata.annotations")
    if not spec.get("selector"):
        # apps/v1 does not default the selector from the template's labels.
        raise w.err("spec.selector", "Required value")
    raw_selector = _rc_selector(spec.get("selector"), w)
    selector = selector_from_api(raw_selector, file=w.file, obj=w.obj, field="spec.selector")
    if selector.empty():
        raise w.err("spec.selector", "Invalid value: empty selector is invalid for deployment")
    if not selector.matches(tlabels):
        raise w.err("spec.template.metadata.labels", "`selector` does not match template `labels`", tlabels)
    pod_spec = parse_pod_spec(template.get("spec"), w, "spec.template.spec")
    if pod_spec.restart_policy != "Always":
        raise w.err("spec.template.spec.restartPolicy", 'Unsupported value: supported values: "Always"',
                    pod_spec.restart_policy)
    _check_file_names(w, meta.namespace, generated_name_length(meta.name) + suffix_len, pod_spec,
                      "metadata.name", meta.name)
    md = w.map(doc.get("metadata"), "metadata")
    owner = ""
    for i, ref in enumerate(w.list(md.get("ownerReferences"), "metadata.ownerReferences")):
        ref = w.map(ref, f"metadata.ownerReferences[{i}]")
        if ref.get("controller") is True:
            owner = f'{ref.get("kind")}/{ref.get("name")}'
    try:
        created = float((md.get("annotations") or {}).get("netlab/created", 0))
    except (TypeError, ValueError):
        created = 0.0
    obj = cls(meta=meta, replicas=replicas, selector=selector, template_labels=tlabels,
              template=pod_spec, raw_template=template, min_ready=min_ready, owner=owner, created=created)
    return obj, spec


def parse_replicaset(doc: dict, w: _Where) -> ReplicaSet:
    return _parse(doc, w, ReplicaSet, 0)[0]


def parse_deployment(doc: dict, w: _Where) -> Deployment:
    dep, spec = _parse(doc, w, Deployment, 11)
    strategy = w.map(spec.get("strategy"), "spec.strategy")
    dep.strategy = w.str(strategy.get("type"), "spec.strategy.type") or "RollingUpdate"
    if dep.strategy not in ("RollingUpdate", "Recreate"):
        raise w.err("spec.strategy.type", 'Unsupported value: supported values: "Recreate", "RollingUpdate"',
                    dep.strategy)
    ru = w.map(strategy.get("rollingUpdate"), "spec.strategy.rollingUpdate")
    if ru and dep.strategy == "Recreate":
        raise w.err("spec.strategy.rollingUpdate", "Forbidden: may not be specified when strategy "
                    "`type` is 'Recreate'")
    dep.max_surge = _int_or_percent(w, ru.get("maxSurge"), "spec.strategy.rollingUpdate.maxSurge", "25%")
    dep.max_unavailable = _int_or_percent(w, ru.get("maxUnavailable"),
                                          "spec.strategy.rollingUpdate.maxUnavailable", "25%")
    if dep.strategy == "RollingUpdate" and scaled(dep.max_surge, 100, True) == 0 \
            and scaled(dep.max_unavailable, 100, False) == 0:
        raise w.err("spec.strategy.rollingUpdate.maxUnavailable",
                    "Invalid value: may not be 0 when `maxSurge` is 0", dep.max_unavailable)
    dep.history_limit = w.int(spec.get("revisionHistoryLimit"), "spec.revisionHistoryLimit", 0, default=10)
    w.int(spec.get("progressDeadlineSeconds"), "spec.progressDeadlineSeconds", 0)
    dep.paused = spec.get("paused") is True
    return dep


def parse_daemonset(doc: dict, w: _Where) -> DaemonSet:
    ds, _ = _parse(doc, w, DaemonSet, 6)
    ds.replicas = 0
    return ds


def parse_statefulset(doc: dict, w: _Where) -> StatefulSet:
    sts, spec = _parse(doc, w, StatefulSet, 6)
    sts.service_name = w.str(spec.get("serviceName"), "spec.serviceName")
    policy = w.str(spec.get("podManagementPolicy"), "spec.podManagementPolicy") or "OrderedReady"
    if policy not in ("OrderedReady", "Parallel"):
        raise w.err("spec.podManagementPolicy", 'Unsupported value: supported values: "OrderedReady", "Parallel"',
                    policy)
    sts.parallel = policy == "Parallel"
    return sts


PARSERS.update({"Deployment": parse_deployment, "ReplicaSet": parse_replicaset,
                "DaemonSet": parse_daemonset, "StatefulSet": parse_statefulset})
KINDS.update({kind: APPS for kind in APPS_KINDS})


# ---------------------------------------------------------------------- names and hashes


def fnv32a(data: bytes) -> int:
    h = 0x811c9dc5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xffffffff
    return h


def template_hash(raw_template: dict) -> str:
    """The pod-template-hash: a hash of the template, in kube's SafeEncodeString alphabet."""
    text = json.dumps(raw_template or {}, sort_keys=True, separators=(",", ":"))
    return "".join(_SAFE[ord(c) % len(_SAFE)] for c in str(fnv32a(text.encode())))


def key(kind: str, namespace: str, name: str) -> str:
    return f"{kind}/{namespace}/{name}"


def manifest(obj: Workload) -> dict:
    """The object as stored (and served), with the count that `scale` changed."""
    doc = copy.deepcopy(obj.meta.raw) or {"apiVersion": APPS, "kind": obj.kind}
    if not isinstance(obj, DaemonSet):
        doc.setdefault("spec", {})["replicas"] = obj.replicas
    md = doc.setdefault("metadata", {})
    if obj.meta.annotations:
        md["annotations"] = {**(md.get("annotations") or {}), **obj.meta.annotations}
    if obj.created:
        md["annotations"] = {**(md.get("annotations") or {}), "netlab/created": repr(obj.created)}
    return doc


def _parse_doc(doc: dict, source: str):
    from .objects import parse_object
    obj = parse_object(doc, source)
    obj.meta.source = source
    return obj


def new_replicaset(dep: Deployment, revision: int, replicas: int) -> ReplicaSet:
    """The ReplicaSet a Deployment's current template asks for."""
    h = template_hash(dep.raw_template)
    template = copy.deepcopy(dep.raw_template)
    tmd = template.setdefault("metadata", {}) or {}
    template["metadata"] = tmd
    tmd["labels"] = {**(tmd.get("labels") or {}), HASH_LABEL: h}
    sel = copy.deepcopy((dep.meta.raw.get("spec") or {}).get("selector") or {})
    if "matchLabels" in sel or "matchExpressions" in sel:
        sel["matchLabels"] = {**(sel.get("matchLabels") or {}), HASH_LABEL: h}
    else:
        sel = {"matchLabels": {**sel, HASH_LABEL: h}}
    doc = {"apiVersion": APPS, "kind": "ReplicaSet",
           "metadata": {"name": f"{dep.meta.name}-{h}", "namespace": dep.meta.namespace,
                        "labels": dict(tmd["labels"]),
                        "annotations": {REVISION: str(revision)},
                        "ownerReferences": [{"apiVersion": APPS, "kind": "Deployment", "name": dep.meta.name,
                                             "controller": True, "blockOwnerDeletion": True}]},
           "spec": {"replicas": replicas, "minReadySeconds": dep.min_ready, "selector": sel,
                    "template": template}}
    return _parse_doc(doc, dep.meta.source)


def statefulset_pod(sts: StatefulSet, ordinal: int) -> dict:
    name = f"{sts.meta.name}-{ordinal}"
    template = copy.deepcopy(sts.raw_template)
    md = template.get("metadata") or {}
    labels = {**(md.get("labels") or {}), "statefulset.kubernetes.io/pod-name": name,
              "apps.kubernetes.io/pod-index": str(ordinal),
              REVISION_LABEL: f"{sts.meta.name}-{template_hash(sts.raw_template)}"}
    spec = copy.deepcopy(template.get("spec") or {})
    spec["hostname"] = name
    if sts.service_name:
        spec["subdomain"] = sts.service_name
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {**{k: v for k, v in md.items() if k in ("annotations",)},
                         "name": name, "namespace": sts.meta.namespace, "labels": labels,
                         "ownerReferences": [{"apiVersion": APPS, "kind": "StatefulSet", "name": sts.meta.name,
                                              "controller": True}]},
            "spec": spec}


def daemonset_pod(ds: DaemonSet, name: str, node: str) -> dict:
    template = copy.deepcopy(ds.raw_template)
    md = template.get("metadata") or {}
    spec = copy.deepcopy(template.get("spec") or {})
    spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {**{k: v for k, v in md.items() if k in ("annotations",)},
                         "name": name, "namespace": ds.meta.namespace,
                         "labels": {**(md.get("labels") or {}),
                                    REVISION_LABEL: f"{ds.meta.name}-{template_hash(ds.raw_template)}"},
                         "generateName": ds.meta.name + "-",
                         "ownerReferences": [{"apiVersion": APPS, "kind": "DaemonSet", "name": ds.meta.name,
                                              "controller": True}]},
            "spec": spec}


# ---------------------------------------------------------------------- the controllers' plans
#
# Each plan returns a list of actions, the next step only:
#   ("create", obj)             admit a new object (a ReplicaSet brings its pods)
#   ("scale", rs_ref, n)        set a ReplicaSet's replicas; its pods follow
#   ("revision", rs_ref, n)     set a ReplicaSet's revision (an undo makes an old one current)
#   ("delete", rs_ref)          remove an old ReplicaSet beyond revisionHistoryLimit
#   ("pod", doc)                create a pod from its manifest (DaemonSet, StatefulSet)
#   ("delete_pod", pod_key)


def owned_replicasets(cluster, dep: Deployment) -> list[ReplicaSet]:
    mine = f"Deployment/{dep.meta.name}"
    return sorted((o for o in cluster.apps.values() if isinstance(o, ReplicaSet)
                   and o.meta.namespace == dep.meta.namespace and o.owner == mine),
                  key=lambda rs: (rs.revision, rs.meta.name))


def owned_pods(cluster, obj: Workload) -> list[Pod]:
    mine = f"{obj.kind}/{obj.meta.name}"
    return sorted((p for p in cluster.pods.values() if p.meta.namespace == obj.meta.namespace and p.owner == mine),
                  key=lambda p: (p.created, p.meta.name))


def current_replicaset(cluster, dep: Deployment) -> Optional[ReplicaSet]:
    h = template_hash(dep.raw_template)
    return next((rs for rs in owned_replicasets(cluster, dep) if rs.meta.name == f"{dep.meta.name}-{h}"), None)


def plan_deployment(cluster, dep: Deployment, ready: set[str], available: set[str]) -> list:
    """One step of the deployment controller (kube's rolloutRolling / rolloutRecreate)."""
    all_rs = owned_replicasets(cluster, dep)
    new = current_replicaset(cluster, dep)
    old = [rs for rs in all_rs if rs is not new]
    top = max((rs.revision for rs in all_rs), default=0)
    if new is None:
        if dep.paused:
            return []
        if dep.strategy == "Recreate":
            start = 0 if any(rs.replicas or owned_pods(cluster, rs) for rs in old) else dep.replicas
        else:
            total = sum(rs.replicas for rs in old)
            surge = scaled(dep.max_surge, dep.replicas, True)
            start = max(0, min(dep.replicas, dep.replicas + surge - total))
        return [("create", new_replicaset(dep, top + 1, start))]
    if new.revision < top:             # an undo made an old template current again
        return [("revision", new.ref, top + 1)]
    if dep.paused:
        return []
    if dep.strategy == "Recreate":
        live_old = [rs for rs in old if rs.replicas]
        if live_old:
            return [("scale", rs.ref, 0) for rs in live_old]
        if any(owned_pods(cluster, rs) for rs in old):
            return []
        return [("scale", new.ref, dep.replicas)] if new.replicas != dep.replicas else _history(cluster, dep, old)
    if not old or all(rs.replicas == 0 for rs in old):
        if new.replicas != dep.replicas:
            return [("scale", new.ref, dep.replicas)]
        return _history(cluster, dep, old)
    # Scale up the new ReplicaSet as far as maxSurge lets it.
    surge = scaled(dep.max_surge, dep.replicas, True)
    unavailable = scaled(dep.max_unavailable, dep.replicas, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    total = sum(rs.replicas for rs in all_rs)
    if new.replicas > dep.replicas:
        return [("scale", new.ref, dep.replicas)]
    if new.replicas < dep.replicas and total < dep.replicas + surge:
        return [("scale", new.ref, min(dep.replicas, new.replicas + dep.replicas + surge - total))]
    # Scale the old ones down as far as maxUnavailable lets it (kube's reconcileOldReplicaSets).
    min_available = dep.replicas - unavailable
    pods = {rs.ref: owned_pods(cluster, rs) for rs in all_rs}
    avail = {rs.ref: sum(1 for p in pods[rs.ref] if p.meta.key in available) for rs in all_rs}
    new_unavailable = max(0, new.replicas - avail[new.ref])
    max_down = total - min_available - new_unavailable
    if max_down <= 0:
        return []
    want = {rs.ref: rs.replicas for rs in old}
    # First the old pods that are not available anyway: removing them costs nothing.
    for rs in sorted(old, key=lambda r: r.revision):
        unhealthy = min(want[rs.ref] - min(avail[rs.ref], want[rs.ref]), max_down)
        if unhealthy > 0:
            want[rs.ref] -= unhealthy
            max_down -= unhealthy
    # Then available ones, as long as minAvailable stays available.
    budget = sum(min(avail[r.ref], want.get(r.ref, r.replicas)) for r in all_rs) - min_available
    for rs in sorted(old, key=lambda r: r.revision):
        if budget <= 0:
            break
        cut = min(want[rs.ref], budget)
        want[rs.ref] -= cut
        budget -= cut
    return [("scale", rs.ref, want[rs.ref]) for rs in old if want[rs.ref] != rs.replicas]


def _history(cluster, dep: Deployment, old: list[ReplicaSet]) -> list:
    """Old ReplicaSets at 0 beyond revisionHistoryLimit are deleted, oldest first."""
    spare = [rs for rs in old if rs.replicas == 0 and not owned_pods(cluster, rs)]
    extra = len(spare) - dep.history_limit
    return [("delete", rs.ref) for rs in spare[:extra]] if extra > 0 else []


def rollout_done(cluster, dep: Deployment, available: set[str]) -> tuple[bool, str]:
    """kubectl rollout status's test, and its messages."""
    new = current_replicaset(cluster, dep)
    status = deployment_status(cluster, dep, available)
    name = dep.meta.name
    if new is None:
        return False, f'Waiting for deployment "{name}" rollout to finish: 0 out of {dep.replicas} new replicas have been updated...'
    if status["updatedReplicas"] < dep.replicas:
        return False, (f'Waiting for deployment "{name}" rollout to finish: {status["updatedReplicas"]} out of '
                       f'{dep.replicas} new replicas have been updated...')
    if status["replicas"] > status["updatedReplicas"]:
        return False, (f'Waiting for deployment "{name}" rollout to finish: '
                       f'{status["replicas"] - status["updatedReplicas"]} old replicas are pending termination...')
    if status["availableReplicas"] < status["updatedReplicas"]:
        return False, (f'Waiting for deployment "{name}" rollout to finish: {status["availableReplicas"]} of '
                       f'{status["updatedReplicas"]} updated replicas are available...')
    return True, f'deployment "{name}" successfully rolled out'


def deployment_status(cluster, dep: Deployment, available: set[str], ready: Optional[set[str]] = None) -> dict:
    ready = available if ready is None else ready
    all_rs = owned_replicasets(cluster, dep)
    new = current_replicaset(cluster, dep)
    pods = [p for rs in all_rs for p in owned_pods(cluster, rs)]
    updated = owned_pods(cluster, new) if new else []
    n_avail = sum(1 for p in pods if p.meta.key in available)
    done = bool(new) and len(updated) == dep.replicas == len(pods) and n_avail >= dep.replicas
    return {"observedGeneration": 1, "replicas": len(pods), "updatedReplicas": len(updated),
            "readyReplicas": sum(1 for p in pods if p.meta.key in ready), "availableReplicas": n_avail,
            "unavailableReplicas": max(0, dep.replicas - n_avail),
            "conditions": [
                {"type": "Available", "status": "True" if n_avail >= dep.replicas - scaled(
                    dep.max_unavailable, dep.replicas, False) else "False",
                 "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True",
                 "reason": "NewReplicaSetAvailable" if done else "ReplicaSetUpdated",
                 "message": f'ReplicaSet "{new.meta.name}" ' + ("has successfully progressed." if done
                                                                 else "is progressing.") if new else ""}]}


def _outdated(obj: Workload, pods: list[Pod]) -> list[Pod]:
    current = f"{obj.meta.name}-{template_hash(obj.raw_template)}"
    return [p for p in pods if p.meta.labels.get(REVISION_LABEL) != current]


def plan_daemonset(cluster, ds: DaemonSet, ready: Optional[set[str]] = None) -> list:
    """One pod per node whose labels match the template's nodeSelector. A changed template
    rolls as the RollingUpdate strategy does with maxUnavailable 1: once every pod is ready,
    one outdated pod is deleted, and its node gets a new one."""
    pods = owned_pods(cluster, ds)
    on = {}
    actions = []
    for p in pods:
        if p.spec.node_name in on:
            actions.append(("delete_pod", p.meta.key))       # a second one on a node
        on.setdefault(p.spec.node_name, p)
    wanted = {n.name for n in cluster.nodes
              if all(n.labels.get(k) == v for k, v in ds.template.node_selector.items())}
    for node, p in on.items():
        if node not in wanted:
            actions.append(("delete_pod", p.meta.key))
    for n in cluster.nodes:
        if n.name in wanted and n.name not in on:
            actions.append(("pod", daemonset_pod(ds, cluster.new_pod_name(ds.meta.name, ds.meta.namespace), n.name)))
    if not actions and ready is not None and all(p.meta.key in ready for p in pods):
        old = _outdated(ds, pods)
        if old:
            actions.append(("delete_pod", old[0].meta.key))
    return actions


def plan_statefulset(cluster, sts: StatefulSet, ready: set[str]) -> list:
    """OrderedReady: create the lowest missing ordinal once all below it are ready; scale down
    from the highest ordinal, one at a time."""
    ns = sts.meta.namespace
    have = {p.meta.name: p for p in owned_pods(cluster, sts)}
    for name, p in sorted(have.items(), key=lambda kv: -_ordinal(sts, kv[0])):
        if _ordinal(sts, name) >= sts.replicas:
            return [("delete_pod", p.meta.key)]
    actions = []
    for i in range(sts.replicas):
        name = f"{sts.meta.name}-{i}"
        if name not in have:
            if f"{ns}/{name}" in cluster.pods:
                return actions               # a pod of that name that is not ours: wait
            actions.append(("pod", statefulset_pod(sts, i)))
            if not sts.parallel:
                return actions
        elif not sts.parallel and f"{ns}/{name}" not in ready:
            return actions
    if not actions and all(p.meta.key in ready for p in have.values()):
        # RollingUpdate: the highest ordinal with an outdated template goes first; it comes
        # back with the new one, and the next goes once it is ready.
        old = sorted(_outdated(sts, list(have.values())), key=lambda p: -_ordinal(sts, p.meta.name))
        if old:
            actions.append(("delete_pod", old[0].meta.key))
    return actions


def _ordinal(sts: StatefulSet, name: str) -> int:
    tail = name[len(sts.meta.name) + 1:]
    return int(tail) if tail.isdigit() else 1 << 30


def statefulset_status(cluster, sts: StatefulSet, ready: set[str]) -> dict:
    pods = owned_pods(cluster, sts)
    n_ready = sum(1 for p in pods if p.meta.key in ready)
    return {"observedGeneration": 1, "replicas": len(pods), "readyReplicas": n_ready,
            "currentReplicas": len(pods), "updatedReplicas": len(pods), "availableReplicas": n_ready}


def daemonset_status(cluster, ds: DaemonSet, ready: set[str]) -> dict:
    pods = owned_pods(cluster, ds)
    wanted = [n for n in cluster.nodes if all(n.labels.get(k) == v for k, v in ds.template.node_selector.items())]
    n_ready = sum(1 for p in pods if p.meta.key in ready)
    return {"observedGeneration": 1, "desiredNumberScheduled": len(wanted), "currentNumberScheduled": len(pods),
            "numberReady": n_ready, "updatedNumberScheduled": len(pods), "numberAvailable": n_ready,
            "numberMisscheduled": 0}


def plan(cluster, ready: set[str], available: set[str]) -> list:
    """The next step of every apps/v1 controller in the lab."""
    actions = []
    for obj in list(cluster.apps.values()):
        if isinstance(obj, Deployment):
            actions += plan_deployment(cluster, obj, ready, available)
        elif isinstance(obj, DaemonSet):
            actions += plan_daemonset(cluster, obj, ready)
        elif isinstance(obj, StatefulSet):
            actions += plan_statefulset(cluster, obj, ready)
        elif isinstance(obj, ReplicaSet) and len(owned_pods(cluster, obj)) != obj.replicas:
            actions.append(("scale", obj.ref, obj.replicas))
    return actions


def act(cluster, actions: list, ready: set[str]) -> list[str]:
    """Apply a plan's actions to the cluster (inside the write path's transaction)."""
    lines = []
    for action in actions:
        verb = action[0]
        if verb == "create":
            cluster.admit([action[1]])
            lines.append(f"{action[1].kind.lower()}/{action[1].meta.name} created")
        elif verb == "scale":
            rs = cluster.apps[action[1]]
            scale_replicaset(cluster, rs, action[2], ready)
            lines.append(f"{rs.kind.lower()}/{rs.meta.name} scaled to {action[2]}")
        elif verb == "revision":
            rs = cluster.apps[action[1]]
            set_revision(rs, action[2])
            lines.append(f"replicaset/{rs.meta.name} is revision {action[2]}")
        elif verb == "delete":
            rs = cluster.apps.pop(action[1])
            lines.append(f"replicaset/{rs.meta.name} deleted")
        elif verb == "pod":
            pod = _parse_doc(action[1], "")
            cluster.admit([pod])
            lines.append(f"pod/{pod.meta.name} created")
        elif verb == "delete_pod":
            if action[1] in cluster.pods:
                cluster.remove_pod(action[1])
                lines.append(f"pod/{action[1]} deleted")
    return lines


def set_revision(rs: ReplicaSet, revision: int) -> None:
    rs.meta.annotations[REVISION] = str(revision)
    md = rs.meta.raw.setdefault("metadata", {})
    md["annotations"] = {**(md.get("annotations") or {}), REVISION: str(revision)}


def scale_replicaset(cluster, rs: Workload, replicas: int, ready: set[str]) -> None:
    """The replica set controller: delete not-ready pods first, then the newest; create to fill."""
    rs.replicas = replicas
    mine = cluster.rc_pods(rs)
    extra = len(mine) - replicas
    if extra > 0:
        ranked = sorted(mine, key=lambda p: (p.meta.key in ready, -p.created))
        for pod in ranked[:extra]:
            cluster.remove_pod(pod.meta.key)
    cluster.reconcile_rc(rs)


def admit(cluster, obj: Workload) -> list:
    """Admission of an apps/v1 object: a Deployment brings its first ReplicaSet at once, a
    ReplicaSet its pods, a DaemonSet and a StatefulSet their first pods (the agent's
    controllers do the rest)."""
    from .errors import InvalidError
    if obj.ref in cluster.apps:
        raise InvalidError(f"{obj.kind} {obj.meta.key} already exists", file=obj.meta.source,
                           obj=f"{obj.kind}/{obj.meta.name}", field="metadata.name")
    obj.meta.raw = obj.meta.raw or {}
    obj.created = obj.created or time.time()
    cluster.apps[obj.ref] = obj
    added = [obj]
    if isinstance(obj, ReplicaSet):
        return added + cluster.reconcile_rc(obj)
    for step in (plan_deployment(cluster, obj, set(), set()) if isinstance(obj, Deployment)
                 else plan_daemonset(cluster, obj) if isinstance(obj, DaemonSet)
                 else plan_statefulset(cluster, obj, set())):
        if step[0] == "create":
            added += admit(cluster, step[1])
        elif step[0] == "pod":
            pod = _parse_doc(step[1], obj.meta.source)
            cluster._place_pod(pod)
            added.append(pod)
    return added
