"""Does the kernel hold exactly what the lab's state describes? Orphans and gaps, by kind.

Read-only: namespaces, each node's pod veths and kube-proxy chains are compared with what
state.json (and the agent's readiness) say should exist. Used by the concurrency and
node tests and by bench/bench_hammer.py (no command shows it yet).
"""
from __future__ import annotations

import re
from typing import Optional

from .kernel import iptables, netns
from .model import names
from .model.cluster import Cluster
from .plan import kubeproxy

_PER_SERVICE = re.compile(r"^:(KUBE-(?:SVC|SEP|SVL|EXT|FW|XLB)-[A-Z0-9]+) ")


def audit(cluster: Cluster, ready: Optional[set[str]]) -> dict[str, list[str]]:
    """{"orphan namespaces": [...], "missing namespaces": [...], "orphan veths": [...],
    "missing veths": [...], "stale chains": [...], "missing chains": [...]}; all empty = agree."""
    from .dataplane import endpoints
    lab = cluster.name
    expected = {n.netns for n in cluster.nodes} | {cluster.pod_netns(p) for p in cluster.pods.values()} | {
        names.underlay_netns(lab), names.client_netns(lab), names.internet_netns(lab)}
    present = set(netns.list_names(f"{names.PREFIX}{lab}."))
    found = {"orphan namespaces": sorted(present - expected), "missing namespaces": sorted(expected - present),
             "orphan veths": [], "missing veths": [], "stale chains": [], "missing chains": []}
    eps = endpoints(cluster, ready)
    for node in cluster.nodes:
        if node.netns not in present:
            continue
        want = {names.host_veth(p.meta.namespace, p.meta.name, calico=cluster.config.calico_pods)
                for p in cluster.pods_on(node.name)}
        handle = netns.open_netlink(node.netns)
        try:
            have = {link.get_attr("IFLA_IFNAME") for link in handle.get_links()}
        finally:
            handle.close()
        have = {name for name in have if name.startswith(("veth", "cali"))}
        found["orphan veths"] += [f"{node.name}/{v}" for v in sorted(have - want)]
        found["missing veths"] += [f"{node.name}/{v}" for v in sorted(want - have)]
        if cluster.config.proxy_mode != "iptables":
            continue
        chains = {m.group(1) for line in iptables.save(node.netns, "nat").splitlines()
                  if (m := _PER_SERVICE.match(line))}
        wanted = {c for c in kubeproxy.node_chains(cluster, node, eps) if _PER_SERVICE.match(f":{c} ")}
        found["stale chains"] += [f"{node.name}/{c}" for c in sorted(chains - wanted)]
        found["missing chains"] += [f"{node.name}/{c}" for c in sorted(wanted - chains)]
    return found
