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
