"""dnsmasq as kube-dns's cache: the argv that runs Debian's dnsmasq the way the kube-dns
pod runs its dnsmasq container (cluster/addons/dns/kube-dns: `-k --cache-size=1000
--no-negcache --log-facility=- --server=/cluster.local/127.0.0.1#10053
--server=/in-addr.arpa/127.0.0.1#10053`).

Differences from that container, each for the lab's isolation: the host's dnsmasq.conf,
/etc/hosts and /etc/resolv.conf are ignored (the pod shares the host's filesystem, and
its resolver would be the real network's); dnsmasq binds only the addresses it is given
rather than every address of the namespace; names outside the cluster go to `forward_to`
(the simulated internet's resolver) or nowhere (REFUSED). --dns-loop-detect is left out:
no upstream here can send queries back.
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
                 forward_to: Optional[str] = None, binary: Optional[str] = None) -> list[str]:
    """argv for a foreground dnsmasq answering on `listen`:`port`.

    Names in `zone` and `reverse_zones` go to kubedns at upstream_host#upstream_port.
    pidfile None writes none (the supervisor holds the process).
    """
    addresses = [listen] if isinstance(listen, str) else list(listen)
    kubedns = f"{upstream_host}#{upstream_port}"
    argv = [
        binary or find_dnsmasq() or DNSMASQ,
        "--keep-in-foreground",
        "--conf-file=/dev/null",          # not the host's /etc/dnsmasq.conf
        "--no-resolv",                    # not the host's /etc/resolv.conf
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
