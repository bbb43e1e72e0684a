"""dnsmasq as kube-dns's cache: the argv that runs Debian's dnsmasq the way the kube-dns
pod runs its dnsmasq container (cluster/addons/dns/kube-dns: `-k --cache-size=1000
--no-negcache --log-facility=- --server=/cluster.local/127.0.0.1#10053
--server=/in-addr.arpa/127.0.0.1#10053`).

Like that container it forwards names outside the cluster to the nameserver of its pod's
/etc/resolv.conf, which dnsPolicy Default makes the node's resolver: in a lab, the
simulated internet's DNS server (netlab.model.internet). Differences, each for the lab's
isolation: the host's dnsmasq.conf and /etc/hosts are ignored (the pod shares the host's
filesystem), and so is the host's /etc/resolv.conf (the real network's resolver) unless a
pod's own is named; dnsmasq binds only the addresses it is given rather than every address
of the namespace. --dns-loop-detect is left out: no upstream here can send queries back.
"""
from __future__ import annotations

import os
import shutil
from typing import Optional, Sequence, Union

DNSMASQ = "/usr/sbin/dnsmasq"   # Debian's path; /usr/sbin is not on every user's PATH


def find_dnsmasq() -> Optional[str]:
    if os.access(DNSMASQ, os.X_OK):
        return DNSMASQ
    return shutil.which("dnsmasq")


def dnsmasq_missing() -> Optional[str]:
    """None if dnsmasq can run, else a one-line error saying how to get it."""
    if find_dnsmasq():
        return None
    return ("dnsmasq is not installed (kube-dns's cache in front of kubedns); "
            "install it with: apt-get install dnsmasq-base")


def dnsmasq_argv(listen: Union[str, Sequence[str]], upstream_port: int = 10053, cache_size: int = 1000,
                 pidfile: Optional[str] = None, *, port: int = 53, zone: str = "cluster.local",
                 upstream_host: str = "127.0.0.1", reverse_zones: Sequence[str] = ("in-addr.arpa",),
                 forward_to: Optional[str] = None, resolv_file: Optional[str] = None,
                 binary: Optional[str] = None) -> list[str]:
    """argv for a foreground dnsmasq answering on `listen`:`port`.

    Names in `zone` and `reverse_zones` go to kubedns at upstream_host#upstream_port; other
    names to `forward_to`, or to the nameservers of `resolv_file` (the kube-dns container
    reads its pod's own /etc/resolv.conf, which dnsPolicy Default makes the node's resolver,
    as the real dnsmasq container does), or nowhere (REFUSED).
    pidfile None writes none (the supervisor holds the process).
    """
    addresses = [listen] if isinstance(listen, str) else list(listen)
    kubedns = f"{upstream_host}#{upstream_port}"
    argv = [
        binary or find_dnsmasq() or DNSMASQ,
        "--keep-in-foreground",
        "--conf-file=/dev/null",          # not the host's /etc/dnsmasq.conf
        f"--resolv-file={resolv_file}" if resolv_file else "--no-resolv",   # never the host's
        "--no-hosts",                     # not the host's /etc/hosts
        "--bind-interfaces",              # only the addresses below, never a wildcard socket
        *(f"--listen-address={a}" for a in addresses),
        f"--port={port}",
        f"--cache-size={cache_size}",
        "--no-negcache",                  # a name that appears is seen at once, as in kube-dns
        "--log-facility=-",               # stderr, for the supervisor's log
        f"--pid-file={pidfile or ''}",    # an empty value disables the pid file
        f"--server=/{zone.strip('.')}/{kubedns}",
        *(f"--server=/{z.strip('.')}/{kubedns}" for z in reverse_zones),
    ]
    if forward_to:
        argv.append(f"--server={forward_to}")
    return argv


def internet_dns_argv(address: str, records: dict, *, domain: str, nameserver: str, hostmaster: str,
                      reverse: str, ttl: int = 300, port: int = 53, binary: Optional[str] = None) -> list[str]:
    """argv for the simulated internet's DNS server: dnsmasq authoritative for `domain`
    (its auth-zone mode: SOA, NS, the aa flag, NXDOMAIN with the SOA for names it lacks) and
    for the reverse names of `reverse` (a CIDR), answering on `address`:`port` only.

    `records` is {"A": {name: ip}, "CNAME": {alias: target}} (netlab.model.internet.zone).
    It never recurses and has no upstream: every other name is REFUSED, so nothing leaves
    the lab."""
    argv = [
        binary or find_dnsmasq() or DNSMASQ,
        "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
        "--bind-interfaces", f"--listen-address={address}", f"--port={port}",
        "--log-facility=-", "--pid-file=",
        f"--auth-server={nameserver},{address}",
        f"--auth-zone={domain},{reverse}",
        f"--auth-soa=1,{hostmaster},1200,180,1209600,{ttl}",
        f"--auth-ttl={ttl}",
    ]
    argv += [f"--host-record={name},{ip}" for name, ip in records.get("A", {}).items()]
    argv += [f"--cname={alias},{target}" for alias, target in records.get("CNAME", {}).items()]
    return argv
