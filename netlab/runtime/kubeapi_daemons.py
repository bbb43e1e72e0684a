"""The lab's API front-ends (runtime/kubeapi.py) as daemons its agent runs and restarts.

- apiserver/host: the loopback listener for kubectl, in the host's network namespace
  (DaemonSpec.netns ""): the one exception to "nothing in the host's namespace" (DESIGN.md).
- apiserver/<node>: port 6443 on each node's address, in the node's namespace: the endpoints
  of the `kubernetes` Service (10.96.0.1:443), answering anonymous reads.

Importing this module registers the provider (kept apart from kubeapi.py so that reading
the daemon list does not import ssl and http.server). Each is forked from the agent, which
has imported netlab already: a new interpreter per listener cost a lab of three nodes about
a second of CPU at `up`, while its pods were starting.
"""
from __future__ import annotations

from .daemons import DaemonSpec, provider

HOST = "host"          # the pseudo-node the loopback listener is reported under


def cert_names(cluster) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The addresses and DNS names the API server's certificate names (runtime/pki.py)."""
    import ipaddress
    first = str(ipaddress.ip_network(cluster.config.service_cidr).network_address + 1)
    ips = ("127.0.0.1", first, *(n.internal_ip for n in cluster.nodes))
    names = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
             f"kubernetes.default.svc.{cluster.config.dns_domain}")
    return ips, names


@provider
def apiservers(cluster) -> list[DaemonSpec]:
    from ..kernel import netns
    entry = "netlab.runtime.kubeapi:serve_forked"
    names = cert_names(cluster)
    specs = [DaemonSpec("apiserver", HOST, "", entry, (cluster.name, True, "", names))]
    specs += [DaemonSpec("apiserver", n.name, n.netns, entry, (cluster.name, False, n.internal_ip, names))
              for n in cluster.nodes if netns.is_netns(n.netns)]
    return specs
