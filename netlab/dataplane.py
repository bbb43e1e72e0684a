"""One sync pass over the lab's services: kube-proxy's rules on every node, kube-dns's records.

Each node's chain list is remembered in /run/netlab/<lab>/kubeproxy.json, so the next pass
deletes chains whose service or endpoint is gone, as kube-proxy does with its own memory.
"""
from __future__ import annotations

import os
from typing import Optional

from . import state
from .kernel import iptables
from .model.cluster import Cluster
from .model.services import service_endpoints
from .plan import kubeproxy


CLEANUP_KEY = "#lastCleanup"     # not a node name: those are DNS labels


def _chains_file(lab: str):
    return state.lab_dir(lab) / "kubeproxy.json"


def endpoints(cluster: Cluster, ready: Optional[set[str]] = None) -> dict:
    """Endpoints of every service: {"ns/name": {port name: [Endpoint]}}."""
    return {key: service_endpoints(cluster, svc, ready) for key, svc in cluster.services.items()}


def proxy_config_file(lab: str, node: str):
    return state.lab_dir(lab) / f"userspace-{node}.json"


def sync(cluster: Cluster, ready: Optional[set[str]] = None, proxies: Optional[dict] = None,
         pids_of=None) -> None:
    """Bring every node's kube-proxy in line with the cluster's services and endpoints.

    `proxies` (node -> PID, userspace mode): the agent's running proxies, told to reload.
    `pids_of` (the agent's Agent.pids_of): finds the ingress controller's nginx to reload."""
    import time
    previous = state.read_json(_chains_file(cluster.name)) or {}
    eps = endpoints(cluster, ready)
    owned = {}
    # Large cluster mode: stale chains go at most once per sync period (kube-proxy's
    # lastIPTablesCleanup); in between they stay, remembered for the next cleanup.
    last_cleanup = previous.pop(CLEANUP_KEY, 0.0)
    cleanup = (cluster.config.proxy_mode == "userspace" or not kubeproxy.large_cluster(cluster, eps)
               or time.time() - last_cleanup > kubeproxy.SYNC_PERIOD)
    texts = {}
    for node in cluster.nodes:
        if cluster.config.proxy_mode == "userspace":
            owned[node.name] = _sync_userspace(cluster, node, eps, previous.get(node.name) or {},
                                               (proxies or {}).get(node.name))
            continue
        before = previous.get(node.name, ())
        texts[node.name] = kubeproxy.render_node_rules(cluster, node, eps, previous_chains=before,
                                                       cleanup=cleanup, live=True)
        owned[node.name] = kubeproxy.node_chains(cluster, node, eps)
        if not cleanup:
            owned[node.name] = sorted(set(owned[node.name]) | set(kubeproxy.stale_chains(before, owned[node.name])))

    def apply(node) -> None:
        iptables.sync_node(node.netns, texts[node.name])
        if cluster.config.calico_pods:          # backend calico, or Canal: Felix's part
            sync_policy(cluster, node)
    _on_each_node([n for n in cluster.nodes if n.name in texts], apply)
    owned[CLEANUP_KEY] = time.time() if cleanup else last_cleanup
    state.write_json(_chains_file(cluster.name), owned)
    from .runtime.healthcheck import write_configs
    write_configs(cluster, eps)
    if cluster.config.dns:
        from .model.addons import records_path
        from .model.dns import build_records
        from .runtime.kubedns import write_records
        path = records_path(cluster.name)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        write_records(path, build_records(cluster, ready))
    from .runtime import ingress
    ingress.sync(cluster, eps, pids_of)     # nginx.conf from Ingresses and ready endpoints


def _on_each_node(nodes: list, fn) -> None:
    """fn(node) for all nodes at once, as each node's kube-proxy works on its own. Each call
    waits on iptables processes in its node's namespace, not on Python: at the end of a
    100-pod `up` the three nodes' syncs took 50 ms one after the other. The first error
    (by node order) is raised once all have finished."""
    import threading
    errors: dict[int, BaseException] = {}

    def run(i: int, node) -> None:
        try:
            fn(node)
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the caller's thread
            errors[i] = exc
    threads = [threading.Thread(target=run, args=(i, node), name=f"sync-{node.name}") for i, node in enumerate(nodes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[min(errors)]


def sync_policy(cluster: Cluster, node) -> None:
    """Felix's part of a sync: the node's selector ipsets, then its policy chains (with the
    jumps from FORWARD and INPUT), then the sets nothing uses any more, in that order so no
    rule ever names a set that does not exist."""
    from .kernel import ipset
    from .plan import netpol
    wanted = netpol.render_node(cluster, node)
    ipset.restore(node.netns, wanted.ipset_text())
    saved = iptables.save(node.netns, "filter")
    chains = [line[1:].split()[0] for line in saved.splitlines() if line.startswith(":")]
    jumps = iptables.missing_jumps_text(saved, netpol.jumps())
    iptables.restore(node.netns, jumps + wanted.text(chains) + netpol.missing_accept_text(saved))
    stale = [s for s in ipset.names(node.netns)
             if s.startswith((netpol.SET_PREFIX, netpol.TMP_PREFIX)) and s not in wanted.ipsets]
    ipset.destroy(node.netns, stale)


def _sync_userspace(cluster: Cluster, node, eps: dict, previous_ports: dict, proxy: Optional[int]) -> dict:
    """userspace mode: the proxy's config first, its listeners open, then the portal rules
    that send traffic to them."""
    from .plan import userspace
    ports = userspace.proxy_ports(cluster, node, previous=previous_ports)
    config = userspace.proxy_config(cluster, node, ports, eps)
    state.write_json(proxy_config_file(cluster.name, node.name), config)
    if proxy:
        # Only TCP listeners show in the socket table as LISTEN; UDP ones are bound at once.
        _reload_proxy(proxy, {svc["listen"] for svc in config["services"].values() if svc["protocol"] == "TCP"})
    iptables.sync_node(node.netns, userspace.render_userspace_rules(cluster, node, ports),
                       jumps=userspace.render_jumps())
    return ports


def _reload_proxy(pid: int, ports: set[int], timeout: float = 2.0) -> None:
    """SIGHUP makes the proxy re-read its config now; wait (bounded) for its listeners."""
    import os
    import signal
    import time
    from .kernel.netns import listening_tcp_ports
    from .runtime.procs import wait_for_handler
    deadline = time.monotonic() + timeout
    wait_for_handler(pid, signal.SIGHUP, deadline)      # a proxy just started: not yet
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return                       # the agent restarts it, and a new proxy reads the file
    while not ports <= listening_tcp_ports(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
