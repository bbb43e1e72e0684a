"""The cluster: nodes plus the objects the "API server" has admitted, with allocations.

Admission does what the API server and scheduler do for a real cluster: validate, expand
ReplicationControllers into pods, schedule pods onto nodes, give pods IPs from their node's
subnet and services their ClusterIPs and nodePorts. All pure: no kernel is touched here.
"""
from __future__ import annotations

import copy
import ipaddress
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Iterable, Optional, Union

from . import names
from .config import LabConfig, NodeSpec, parse_lab
from .errors import InvalidError, LabError, NotFoundError, StateError
from .netpol import NetworkPolicy
from .ipam import BlockIPAM, Exhausted, Pool, node_subnet, nth_host
from .objects import (EndpointSlice, Endpoints, Namespace, Pod, ReplicationController, Service, Meta,
                      parse_object)
from .services import ServiceAllocator
from .ingress import Ingress, IngressClass, Secret

Obj = Union[Namespace, Pod, ReplicationController, Service, Endpoints, EndpointSlice]
SYSTEM_NAMESPACES = ("default", "kube-system")
# kube's rand.String alphabet: no vowels (no words), no look-alikes (0/o, 1/l).
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


@dataclass
class Node:
    name: str
    index: int
    labels: dict[str, str]
    internal_ip: str
    pod_cidr: str
    netns: str
    vtep_mac: str
    created: float = 0.0        # joined a running lab then; 0: with the lab (`up`)

    @property
    def gateway(self) -> str:
        """cni0's address: the first address of the node's pod subnet."""
        return str(nth_host(self.pod_cidr, 1))

    @property
    def vtep_ip(self) -> str:
        """flannel.1's address: the subnet's .0 address, as flannel assigns it."""
        return str(ipaddress.ip_network(self.pod_cidr).network_address)


def _vtep_mac(lab: str, node: str) -> str:
    # Locally administered unicast, stable per lab and node so the plan stays pure.
    h = names.short_hash(f"{lab}/{node}/vtep", 10)
    return "0a:" + ":".join(h[i:i + 2] for i in range(0, 10, 2))


def make_node(cfg: LabConfig, spec: NodeSpec, index: int) -> Node:
    """Node number `index`: its underlay address (.offset+index) and subnet (the index-th)."""
    underlay = ipaddress.ip_network(cfg.underlay_cidr)
    labels = {"kubernetes.io/hostname": spec.name, "kubernetes.io/os": "linux", **spec.labels}
    return Node(
        name=spec.name, index=index, labels=labels,
        internal_ip=str(ipaddress.ip_address(int(underlay.network_address) + cfg.node_ip_offset + index)),
        pod_cidr=str(node_subnet(cfg.cluster_cidr, cfg.node_prefix, index)),
        netns=names.node_netns(cfg.name, spec.name),
        vtep_mac=_vtep_mac(cfg.name, spec.name))


def make_nodes(cfg: LabConfig) -> list[Node]:
    return [make_node(cfg, spec, spec.index or i) for i, spec in enumerate(cfg.nodes, start=1)]


@dataclass
class Cluster:
    config: LabConfig
    nodes: list[Node]
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    pods: dict[str, Pod] = field(default_factory=dict)
    rcs: dict[str, ReplicationController] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    # Endpoints and EndpointSlices written by hand (for Services without a selector).
    endpoints: dict[str, Endpoints] = field(default_factory=dict)
    slices: dict[str, EndpointSlice] = field(default_factory=dict)
    # The ingress controller's objects (model/ingress.py); IngressClasses by name.
    ingresses: dict[str, Ingress] = field(default_factory=dict)
    ingress_classes: dict[str, IngressClass] = field(default_factory=dict)
    secrets: dict[str, Secret] = field(default_factory=dict)
    seed: Optional[int] = None
    # Nodes the node controller has found NotReady: tainted, so nothing new lands there.
    not_ready: set[str] = field(default_factory=set)
    # networking.k8s.io/v1 NetworkPolicies (model/netpol.py), enforced by the calico backend and Canal.
    policies: dict[str, NetworkPolicy] = field(default_factory=dict)
    # apps/v1 Deployments, ReplicaSets, DaemonSets, StatefulSets (model/workloads.py),
    # keyed "Kind/namespace/name".
    apps: dict = field(default_factory=dict)

    def __post_init__(self):
        self._rand = random.Random(self.seed)
        self._pod_pools = {n.name: Pool(n.pod_cidr, reserved=[n.vtep_ip, n.gateway], first=2)
                           for n in self.nodes} if self.config.backend != "calico" else {}
        # backend calico: Calico IPAM's blocks instead of a subnet per node; each node
        # starts with one (its pod_cidr).
        self.ipam: Optional[BlockIPAM] = None
        if self.config.backend == "calico":
            self.ipam = BlockIPAM(self.config.cluster_cidr, self.config.calico.block_size)
            for n in self.nodes:
                self.ipam.claim(n.name, n.pod_cidr)
        self.service_alloc = ServiceAllocator(self.config)
        for ns in SYSTEM_NAMESPACES:
            self.namespaces.setdefault(ns, Namespace(Meta(name=ns, namespace="", raw={
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})))

    # ------------------------------------------------------------------ lookups

    @property
    def name(self) -> str:
        return self.config.name

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise NotFoundError(f'node "{name}" not found (nodes: {", ".join(n.name for n in self.nodes)})')

    def pod(self, name: str, namespace: str = "default") -> Pod:
        pod = self.pods.get(f"{namespace}/{name}")
        if pod is None:
            raise NotFoundError(f'pod "{name}" not found in namespace "{namespace}"')
        return pod

    def service(self, name: str, namespace: str = "default") -> Service:
        svc = self.services.get(f"{namespace}/{name}")
        if svc is None:
            raise NotFoundError(f'service "{name}" not found in namespace "{namespace}"')
        return svc

    def pods_on(self, node: str) -> list[Pod]:
        return [p for p in self.pods.values() if p.spec.node_name == node]

    def pod_netns(self, pod: Pod) -> str:
        return names.pod_netns(self.name, pod.meta.namespace, pod.meta.name)

    # ------------------------------------------------------------------ admission

    def admit(self, objects: Iterable[Obj]) -> list[Obj]:
        """Admit objects all or nothing: on any error the cluster is left as it was."""
        objects = list(objects)
        snapshot = self.snapshot()
        added: list[Obj] = []
        try:
            # Namespaces first, then services (so pods started after see their env vars),
            # then controllers and pods, the order `kubectl apply -f dir` would be safe in.
            order = {"Namespace": 0, "Service": 1, "Endpoints": 1, "EndpointSlice": 1,
                     "ReplicationController": 2, "Pod": 3, "Deployment": 2, "ReplicaSet": 2,
                     "DaemonSet": 2, "StatefulSet": 2,
                     "IngressClass": 0, "Secret": 1, "Ingress": 1}
            self._check_duplicates(objects)
            self.service_alloc.hold(o for o in objects if isinstance(o, Service)
                                    and o.meta.key not in self.services)
            for obj in sorted(objects, key=lambda o: order.get(o.kind, 1)):    # NetworkPolicy: 1
                added.extend(self._admit_one(obj))
            self.service_alloc.release_holds()
            # Services are admitted before the controllers and pods they select; check their
            # named targetPorts again now that the whole batch is in.
            for obj in added:
                if isinstance(obj, Service):
                    self.service_alloc._check_target_ports(obj, self)
        except LabError:
            self.restore(snapshot)
            raise
        return added

    def _check_duplicates(self, objects: list[Obj]) -> None:
        seen: dict[tuple, Obj] = {}
        for obj in objects:
            key = (obj.kind, obj.meta.namespace, obj.meta.name)
            if key in seen:
                raise InvalidError(f"duplicate {obj.kind} {obj.meta.key} (also in {seen[key].meta.source})",
                                   file=obj.meta.source, obj=f"{obj.kind}/{obj.meta.name}",
                                   field="metadata.name")
            seen[key] = obj

    def _where(self, obj: Obj, field_path: str) -> dict:
        return {"file": obj.meta.source, "obj": f"{obj.kind}/{obj.meta.name}", "field": field_path}

    def _require_namespace(self, obj: Obj) -> None:
        if obj.meta.namespace not in self.namespaces:
            raise NotFoundError(f'namespaces "{obj.meta.namespace}" not found',
                                **self._where(obj, "metadata.namespace"))

    def _admit_one(self, obj: Obj) -> list[Obj]:
        if isinstance(obj, Namespace):
            if obj.meta.name in self.namespaces and obj.meta.name not in SYSTEM_NAMESPACES:
                raise InvalidError("already exists", **self._where(obj, "metadata.name"))
            self.namespaces[obj.meta.name] = obj
            return [obj]
        if isinstance(obj, IngressClass):
            if obj.meta.name in self.ingress_classes:
                raise InvalidError(f"IngressClass {obj.meta.name} already exists", **self._where(obj, "metadata.name"))
            self.ingress_classes[obj.meta.name] = obj
            return [obj]
        self._require_namespace(obj)
        if obj.kind in ("Deployment", "ReplicaSet", "DaemonSet", "StatefulSet"):
            from . import workloads
            return workloads.admit(self, obj)
        if isinstance(obj, (Ingress, Secret)):
            table = self.ingresses if isinstance(obj, Ingress) else self.secrets
            if obj.meta.key in table:
                raise InvalidError(f"{obj.kind} {obj.meta.key} already exists", **self._where(obj, "metadata.name"))
            obj.created = getattr(obj, "created", 0.0) or time.time()
            table[obj.meta.key] = obj
            return [obj]
        table = {Service: self.services, ReplicationController: self.rcs, Pod: self.pods,
                 Endpoints: self.endpoints, EndpointSlice: self.slices, NetworkPolicy: self.policies}[type(obj)]
        if obj.meta.key in table:
            raise InvalidError(f"{obj.kind} {obj.meta.key} already exists", **self._where(obj, "metadata.name"))
        if isinstance(obj, Service):
            self.service_alloc.admit(obj, self)
            obj.created = obj.created or time.time()
            self.services[obj.meta.key] = obj
            return [obj]
        if isinstance(obj, ReplicationController):
            self.rcs[obj.meta.key] = obj
            return [obj] + self.reconcile_rc(obj)
        if isinstance(obj, NetworkPolicy):
            obj.created = obj.created or time.time()
        if isinstance(obj, (Endpoints, EndpointSlice, NetworkPolicy)):
            table[obj.meta.key] = obj
            return [obj]
        self._place_pod(obj)
        return [obj]

    def _place_pod(self, pod: Pod) -> None:
        # A probe's named port is checked where it is parsed (objects._parse_probe), so the
        # error names the manifest's own object and field, also for pods an RC makes.
        node = self.schedule(pod)
        pod.spec.node_name = node.name
        pool = self._pod_pools.get(node.name)
        if self.ipam is not None:
            self._place_in_block(pod, node)
        elif pod.pod_ip and pool.contains(pod.pod_ip) and pool.is_free(pod.pod_ip):
            pool.take(pod.pod_ip)
        else:
            try:
                pod.pod_ip = pool.allocate()
            except Exhausted:
                lo, hi = pool._range()
                cfg = self.config
                raise InvalidError(
                    f"no free address left in {node.pod_cidr}, {node.name}'s pod subnet: a "
                    f"/{cfg.node_prefix} holds {hi - lo + 1} pods (spec.network.clusterCIDR "
                    f"{cfg.cluster_cidr} and nodeSubnetPrefix {cfg.node_prefix} in "
                    f"{cfg.source or 'lab.yaml'})", **self._where(pod, "")) from None
        pod.uid = pod.uid or str(uuid.UUID(int=self._rand.getrandbits(128), version=4))
        pod.created = pod.created or time.time()
        netns = self.pod_netns(pod)
        if len(netns) > names.NETNS_MAX:
            raise InvalidError("name too long for a network namespace", **self._where(pod, "metadata.name"))
        self.pods[pod.meta.key] = pod

    def _place_in_block(self, pod: Pod, node: Node) -> None:
        if pod.pod_ip and self.ipam.take(node.name, pod.pod_ip):
            return
        try:
            pod.pod_ip = self.ipam.allocate(node.name)
        except Exhausted as exc:
            raise InvalidError(f"{exc} (spec.network.clusterCIDR {self.config.cluster_cidr}, "
                               f"spec.calico.blockSize {self.config.calico.block_size} in "
                               f"{self.config.source or 'lab.yaml'})", **self._where(pod, "")) from None

    def schedule(self, pod: Pod) -> Node:
        """nodeName wins; otherwise the least loaded node whose labels match nodeSelector."""
        if pod.spec.node_name:
            try:
                return self.node(pod.spec.node_name)
            except NotFoundError:
                raise InvalidError("no such node", value=pod.spec.node_name,
                                   **self._where(pod, "spec.nodeName")) from None
        fits = [n for n in self.nodes if n.name not in self.not_ready
                and all(n.labels.get(k) == v for k, v in pod.spec.node_selector.items())]
        if not fits:
            raise InvalidError("0/%d nodes are available: node(s) didn't match Pod's node affinity/selector"
                               % len(self.nodes), value=pod.spec.node_selector,
                               **self._where(pod, "spec.nodeSelector"))
        load = {n.name: 0 for n in fits}
        for p in self.pods.values():
            if p.spec.node_name in load:
                load[p.spec.node_name] += 1
        return min(fits, key=lambda n: (load[n.name], n.index))

    def new_pod_name(self, base: str, namespace: str) -> str:
        while True:
            name = f"{base}-" + "".join(self._rand.choice(_SUFFIX_ALPHABET) for _ in range(5))
            if f"{namespace}/{name}" not in self.pods:
                return name

    def pod_from_template(self, rc: ReplicationController) -> Pod:
        from .objects import _Where, parse_pod_spec
        name = self.new_pod_name(rc.meta.name, rc.meta.namespace)
        template = copy.deepcopy(rc.raw_template)
        md = template.setdefault("metadata", {}) or {}
        md.update({"name": name, "namespace": rc.meta.namespace,
                   "labels": dict(rc.template_labels), "generateName": rc.meta.name + "-",
                   "ownerReferences": [{"apiVersion": getattr(rc, "api_version", "v1"), "kind": rc.kind,
                                        "name": rc.meta.name, "controller": True}]})
        raw = {"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": template.get("spec")}
        spec = parse_pod_spec(raw["spec"], _Where(rc.meta.source, f"{rc.kind}/{rc.meta.name}"),
                              "spec.template.spec")
        meta = Meta(name=name, namespace=rc.meta.namespace, labels=dict(rc.template_labels),
                    source=rc.meta.source, raw=raw)
        return Pod(meta=meta, spec=spec, owner=f"{rc.kind}/{rc.meta.name}")

    def rc_pods(self, rc: ReplicationController) -> list[Pod]:
        """The pods an RC controls: those it owns, and matching orphans (which it adopts).
        A pod owned by another controller is not its own even if the selector matches."""
        mine = f"{rc.kind}/{rc.meta.name}"
        return sorted((p for p in self.pods.values()
                       if p.meta.namespace == rc.meta.namespace and p.owner in ("", mine)
                       and rc.selector.matches(p.meta.labels)),
                      key=lambda p: (p.created, p.meta.name))

    def reconcile_rc(self, rc: ReplicationController) -> list[Pod]:
        """Create pods until the RC has `replicas`; return the new ones (removal: remove_pod)."""
        created = []
        for _ in range(rc.replicas - len(self.rc_pods(rc))):
            pod = self.pod_from_template(rc)
            try:
                self._place_pod(pod)
            except LabError as exc:
                # The user wrote the RC, not this generated pod: point at the template.
                if exc.obj == f"Pod/{pod.meta.name}":
                    exc.obj = f"{rc.kind}/{rc.meta.name}"
                    exc.field = f"spec.template.{exc.field}" if exc.field else "spec.template"
                raise
            created.append(pod)
        return created

    def controllers(self) -> list:
        """The replica controllers that recreate a deleted pod at once: RCs and ReplicaSets."""
        return list(self.rcs.values()) + [o for o in self.apps.values() if o.kind == "ReplicaSet"]

    # ------------------------------------------------------------------ the node set

    def add_node(self, spec: NodeSpec) -> Node:
        """A node joins (spec.index chosen by model/nodes.py): it gets its subnet, or under
        calico its first IPAM block, as a node of lab.yaml does."""
        node = make_node(self.config, spec, spec.index)
        node.created = time.time()
        self.config.nodes.append(spec)
        self.nodes.append(node)
        if self.ipam is not None:
            self.ipam.claim(node.name, node.pod_cidr)
        else:
            self._pod_pools[node.name] = Pool(node.pod_cidr, reserved=[node.vtep_ip, node.gateway], first=2)
        return node

    def remove_node(self, name: str) -> Node:
        """A node leaves; it must have no pods left (drained). Its subnet or blocks are free again."""
        node = self.node(name)
        if self.pods_on(name):
            raise StateError(f"node {name} still has pods")
        self.nodes.remove(node)
        self.config.nodes = [s for s in self.config.nodes if s.name != name]
        self._pod_pools.pop(name, None)
        if self.ipam is not None:
            self.ipam.release_node(name)
        self.not_ready.discard(name)
        return node

    # ------------------------------------------------------------------ removal

    def remove_pod(self, key: str) -> Pod:
        pod = self.pods.pop(key)
        if self.ipam is not None:
            self.ipam.release(pod.pod_ip)
        else:
            self._pod_pools[pod.spec.node_name].release(pod.pod_ip)
        return pod

    def remove_service(self, key: str) -> Service:
        svc = self.services.pop(key)
        self.service_alloc.release(svc)
        return svc

    def _restore_ingress_kind(self, obj, doc: dict) -> None:
        if isinstance(obj, IngressClass):
            self.ingress_classes[obj.meta.name] = obj
        elif isinstance(obj, Secret):
            self.secrets[obj.meta.key] = obj
        else:
            obj.created = float(doc["metadata"].get("annotations", {}).get("netlab/created", 0))
            self.ingresses[obj.meta.key] = obj

    # ------------------------------------------------------------------ state

    def snapshot(self) -> dict:
        return self.to_state()

    def restore(self, state: dict) -> None:
        other = Cluster.from_state(state)
        # state.json does not carry the seed: keep ours, so a seeded cluster stays reproducible
        # after a refused admission.
        other.seed, other._rand = self.seed, self._rand
        self.__dict__.update(other.__dict__)

    def to_state(self) -> dict:
        return {
            "lab": self.config.to_dict(),
            "labSource": self.config.source,
            # Like host-local IPAM's last_reserved_ip: a new pod gets the next address, not
            # the one a deleted pod just gave back.
            "ipam": {node: pool.cursor() for node, pool in self._pod_pools.items()},
            # Calico IPAM: each block's node affinity and where its next allocation starts.
            **({"ipamBlocks": {b: {"node": n, "cursor": self.ipam.cursors()[b]}
                               for b, n in self.ipam.affinity.items()}} if self.ipam else {}),
            "notReadyNodes": sorted(self.not_ready),
            # Each node's number (its subnet and address): a node added later keeps its own.
            "nodeIndexes": {n.name: n.index for n in self.nodes},
            "nodesAdded": {n.name: n.created for n in self.nodes if n.created},
            "objects": [to_manifest(o) for o in self.namespaces.values()]
                       + [to_manifest(o) for o in self.services.values()]
                       + [to_manifest(o) for o in self.rcs.values()]
                       + [to_manifest(o) for o in self.apps.values()]
                       + [to_manifest(o) for o in self.pods.values()]
                       + [to_manifest(o) for o in self.policies.values()]
                       + [to_manifest(o) for o in self.endpoints.values()]
                       + [to_manifest(o) for o in self.slices.values()]
                       + [to_manifest(o) for o in self.ingress_classes.values()]
                       + [to_manifest(o) for o in self.secrets.values()]
                       + [to_manifest(o) for o in self.ingresses.values()],
        }

    @classmethod
    def from_state(cls, state: dict) -> "Cluster":
        cfg = parse_lab(state["lab"], default_name=state["lab"]["metadata"]["name"],
                        file=state.get("labSource") or "lab.yaml")
        for spec in cfg.nodes:
            spec.index = (state.get("nodeIndexes") or {}).get(spec.name, spec.index)
        cluster = cls(config=cfg, nodes=make_nodes(cfg))
        for node in cluster.nodes:
            node.created = float((state.get("nodesAdded") or {}).get(node.name, 0.0))
        if cluster.ipam is not None:
            for block, held in (state.get("ipamBlocks") or {}).items():
                cluster.ipam.claim(held["node"], block)
                cluster.ipam.set_cursor(block, held["cursor"])
        for doc in state["objects"]:
            obj = parse_object(doc, doc.get("metadata", {}).get("annotations", {}).get(
                "netlab/source", "state.json"))
            obj.meta.source = doc["metadata"].get("annotations", {}).get("netlab/source", "")
            if isinstance(obj, Namespace):
                cluster.namespaces[obj.meta.name] = obj
            elif isinstance(obj, Service):
                obj.created = float(doc["metadata"].get("annotations", {}).get("netlab/created", 0))
                cluster.service_alloc.restore(obj)
                cluster.services[obj.meta.key] = obj
            elif isinstance(obj, ReplicationController):
                cluster.rcs[obj.meta.key] = obj
            elif isinstance(obj, NetworkPolicy):
                obj.created = float(doc["metadata"].get("annotations", {}).get("netlab/created", 0))
                cluster.policies[obj.meta.key] = obj
            elif isinstance(obj, Endpoints):
                cluster.endpoints[obj.meta.key] = obj
            elif isinstance(obj, EndpointSlice):
                cluster.slices[obj.meta.key] = obj
            elif isinstance(obj, (Ingress, IngressClass, Secret)):
                cluster._restore_ingress_kind(obj, doc)
            elif obj.kind in ("Deployment", "ReplicaSet", "DaemonSet", "StatefulSet"):
                cluster.apps[obj.ref] = obj
            else:
                obj.spec.node_name = doc["spec"].get("nodeName", "")
                obj.created = float(doc["metadata"].get("annotations", {}).get("netlab/created", 0))
                if cluster.ipam is not None:
                    cluster.ipam.take(obj.spec.node_name, obj.pod_ip)
                else:
                    cluster._pod_pools[obj.spec.node_name].take(obj.pod_ip)
                cluster.pods[obj.meta.key] = obj
        cluster.not_ready = set(state.get("notReadyNodes") or ())
        for node, cursor in (state.get("ipam") or {}).items():
            if node in cluster._pod_pools:
                cluster._pod_pools[node].set_cursor(cursor)
        return cluster


def to_manifest(obj: Obj) -> dict:
    """The object as the API server would return it: the manifest plus what was filled in."""
    doc = copy.deepcopy(obj.meta.raw) or {"apiVersion": "v1", "kind": obj.kind}
    md = doc.setdefault("metadata", {})
    md["name"] = obj.meta.name
    if obj.kind not in ("Namespace", "IngressClass"):
        md["namespace"] = obj.meta.namespace
    ann = md.setdefault("annotations", {}) or {}
    md["annotations"] = ann
    if obj.meta.source:
        ann["netlab/source"] = obj.meta.source
    if obj.kind in ("Deployment", "ReplicaSet", "DaemonSet", "StatefulSet"):
        from .workloads import manifest
        doc = manifest(obj)
        md = doc.setdefault("metadata", {})
        md["name"], md["namespace"] = obj.meta.name, obj.meta.namespace
        if obj.meta.source:
            md.setdefault("annotations", {})["netlab/source"] = obj.meta.source
    elif isinstance(obj, Pod):
        md["uid"] = obj.uid
        ann["netlab/created"] = repr(obj.created)
        doc.setdefault("spec", {})["nodeName"] = obj.spec.node_name
        doc.setdefault("status", {})["podIP"] = obj.pod_ip
    elif isinstance(obj, Service):
        from .services import fill_service_manifest
        ann["netlab/created"] = repr(obj.created)
        fill_service_manifest(obj, doc)
    elif isinstance(obj, NetworkPolicy):
        ann["netlab/created"] = repr(obj.created)
    elif isinstance(obj, Ingress):
        ann["netlab/created"] = repr(obj.created)     # the oldest Ingress wins a shared path
    elif isinstance(obj, ReplicationController):
        # `scale` changes the count, not the manifest as written: the count is what persists.
        doc.setdefault("spec", {})["replicas"] = obj.replicas
    return doc
