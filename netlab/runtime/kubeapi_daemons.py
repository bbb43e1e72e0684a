"""The lab's API front-ends (runtime/kubeapi.py) as daemons its agent runs and restarts.

- apiserver/host: the loopback listener for kubectl, in the host's network namespace
  (DaemonSpec.netns ""): the one exception to "nothing in the host's namespace" (DESIGN.md).
- apiserver/<node>: port 6443 on each node's address, in the node's namespace: the endpoints
  of the `kubernetes` Service (10.96.0.1:443), answering anonymous reads.

Importing this module registers the provider (kept apart from kubeapi.py so that reading
the daemon list does not import ssl and http.server).
"""
from __future__ import annotations

import sys

from .daemons import DaemonSpec, provider

HOST = "host"          # the pseudo-node the loopback listener is reported under


@provider
def apiservers(cluster) -> list[DaemonSpec]:
    from ..kernel import netns
    base = (sys.executable, "-m", "netlab.runtime.kubeapi", "--lab", cluster.name)
    specs = [DaemonSpec("apiserver", HOST, "", argv=base + ("--loopback",))]
    specs += [DaemonSpec("apiserver", n.name, n.netns, argv=base + ("--in-cluster", n.internal_ip))
              for n in cluster.nodes if netns.is_netns(n.netns)]
    return specs
