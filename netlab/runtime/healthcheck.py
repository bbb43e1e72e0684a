"""kube-proxy's service health server, one per node: for every LoadBalancer Service with
externalTrafficPolicy Local it answers HTTP on the Service's healthCheckNodePort with the
number of the Service's ready endpoints on this node (200 with at least one, 503 without), so
a cloud load balancer sends traffic only to nodes that will not drop it.

The body is kube-proxy's (pkg/proxy/healthcheck/service_health.go, hcHandler.ServeHTTP). The
counts come from the lab's data-plane sync, which writes them to healthcheck-<node>.json; the
daemon re-reads that file when it changes and opens or closes its ports to match.
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import sys
from typing import Optional

from .. import state
from .daemons import DaemonSpec, provider

POLL = 0.5          # seconds between looks at the config file
REQUEST_TIMEOUT = 2.0


def config_file(lab: str, node: str):
    return state.lab_dir(lab) / f"healthcheck-{node}.json"


def wants_health_checks(cluster) -> bool:
    return any(s.health_check_node_port for s in cluster.services.values())


def local_endpoint_counts(cluster, node: str, endpoints: dict) -> list[dict]:
    """EndpointsMap.LocalReadyEndpoints for one node: per Service, its distinct ready endpoint
    IPs on this node (over all its ports); only Services with a health-check port."""
    out = []
    for key in sorted(cluster.services):
        svc = cluster.services[key]
        if not svc.health_check_node_port:
            continue
        ips = {ep.ip for eps in (endpoints.get(key) or {}).values() for ep in eps if ep.node == node}
        out.append({"namespace": svc.meta.namespace, "name": svc.meta.name,
                    "port": svc.health_check_node_port, "localEndpoints": len(ips)})
    return out


def write_configs(cluster, endpoints: dict) -> None:
    """Called by every data-plane sync (netlab/dataplane.py)."""
    if not wants_health_checks(cluster):
        return
    for node in cluster.nodes:
        state.write_json(config_file(cluster.name, node.name),
                         {"services": local_endpoint_counts(cluster, node.name, endpoints)})


@provider
def health_servers(cluster) -> list[DaemonSpec]:
    if not wants_health_checks(cluster):
        return []
    return [DaemonSpec("kube-proxy-health", n.name, n.netns, "netlab.runtime.healthcheck:run",
                       (str(config_file(cluster.name, n.name)),)) for n in cluster.nodes]


def response(entry: Optional[dict]) -> bytes:
    """kube-proxy's answer for one Service (kube-proxy itself counts as healthy here)."""
    count = entry["localEndpoints"] if entry else 0
    body = ("{\n"
            "\t\"service\": {\n"
            f"\t\t\"namespace\": {json.dumps(entry['namespace'] if entry else '')},\n"
            f"\t\t\"name\": {json.dumps(entry['name'] if entry else '')}\n"
            "\t},\n"
            f"\t\"localEndpoints\": {count},\n"
            "\t\"serviceProxyHealthy\": true\n"
            "}").encode()
    status = "200 OK" if count else "503 Service Unavailable"
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def _read_config(path: str) -> dict[int, dict]:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return {int(s["port"]): s for s in data.get("services", [])}


def run(path: str) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sel = selectors.DefaultSelector()
    listeners: dict[int, socket.socket] = {}
    services: dict[int, dict] = {}
    seen = None
    while True:
        try:
            stamp = os.stat(path).st_mtime_ns
        except OSError:
            stamp = None
        if stamp != seen:
            seen, services = stamp, _read_config(path)
            for port in [p for p in listeners if p not in services]:
                sel.unregister(listeners[port])
                listeners.pop(port).close()
            for port in [p for p in services if p not in listeners]:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("0.0.0.0", port))
                except OSError as exc:
                    print(f"health check port {port}: {exc}", file=sys.stderr, flush=True)
                    s.close()
                    continue
                s.listen(64)
                listeners[port] = s
                sel.register(s, selectors.EVENT_READ, port)
        for key, _ in sel.select(POLL):
            try:
                conn, _ = key.fileobj.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(REQUEST_TIMEOUT)
                try:
                    data = b""
                    while b"\r\n\r\n" not in data and len(data) < 8192:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    conn.sendall(response(services.get(key.data)))
                except OSError:
                    pass
