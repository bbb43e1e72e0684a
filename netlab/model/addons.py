"""The cluster add-ons every lab gets, as manifests, the way kubeadm installs them.

kube-dns as the documents describe it (v1.4+): one pod with kubedns (records in memory,
port 10053), dnsmasq in front of it as a cache on port 53 (--server=127.0.0.1#10053), and
a health endpoint; the Service kube-dns at the lab's DNS address (10.96.0.10).
"""
from __future__ import annotations

from .config import LabConfig

ADDON_SOURCE = "<addon:kube-dns>"
DNS_LABELS = {"k8s-app": "kube-dns"}


def records_path(lab: str) -> str:
    """Where the lab writes its DNS records for kubedns to serve (re-read when it changes).

    A directory of its own: the kube-dns pod sees it read-only, and nothing else of the
    lab's state (not the agent's socket, not the logs)."""
    from ..state import lab_dir
    return str(lab_dir(lab) / "dns" / "records.json")


def kube_dns(cfg: LabConfig) -> list[dict]:
    rc = {
        "apiVersion": "v1", "kind": "ReplicationController",
        "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": dict(DNS_LABELS)},
        "spec": {"replicas": 1, "selector": dict(DNS_LABELS), "template": {
            "metadata": {"labels": dict(DNS_LABELS)},
            "spec": {"dnsPolicy": "Default", "containers": [
                {"name": "kubedns", "image": "registry.k8s.io/dns/k8s-dns-kube-dns:1.22.28",
                 "args": ["--domain", cfg.dns_domain, "--records", records_path(cfg.name)],
                 "ports": [{"containerPort": 10053, "name": "dns-local", "protocol": "UDP"},
                           {"containerPort": 10053, "name": "dns-tcp-local", "protocol": "TCP"},
                           {"containerPort": 8081, "name": "healthz", "protocol": "TCP"}],
                 "readinessProbe": {"httpGet": {"path": "/readiness", "port": 8081},
                                    "periodSeconds": 10}},
                {"name": "dnsmasq", "image": "registry.k8s.io/dns/k8s-dns-dnsmasq-nanny:1.22.28",
                 "ports": [{"containerPort": 53, "name": "dns", "protocol": "UDP"},
                           {"containerPort": 53, "name": "dns-tcp", "protocol": "TCP"}]},
            ]}}},
    }
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system",
                     "labels": {**DNS_LABELS, "kubernetes.io/name": "KubeDNS"}},
        "spec": {"selector": dict(DNS_LABELS), "clusterIP": cfg.dns_ip, "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]},
    }
    return [rc, service]


# ---------------------------------------------------------------------- ingress-nginx

INGRESS_SOURCE = "<addon:ingress-nginx>"
INGRESS_NAMESPACE = "ingress-nginx"
INGRESS_LABELS = {"app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/component": "controller"}
INGRESS_SERVICE = "ingress-nginx-controller"
INGRESS_CONTAINER = "controller"
INGRESS_CLASS = "nginx"
INGRESS_NODE_PORTS = {"http": 30080, "https": 30443}
INGRESS_HEALTH_PORT = 10254          # the controller's /healthz, as ingress-nginx serves it


def ingress_dir(lab: str) -> str:
    """The controller's rendered configuration (nginx.conf, certificates): the pod sees this
    directory read-only at the same path, and nothing else of the lab's state."""
    from ..state import lab_dir
    return str(lab_dir(lab) / "ingress")


def ingress_conf(lab: str) -> str:
    return ingress_dir(lab) + "/nginx.conf"


def wants_ingress(cfg: LabConfig, objects, present: bool = False) -> bool:
    """Whether the lab gets (or now needs) the ingress-nginx add-on: `spec.ingress: true`, or
    unset and an Ingress is among the objects, unless it is there already."""
    if present or cfg.ingress is False:
        return False
    return cfg.ingress is True or any(getattr(o, "kind", "") == "Ingress" for o in objects)


def ingress_nginx(cfg: LabConfig, namespace_exists: bool = False) -> list[dict]:
    """ingress-nginx's bare-metal install, as netlab runs it: the real nginx in a pod of
    namespace ingress-nginx, its configuration rendered by the lab's agent (which plays the
    controller's Go part), exposed by a LoadBalancer Service (so also on every node's
    NodePorts 30080 and 30443), and the IngressClass nginx, the default class."""
    ns = {"apiVersion": "v1", "kind": "Namespace",
          "metadata": {"name": INGRESS_NAMESPACE, "labels": {"app.kubernetes.io/name": "ingress-nginx"}}}
    ingress_class = {
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": INGRESS_CLASS, "labels": dict(INGRESS_LABELS),
                     "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": "k8s.io/ingress-nginx"}}
    rc = {
        "apiVersion": "v1", "kind": "ReplicationController",
        "metadata": {"name": INGRESS_SERVICE, "namespace": INGRESS_NAMESPACE, "labels": dict(INGRESS_LABELS)},
        "spec": {"replicas": 1, "selector": dict(INGRESS_LABELS), "template": {
            "metadata": {"labels": dict(INGRESS_LABELS)},
            "spec": {"containers": [
                {"name": INGRESS_CONTAINER, "image": "registry.k8s.io/ingress-nginx/controller:v1.10.1",
                 "command": ["/usr/sbin/nginx", "-c", ingress_conf(cfg.name), "-e", "stderr"],
                 "ports": [{"containerPort": 80, "name": "http", "protocol": "TCP"},
                           {"containerPort": 443, "name": "https", "protocol": "TCP"},
                           {"containerPort": INGRESS_HEALTH_PORT, "name": "healthz", "protocol": "TCP"}],
                 "readinessProbe": {"httpGet": {"path": "/healthz", "port": INGRESS_HEALTH_PORT},
                                    "periodSeconds": 2},
                 "livenessProbe": {"httpGet": {"path": "/healthz", "port": INGRESS_HEALTH_PORT},
                                   "periodSeconds": 10, "failureThreshold": 5}},
            ]}}},
    }
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": INGRESS_SERVICE, "namespace": INGRESS_NAMESPACE, "labels": dict(INGRESS_LABELS)},
        "spec": {"type": "LoadBalancer", "selector": dict(INGRESS_LABELS), "ports": [
            {"name": name, "port": port, "targetPort": name, "protocol": "TCP",
             "nodePort": INGRESS_NODE_PORTS[name]} for name, port in (("http", 80), ("https", 443))]},
    }
    return ([] if namespace_exists else [ns]) + [ingress_class, service, rc]


KUBERNETES_SOURCE = "<addon:kubernetes>"
API_PORT = 6443          # the in-cluster API endpoint on each node (runtime/kubeapi.py --in-cluster)


def kubernetes_service(cfg: LabConfig, nodes) -> list[dict]:
    """The master Service every cluster has: default/kubernetes at the first address of the
    service range, port 443 ("https"), without a selector; its Endpoints are the nodes'
    addresses on port 6443, where the lab's API answers (anonymous reads) in each node."""
    import ipaddress
    first = str(ipaddress.ip_network(cfg.service_cidr).network_address + 1)
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": first, "type": "ClusterIP", "sessionAffinity": "None",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": API_PORT}]},
    }
    endpoints = {
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": n.internal_ip, "nodeName": n.name} for n in nodes],
                     "ports": [{"name": "https", "port": API_PORT, "protocol": "TCP"}]}],
    }
    return [service, endpoints]
