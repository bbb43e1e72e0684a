"""The lab's write path, run only inside its agent (the lab's one writer).

Every change goes validate -> apply to the kernel -> commit: the in-memory cluster is changed
and admitted (validation), new pods are wired and every node's rules and the DNS records are
synced (the kernel), and only then is state.json written (commit). If any step fails, the
cluster, the kernel and the file are left as they were before the change.
"""
from __future__ import annotations

import copy
from typing import Callable, Iterable, Protocol

from .. import state
from ..kernel import netns
from ..kernel.build import Builder
from ..model import names
from ..model.cluster import Cluster
from ..model.errors import InvalidError, LabError, NotFoundError, StateError
from ..model.objects import Pod, ReplicationController, Service
from ..plan import network as netplan
from ..model.workloads import APPS_KINDS
from .api import Conflict


class Kubelet(Protocol):
    """What the write path needs from the agent's pod supervision."""

    def ready_pods(self) -> set[str]: ...          # pods whose endpoints may be used

    def sync_pods(self) -> None: ...               # start new pods, stop removed ones

    proxies: dict                                  # userspace mode: node -> proxy PID


def save(cluster: Cluster) -> None:
    state.write_json(state.state_file(cluster.name), cluster.to_state())


# ---------------------------------------------------------------------- pod network


def add_pod_network(cluster: Cluster, pods: Iterable[Pod], builder: Builder) -> None:
    plans, created = [], []
    for pod in pods:
        plans.extend(netplan.plan_pod(cluster, pod))
        created.append(cluster.pod_netns(pod))
    builder.apply(plans, create_netns=created)
    for ns in created:     # pods are many; don't hold a socket per pod open
        builder.forget(ns)


def remove_pod_network(cluster: Cluster, pods: list[Pod]) -> None:
    """Unwire pods: their processes, host-side veths, namespaces and files."""
    spaces = [cluster.pod_netns(p) for p in pods]
    netns.kill_processes([i for i in (netns.inode(ns) for ns in spaces) if i])
    with Builder() as builder:
        for pod in pods:
            try:
                veth = names.host_veth(pod.meta.namespace, pod.meta.name, calico=cluster.config.calico_pods)
                builder.remove_links(cluster.node(pod.spec.node_name).netns, [veth])
            except LabError:
                pass      # the node itself is gone
    for ns in spaces:
        netns.delete(ns)


# ---------------------------------------------------------------------- the transaction


class NetworkChange(Protocol):
    """A change of the lab's own network (a node joining or leaving, runtime/nodechanges.py)
    that a transaction carries out before its pods are wired and its rules synced."""

    def apply(self) -> None: ...                   # the kernel part; undone by undo on failure

    def undo(self) -> None: ...                    # best effort: the original error is reported

    def finish(self) -> None: ...                  # after the commit: what cannot be undone


def converge(cluster: Cluster, snapshot: dict, kubelet: Kubelet,
             network: "NetworkChange | None" = None) -> None:
    """Make the kernel and the pods follow a cluster changed since `snapshot`, then commit.

    On failure the cluster is restored to the snapshot, the pods wired for it are unwired and
    the rules synced back, so nothing of the change stays; the error is raised."""
    from .. import dataplane
    old = Cluster.from_state(snapshot)
    added = [p for k, p in cluster.pods.items() if k not in old.pods]
    removed = [p for k, p in old.pods.items() if k not in cluster.pods]
    try:
        if network is not None:
            network.apply()
        with Builder() as builder:
            add_pod_network(cluster, added, builder)
        dataplane.sync(cluster, kubelet.ready_pods() & set(cluster.pods), kubelet.proxies,
                       getattr(kubelet, "pids_of", None))
    except BaseException:
        remove_pod_network(cluster, added)
        if network is not None:
            try:
                network.undo()
            except Exception:       # the original error is the one to report
                pass
        cluster.restore(snapshot)
        try:
            dataplane.sync(cluster, kubelet.ready_pods() & set(cluster.pods), kubelet.proxies,
                           getattr(kubelet, "pids_of", None))
        except Exception:       # the original error is the one to report
            pass
        raise
    save(cluster)
    kubelet.sync_pods()
    remove_pod_network(old, removed)
    if network is not None:
        network.finish()


def _changing(cluster: Cluster, kubelet: Kubelet, change: Callable[[], list[str]]) -> list[str]:
    """Run one change on the cluster as a transaction; a refused change leaves it untouched."""
    snapshot = cluster.snapshot()
    try:
        results = change()
    except BaseException:
        cluster.restore(snapshot)
        raise
    converge(cluster, snapshot, kubelet)
    return results


# ---------------------------------------------------------------------- the verbs


def _replace_service(cluster: Cluster, new: Service) -> None:
    """kubectl apply on an existing Service: keep its ClusterIP and nodePorts unless changed."""
    old = cluster.services[new.meta.key]
    new.created = old.created          # an update, not a new Service: the same age
    if not new.cluster_ip:
        new.cluster_ip = old.cluster_ip
    if new.type == old.type:
        for port in new.ports:
            before = next((p for p in old.ports if (p.name, p.port) == (port.name, port.port)), None)
            if before and not port.node_port:
                port.node_port = before.node_port
        if not new.load_balancer_ip:
            new.load_balancer_ip = old.load_balancer_ip
    cluster.remove_service(old.meta.key)
    cluster.admit([new])


def _scale_to(cluster: Cluster, rc: ReplicationController) -> None:
    """The replication manager's job: create or delete pods until `replicas` match."""
    mine = cluster.rc_pods(rc)
    for pod in mine[rc.replicas:][::-1] if len(mine) > rc.replicas else []:
        cluster.remove_pod(pod.meta.key)
    cluster.reconcile_rc(rc)


def _exists(cluster: Cluster, obj) -> bool:
    if obj.kind in APPS_KINDS:
        return obj.ref in cluster.apps
    if obj.kind == "NetworkPolicy":
        return obj.meta.key in cluster.policies
    if obj.kind == "Namespace":
        return obj.meta.name in cluster.namespaces
    if obj.kind == "IngressClass":
        return obj.meta.name in cluster.ingress_classes
    return obj.meta.key in _store(cluster, obj.kind)


def _store(cluster: Cluster, kind: str) -> dict:
    return {"Service": cluster.services, "ReplicationController": cluster.rcs, "Pod": cluster.pods,
            "Endpoints": cluster.endpoints, "EndpointSlice": cluster.slices,
            "Ingress": cluster.ingresses, "Secret": cluster.secrets}[kind]


def apply(cluster: Cluster, objects: list, kubelet: Kubelet, mode: str = "apply") -> list[str]:
    """Create (mode "create"), replace ("replace") or create-or-update ("apply") objects.

    Returns kubectl-style lines ("service/frontend created")."""
    def change() -> list[str]:
        results, fresh = [], []
        for obj in objects:
            exists = _exists(cluster, obj)
            kind = obj.kind.lower()
            if exists and mode == "create":
                raise Conflict(f'{kind}s "{obj.meta.name}" already exists', obj=f"{obj.kind}/{obj.meta.name}")
            if not exists and mode == "replace":
                raise NotFoundError(f'{kind}s "{obj.meta.name}" not found')
            if not exists:
                fresh.append(obj)
            elif isinstance(obj, Service):
                _replace_service(cluster, obj)
                results.append(f"service/{obj.meta.name} configured")
            elif isinstance(obj, ReplicationController):
                cluster.rcs[obj.meta.key] = obj
                _scale_to(cluster, obj)
                results.append(f"replicationcontroller/{obj.meta.name} configured")
            elif obj.kind in APPS_KINDS:
                results.append(_replace_workload(cluster, obj, kubelet))
            elif obj.kind == "NetworkPolicy":
                # Felix follows at once: the sync below rewrites the policy's chains and ipsets.
                obj.created = cluster.policies[obj.meta.key].created
                cluster.policies[obj.meta.key] = obj
                results.append(f"networkpolicy.networking.k8s.io/{obj.meta.name} configured")
            elif obj.kind in ("Endpoints", "EndpointSlice"):
                _store(cluster, obj.kind)[obj.meta.key] = obj
                results.append(f"{kind}/{obj.meta.name} configured")
            elif obj.kind in ("Ingress", "Secret", "IngressClass"):
                results.append(_replace_ingress_kind(cluster, obj))
            elif isinstance(obj, Pod):
                _update_pod(cluster, obj)
                results.append(f"pod/{obj.meta.name} configured")
            elif obj.kind == "Namespace" and obj.meta.name in cluster.namespaces:
                cluster.namespaces[obj.meta.name] = obj
                results.append(f"namespace/{obj.meta.name} configured")
            else:
                results.append(f"{kind}/{obj.meta.name} unchanged")
        cluster.admit(_with_ingress_addon(cluster, fresh))
        return results + [f"{o.kind.lower()}/{o.meta.name} created" for o in fresh]
    return _changing(cluster, kubelet, change)


def _replace_workload(cluster: Cluster, obj, kubelet: Kubelet) -> str:
    """kubectl apply on an existing apps/v1 object: the new spec is stored; a Deployment's new
    template is rolled out by the agent's controller, step by step (runtime/appsctl.py)."""
    from ..model import workloads
    old = cluster.apps[obj.ref]
    obj.owner = obj.owner or old.owner
    obj.created = old.created
    if isinstance(obj, workloads.ReplicaSet):
        obj.meta.annotations = {**old.meta.annotations, **obj.meta.annotations}
    cluster.apps[obj.ref] = obj
    if isinstance(obj, workloads.ReplicaSet):
        workloads.scale_replicaset(cluster, obj, obj.replicas, kubelet.ready_pods())
    same = workloads.manifest(old).get("spec") == workloads.manifest(obj).get("spec")
    return f"{obj.kind.lower()}.apps/{obj.meta.name} {'unchanged' if same else 'configured'}"


def step_controllers(cluster: Cluster, kubelet: Kubelet, ready: set[str], available: set[str]) -> list[str]:
    """One step of the apps/v1 controllers (model/workloads.plan), as one transaction; nothing
    is written when there is nothing to do."""
    from ..model import workloads
    if not cluster.apps:
        return []
    actions = workloads.plan(cluster, ready, available)
    if not actions:
        return []
    return _changing(cluster, kubelet, lambda: workloads.act(cluster, actions, ready))


def _replace_ingress_kind(cluster: Cluster, obj) -> str:
    """kubectl apply on an existing Ingress, Secret or IngressClass: the new one replaces it
    (an Ingress keeps its age, which decides who keeps a path that two Ingresses claim)."""
    if obj.kind == "IngressClass":
        cluster.ingress_classes[obj.meta.name] = obj
    else:
        store = _store(cluster, obj.kind)
        obj.created = store[obj.meta.key].created if obj.kind == "Ingress" else 0.0
        store[obj.meta.key] = obj
    return f"{obj.kind.lower()}.networking.k8s.io/{obj.meta.name} configured" if obj.kind != "Secret" \
        else f"secret/{obj.meta.name} configured"


def _with_ingress_addon(cluster: Cluster, fresh: list) -> list:
    """The first Ingress of a lab brings the ingress-nginx add-on (unless lab.yaml says
    `ingress: false`), as installing the controller would."""
    from ..model.addons import INGRESS_NAMESPACE, INGRESS_SOURCE, ingress_nginx, wants_ingress
    from ..model.objects import parse_object
    from . import ingress
    if not wants_ingress(cluster.config, fresh, present=ingress.enabled(cluster)):
        return fresh
    own_ns = INGRESS_NAMESPACE in cluster.namespaces or any(
        o.kind == "Namespace" and o.meta.name == INGRESS_NAMESPACE for o in fresh)
    return fresh + [parse_object(doc, INGRESS_SOURCE) for doc in ingress_nginx(cluster.config, own_ns)]


def _update_pod(cluster: Cluster, new: Pod) -> None:
    """An update of a pod may change its metadata (labels, annotations: Services follow the
    labels), not its spec, as the API server allows (kubectl label/annotate, apply)."""
    old = cluster.pods[new.meta.key]
    new.spec.node_name = new.spec.node_name or old.spec.node_name
    if new.spec != old.spec:          # the parsed specs: defaults (protocol TCP, ...) compare equal
        raise InvalidError("Forbidden: pod updates may not change fields other than metadata "
                           "(labels, annotations); delete the pod and create it again",
                           file=new.meta.source, obj=f"Pod/{new.meta.name}", field="spec")
    raw = copy.deepcopy(old.meta.raw)
    md = raw.setdefault("metadata", {})
    for key in ("labels", "annotations"):
        value = (new.meta.raw.get("metadata") or {}).get(key)
        if value:
            md[key] = copy.deepcopy(value)
        else:
            md.pop(key, None)
    old.meta.labels, old.meta.annotations, old.meta.raw = dict(new.meta.labels), dict(new.meta.annotations), raw


APPS_RESOURCES = {"deployments": "Deployment", "replicasets": "ReplicaSet", "daemonsets": "DaemonSet",
                  "statefulsets": "StatefulSet"}


def workload(cluster: Cluster, kind: str, name: str, namespace: str):
    """An apps/v1 object by resource (deployments, ...) or kind."""
    kind = APPS_RESOURCES.get(kind, kind)
    obj = cluster.apps.get(f"{kind}/{namespace}/{name}")
    if obj is None:
        plural = next((r for r, k in APPS_RESOURCES.items() if k == kind), kind)
        raise NotFoundError(f'{plural}.apps "{name}" not found in namespace "{namespace}"')
    return obj


def scale(cluster: Cluster, name: str, namespace: str, replicas: int, kubelet: Kubelet,
          kind: str = "rcs") -> str:
    if isinstance(replicas, bool) or not isinstance(replicas, int) or not 0 <= replicas <= 100000:
        raise InvalidError("must be an integer from 0 to 100000", value=replicas, field="spec.replicas")

    def change_workload() -> list[str]:
        from ..model import workloads
        obj = workload(cluster, kind, name, namespace)
        if obj.kind == "DaemonSet":
            raise InvalidError("a DaemonSet has no replicas: it runs one pod per node", field="spec.replicas")
        obj.replicas = replicas
        if obj.kind == "ReplicaSet":
            workloads.scale_replicaset(cluster, obj, replicas, kubelet.ready_pods())
        return [f"{obj.kind.lower()}.apps/{name} scaled"]
    if kind in APPS_RESOURCES or kind in APPS_KINDS:
        return _changing(cluster, kubelet, change_workload)[0]

    def change() -> list[str]:
        rc = _rc(cluster, name, namespace)
        scaled = copy.copy(rc)
        scaled.replicas = replicas
        cluster.rcs[rc.meta.key] = scaled
        _scale_to(cluster, scaled)
        return [f"replicationcontroller/{name} scaled"]
    return _changing(cluster, kubelet, change)[0]


def _rc(cluster: Cluster, name: str, namespace: str) -> ReplicationController:
    rc = cluster.rcs.get(f"{namespace}/{name}")
    if rc is None:
        raise NotFoundError(f'replicationcontrollers "{name}" not found in namespace "{namespace}"')
    return rc


def delete(cluster: Cluster, kind: str, name: str, namespace: str, kubelet: Kubelet) -> list[str]:
    """Delete one object (kind: pods, services, rcs, namespaces); dependents follow."""
    def change() -> list[str]:
        if kind == "services":
            cluster.service(name, namespace)
            cluster.remove_service(f"{namespace}/{name}")
            return [f'service "{name}" deleted']
        if kind in ("ingresses", "secrets", "ingressclasses"):
            return [_delete_ingress_kind(cluster, kind, name, namespace)]
        if kind == "endpoints":
            if cluster.endpoints.pop(f"{namespace}/{name}", None) is None:
                raise NotFoundError(f'endpoints "{name}" not found in namespace "{namespace}"')
            return [f'endpoints "{name}" deleted']
        if kind == "networkpolicies":
            if cluster.policies.pop(f"{namespace}/{name}", None) is None:
                raise NotFoundError(f'networkpolicies.networking.k8s.io "{name}" not found in namespace "{namespace}"')
            return [f'networkpolicy.networking.k8s.io "{name}" deleted']
        if kind == "rcs":
            rc = _rc(cluster, name, namespace)
            for pod in cluster.rc_pods(rc):
                cluster.remove_pod(pod.meta.key)
            del cluster.rcs[rc.meta.key]
            return [f'replicationcontroller "{name}" deleted']
        if kind in APPS_RESOURCES:
            obj = workload(cluster, kind, name, namespace)
            from ..model import workloads
            doomed = [obj] + (workloads.owned_replicasets(cluster, obj) if obj.kind == "Deployment" else [])
            for o in doomed:        # cascading deletion: the ReplicaSets, then every pod
                for pod in workloads.owned_pods(cluster, o):
                    cluster.remove_pod(pod.meta.key)
                del cluster.apps[o.ref]
            return [f'{obj.kind.lower()}.apps "{name}" deleted']
        if kind == "pods":
            pod = cluster.pod(name, namespace)
            cluster.remove_pod(pod.meta.key)
            # Its controller notices at once and makes a replacement with a new name and IP.
            for rc in cluster.controllers():
                if rc.meta.namespace == namespace and rc.selector.matches(pod.meta.labels):
                    cluster.reconcile_rc(rc)
            return [f'pod "{name}" deleted']
        if kind == "namespaces":
            if name in ("default", "kube-system"):
                raise StateError(f'namespace "{name}" cannot be deleted')
            if name not in cluster.namespaces:
                raise NotFoundError(f'namespaces "{name}" not found')
            for key in [k for k in cluster.pods if k.startswith(name + "/")]:
                cluster.remove_pod(key)
            for key in [k for k in cluster.services if k.startswith(name + "/")]:
                cluster.remove_service(key)
            for key in [k for k in cluster.rcs if k.startswith(name + "/")]:
                del cluster.rcs[key]
            for key in [k for k, o in cluster.apps.items() if o.meta.namespace == name]:
                del cluster.apps[key]
            for key in [k for k in cluster.policies if k.startswith(name + "/")]:
                del cluster.policies[key]
            for store in (cluster.endpoints, cluster.slices, cluster.ingresses, cluster.secrets):
                for key in [k for k in store if k.startswith(name + "/")]:
                    del store[key]
            del cluster.namespaces[name]
            return [f'namespace "{name}" deleted']
        raise LabError(f"cannot delete {kind}")
    return _changing(cluster, kubelet, change)


def _delete_ingress_kind(cluster: Cluster, kind: str, name: str, namespace: str) -> str:
    if kind == "ingressclasses":
        store, key, what = cluster.ingress_classes, name, "ingressclass.networking.k8s.io"
    else:
        store, key = (cluster.ingresses if kind == "ingresses" else cluster.secrets), f"{namespace}/{name}"
        what = "ingress.networking.k8s.io" if kind == "ingresses" else "secret"
    if store.pop(key, None) is None:
        where = "" if kind == "ingressclasses" else f' in namespace "{namespace}"'
        raise NotFoundError(f'{kind} "{name}" not found{where}')
    return f'{what} "{name}" deleted'


def evict_node(cluster: Cluster, node: str, kubelet: Kubelet) -> list[str]:
    """The node controller's eviction: the node is NotReady, its pods are deleted, and their
    controllers recreate them on the nodes that are left. Returns the evicted pods."""
    def change() -> list[str]:
        cluster.not_ready.add(node)
        gone = [p.meta.key for p in cluster.pods_on(node)]
        for key in gone:
            cluster.remove_pod(key)
        for rc in cluster.controllers():
            cluster.reconcile_rc(rc)
        return gone
    return _changing(cluster, kubelet, change)


def mark_ready(cluster: Cluster, kubelet: Kubelet) -> None:
    """Every node Ready again (heal)."""
    def change() -> list[str]:
        cluster.not_ready.clear()
        return []
    if cluster.not_ready:
        _changing(cluster, kubelet, change)
