"""Cluster DNS records and pods' resolv.conf and /etc/hosts, per the Kubernetes DNS specification.

The spec is kubernetes/dns docs/specification.md (schema 1.0.1). Where it leaves a choice
open, netlab does what CoreDNS's kubernetes plugin does:

- An endpoint's _hostname_ is the pod's spec.hostname when its spec.subdomain names the
  service (what the endpoints controller publishes), otherwise the pod IP with dashes
  (10-244-1-5), CoreDNS's endpointHostname().
- `<hostname>.<svc>.<ns>.svc.<zone>` exists for ready endpoints of every selector service,
  not only headless ones (CoreDNS answers these too; the spec allows extensions), so that
  every PTR below resolves forward again.
- PTR: a ClusterIP names its service; a ready endpoint's IP names
  `<hostname>.<svc>.<ns>.svc.<zone>`, once per service it backs. A pod that backs no
  service has no PTR (NXDOMAIN), as with CoreDNS: `<a-b-c-d>.<ns>.pod.<zone>` is
  forward-only.
- Pod A records `<a-b-c-d>.<ns>.pod.<zone>` follow the lab's `dnsPods` mode, CoreDNS's `pods`
  option. insecure (the default, as kube-dns and kubeadm's CoreDNS answer): any address under a
  namespace that exists, synthesised by the server from the name, so they are not listed here
  ("pods": "insecure" tells the server). verified: listed here for pods that exist in that
  namespace, ready or not. disabled: none.
- SRV: priority 0, weight floor(100 / records in the set), CoreDNS's arithmetic. A headless
  service's SRV carries the endpoint's port (clients connect to the pod directly).
- A Service without a selector is answered from its hand-written Endpoints/EndpointSlices
  (an address that is no pod is named by its dashed IP). An ExternalName Service is a CNAME
  to its external name (spec 2.5) and nothing else; the server follows the chain, out of
  the zone through its pod's resolver, as kube-dns and CoreDNS do.

The result is a plain JSON-serialisable dict (see build_records) that the kube-dns server
(netlab.runtime.kubedns) loads; names are lower case, absolute, without the trailing dot.
"""
from __future__ import annotations

import ipaddress
import json
import zlib
from typing import TYPE_CHECKING, Optional

from .names import check_dns_label
from .objects import Pod, Service
from .services import service_endpoints

if TYPE_CHECKING:
    from .cluster import Cluster

SCHEMA_VERSION = "1.0.1"     # the spec version these records implement (dns-version TXT)
DEFAULT_TTL = 30             # kube-dns's default TTL; long enough for dnsmasq's cache to matter
NDOTS = 5                    # kubelet's ClusterFirst resolv.conf option


def dashed(ip: str) -> str:
    return ip.replace(".", "-")


def reverse_name(ip: str) -> str:
    return ipaddress.ip_address(ip).reverse_pointer


def service_fqdn(svc: Service, zone: str) -> str:
    return f"{svc.meta.name}.{svc.meta.namespace}.svc.{zone}"


def pod_fqdn(pod: Pod, zone: str) -> str:
    return f"{dashed(pod.pod_ip)}.{pod.meta.namespace}.pod.{zone}"


def endpoint_hostname(pod: Pod, svc: Service) -> str:
    """The endpoint's hostname: spec.hostname if the pod's subdomain is this service."""
    spec = pod.spec
    if (spec.hostname and spec.subdomain == svc.meta.name and pod.meta.namespace == svc.meta.namespace
            and check_dns_label(spec.hostname) is None):
        return spec.hostname.lower()
    return dashed(pod.pod_ip)


def _srv(port: int, target: str, count: int) -> dict:
    return {"priority": 0, "weight": 100 // count, "port": port, "target": target}


def _ip_key(ip: str) -> int:
    return int(ipaddress.ip_address(ip))


def build_records(cluster: "Cluster", ready: Optional[set[str]] = None, ttl: int = DEFAULT_TTL) -> dict:
    """All DNS records of the cluster.

    `ready` is the set of ready pod keys ("ns/name"), as for endpoints_for; None means every
    pod with an IP is ready. The dict:

        {"zone": "cluster.local", "ttl": 30, "serial": <crc32 of the content>,
         "dns_ip": "10.96.0.10", "reverse": ["10.96.0.0/12", "10.244.0.0/16"],
         "namespaces": ["default", ...], "pods": "insecure",
         "A":   {"redis-master.default.svc.cluster.local": ["10.96.0.2"], ...},
         "SRV": {"_http._tcp.web.default.svc.cluster.local":
                     [{"priority": 0, "weight": 100, "port": 80, "target": "web.default.svc.cluster.local"}]},
         "PTR": {"2.0.96.10.in-addr.arpa": ["redis-master.default.svc.cluster.local"]},
         "CNAME": {"ext.default.svc.cluster.local": "www.example.net"},     # ExternalName
         "TXT": {"dns-version.cluster.local": ["1.0.1"]}}

    `reverse` lists the CIDRs whose in-addr.arpa names the server is authoritative for.
    """
    cfg = cluster.config
    zone = cfg.dns_domain.lower().strip(".")
    a: dict[str, set[str]] = {f"ns.dns.{zone}": {cfg.dns_ip}}
    srv: dict[str, list[dict]] = {}
    ptr: dict[str, set[str]] = {}
    cname: dict[str, str] = {}
    pods = list(cluster.pods.values())
    by_key = {p.meta.key: p for p in pods}

    if cfg.dns_pods == "verified":
        for pod in pods:
            if pod.pod_ip:
                a.setdefault(pod_fqdn(pod, zone), set()).add(pod.pod_ip)

    for svc in sorted(cluster.services.values(), key=lambda s: s.meta.key):
        fqdn = service_fqdn(svc, zone)
        if svc.type == "ExternalName":
            # Spec 2.5: a CNAME to the external name, and nothing else (no A, SRV or PTR).
            cname[fqdn] = svc.external_name.lower().rstrip(".")
            continue
        # The selected pods, or a selectorless Service's hand-written Endpoints.
        eps = service_endpoints(cluster, svc, ready)
        # Every ready endpoint address once, whatever ports it resolved; a pod's address is
        # named by its hostname (see endpoint_hostname), any other by its dashed IP.
        backing = {ep.ip: ep.pod for port_eps in eps.values() for ep in port_eps}
        names = {ip: f"{endpoint_hostname(by_key[key], svc) if key in by_key else dashed(ip)}.{fqdn}"
                 for ip, key in backing.items()}
        for ip, name in names.items():
            a.setdefault(name, set()).add(ip)
            ptr.setdefault(reverse_name(ip), set()).add(name)
        if svc.headless:
            if backing:
                a[fqdn] = set(backing)
        else:
            a[fqdn] = {svc.cluster_ip}
            ptr.setdefault(reverse_name(svc.cluster_ip), set()).add(fqdn)
        for port in svc.ports:
            if not port.name:
                continue   # unnamed ports have no SRV record
            owner = f"_{port.name.lower()}._{port.protocol.lower()}.{fqdn}"
            if svc.headless:
                targets = sorted(((names[ep.ip], ep.port) for ep in eps[port.name]))
                if targets:
                    srv[owner] = [_srv(p, t, len(targets)) for t, p in targets]
            else:
                srv[owner] = [_srv(port.port, fqdn, 1)]

    records = {
        "zone": zone, "ttl": ttl, "dns_ip": cfg.dns_ip,
        "reverse": [cfg.service_cidr, cfg.cluster_cidr],
        "namespaces": sorted(cluster.namespaces),
        "pods": cfg.dns_pods,
        "A": {name: sorted(ips, key=_ip_key) for name, ips in sorted(a.items())},
        "SRV": dict(sorted(srv.items())),
        "PTR": {name: sorted(targets) for name, targets in sorted(ptr.items())},
        "CNAME": dict(sorted(cname.items())),
        "TXT": {f"dns-version.{zone}": [SCHEMA_VERSION]},
    }
    # The serial names the content, so equal clusters give byte-equal files.
    records["serial"] = zlib.crc32(json.dumps(records, sort_keys=True).encode())
    return records


def hosts_file(cluster: "Cluster", pod: Pod) -> str:
    """The pod's /etc/hosts as kubelet writes it (pkg/kubelet/kubelet_pods.go,
    managedHostsFileContent and GeneratePodHostNameAndDomain).

    A pod with spec.subdomain gets the domain `<subdomain>.<ns>.svc.<zone>`, and its own line
    names the fully qualified name first, so `hostname -f` (getaddrinfo's canonical name for
    the hostname) prints it: `10.244.1.5  db-0.db.shop.svc.cluster.local  db-0`."""
    zone = cluster.config.dns_domain.strip(".")
    hostname = pod.hostname
    own = f"{pod.pod_ip}\t{hostname}\n"
    if pod.spec.subdomain:
        own = f"{pod.pod_ip}\t{hostname}.{pod.spec.subdomain}.{pod.meta.namespace}.svc.{zone}\t{hostname}\n"
    return ("# Kubernetes-managed hosts file.\n"
            "127.0.0.1\tlocalhost\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\n"
            "fe00::0\tip6-localnet\n"
            "fe00::0\tip6-mcastprefix\n"
            "fe00::1\tip6-allnodes\n"
            "fe00::2\tip6-allrouters\n" + own)


def resolv_conf(cluster: "Cluster", pod: Pod, upstream: Optional[str] = None) -> str:
    """The pod's /etc/resolv.conf, in kubelet's order (nameserver, search, options).

    ClusterFirst (and ClusterFirstWithHostNet, the same for a pod without host networking)
    points at the cluster DNS service. Default inherits the node's resolver, which in a lab
    is the simulated internet's resolver, `upstream`.
    """
    cfg = cluster.config
    zone = cfg.dns_domain.strip(".")
    policy = pod.spec.dns_policy
    head = f"# netlab: pod {pod.meta.key}, dnsPolicy {policy}\n"
    if policy in ("ClusterFirst", "ClusterFirstWithHostNet"):
        ns = pod.meta.namespace
        return (head + f"nameserver {cfg.dns_ip}\n"
                f"search {ns}.svc.{zone} svc.{zone} {zone}\n"
                f"options ndots:{NDOTS}\n")
    if policy == "Default":
        if upstream:
            return head + f"nameserver {upstream}\n"
        return head + "# no nameserver: this lab has no internet resolver for the node to inherit\n"
    return head + "# no nameserver: dnsPolicy None takes its servers from spec.dnsConfig, which netlab does not support\n"


def pod_etc_files(cluster: "Cluster", pod: Pod) -> dict[str, bytes]:
    """What the pod sees as /etc/hosts and /etc/resolv.conf, as the kubelet writes them (its
    holder writes them into the pod's own /run and binds them over /etc's)."""
    from .internet import host_ip
    # dnsPolicy Default inherits the node's resolver: in a lab, the simulated internet's DNS.
    return {"hosts": hosts_file(cluster, pod).encode(),
            "resolv.conf": resolv_conf(cluster, pod, host_ip(cluster)).encode()}
