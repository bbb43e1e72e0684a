"""The simulated internet host's servers, run and restarted by the lab's agent as node daemons
on the pseudo-node "internet" (its namespace is the internet host):

- dns: the real Debian dnsmasq, authoritative for the documentation zone of
  netlab.model.internet (www.example.net -> 203.0.113.10); kube-dns forwards outside names
  to it, and dnsPolicy Default pods use it directly.
- web: netlab's netexec test server on port 80 of the same address, so that
  `curl http://www.example.net/` from a pod works (/clientip shows the node's SNAT address).

Importing this module registers the provider.
"""
from __future__ import annotations

from ..model import internet, names
from .daemons import DaemonSpec, provider

NODE = "internet"               # the pseudo-node the daemons are reported under


@provider
def internet_servers(cluster) -> list[DaemonSpec]:
    """Wanted once the internet namespace exists (`up` builds it while the agent already runs)."""
    from ..kernel import netns
    from .dnsmasq import internet_dns_argv
    from .workloads import BUILTIN
    ns = names.internet_netns(cluster.name)
    if not netns.is_netns(ns):
        return []
    ip = internet.host_ip(cluster)
    dns = internet_dns_argv(ip, internet.zone(cluster), domain=internet.DOMAIN, nameserver=internet.NAMESERVER,
                            hostmaster=internet.HOSTMASTER, reverse=cluster.config.internet_cidr,
                            ttl=internet.TTL)
    web = (BUILTIN, "netexec", "--address", ip, "--http-port", str(internet.WEB_PORT), "--udp-port", "-1")
    return [DaemonSpec("dns", NODE, ns, argv=tuple(dns)),
            DaemonSpec("web", NODE, ns, "netlab.runtime.workloads:run_builtin", (web,))]
