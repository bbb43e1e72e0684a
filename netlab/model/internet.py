"""The simulated internet's names: a small zone under a documentation domain (RFC 6761 keeps
example.net for examples), served by a real DNS server on the internet host.

A real cluster's DNS forwards names outside the cluster zone upstream (kube-dns's dnsmasq
with `--server`, CoreDNS's `forward . /etc/resolv.conf`), and kubelet gives dnsPolicy Default
pods the node's resolver. In a lab the node's resolver is this server, on the internet host
(203.0.113.10 by default), so `curl http://www.example.net/` from a pod resolves through
kube-dns, goes out through the node's SNAT and reaches the internet host's web server.
Nothing leaves the lab: names outside the zone are REFUSED there.
"""
from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .cluster import Cluster

DOMAIN = "example.net"
NAMESERVER = f"ns1.{DOMAIN}"
HOSTMASTER = f"hostmaster.{DOMAIN}"
TTL = 300
WEB_PORT = 80


def host_ip(cluster: "Cluster") -> str:
    """The internet host (203.0.113.10 by default): its DNS server and its web server."""
    return str(ipaddress.ip_network(cluster.config.internet_cidr).network_address + 10)


def zone(cluster: "Cluster") -> dict:
    """The zone's records: {"A": {name: ip}, "CNAME": {alias: target}}.

    www.example.net is the internet host; web.example.net is an alias of it, so a chain of
    names (an ExternalName Service, a CNAME) can be followed to the end."""
    ip = host_ip(cluster)
    return {"A": {DOMAIN: ip, f"www.{DOMAIN}": ip, NAMESERVER: ip},
            "CNAME": {f"web.{DOMAIN}": f"www.{DOMAIN}"}}
