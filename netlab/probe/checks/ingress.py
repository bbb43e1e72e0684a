"""Layer 7 from outside: the Ingress controller (document 004 §4.3, its two figures):
client -> node:NodePort -> kube-proxy -> nginx pod -> backend pod.

Each request goes from the outside client to a node's NodePort of the controller's Service
with a Host header (or SNI) and a unique query string; nginx's access log line for that
request (upstreaminfo: the upstream's name and the endpoint it picked) says where it went.
What it should have done is worked out from the Ingress objects by the spec's matching
rules (plan/ingress.expected_route), not read from nginx.conf.
"""
from __future__ import annotations

import re
import socket
import ssl
import time
import uuid

from ... import state
from ...dataplane import endpoints
from ...model.addons import INGRESS_CONTAINER, INGRESS_NAMESPACE, INGRESS_NODE_PORTS, INGRESS_SERVICE
from ...model.ingress import TLS_TYPE, pem_blocks
from ...plan.ingress import (CATCH_ALL, DEFAULT_UPSTREAM, Route, expected_route, ingresses_served,
                             plan)
from .. import sockets
from ..catalog import check
from ..lab import LabView
from ..result import SOCKET, Evidence
from . import DOC004

SOURCE = f"{DOC004} §4.3 (Ingress Controller 七层, figures ingress-1 and ingress-2)"
UNKNOWN_HOST = "netlab-verify-unknown.invalid"
_LOG = re.compile(r'"[A-Z]+ (?P<uri>\S+) HTTP/[0-9.]+" (?P<status>\d+) .*\[(?P<up>[^\]]*)\] \[\] (?P<addr>\S+)')


def _controller(view: LabView):
    pods = [p for p in view.pods if p.meta.namespace == INGRESS_NAMESPACE
            and any(c.name == INGRESS_CONTAINER for c in p.spec.containers)]
    ready = [p for p in pods if p.meta.key in view.ready]
    return ready[0] if ready else None


def _applies(view: LabView) -> bool:
    return bool(ingresses_served(view.cluster)) and f"{INGRESS_NAMESPACE}/{INGRESS_SERVICE}" in view.cluster.services


def _http(ns: str, ip: str, port: int, host: str, path: str, timeout: float = 3.0,
          tls: bool = False) -> tuple[int, dict, str]:
    """One HTTP/1.1 request from namespace ns (over TLS with SNI host): (status, headers, body)."""
    def ask():
        with socket.create_connection((ip, port), timeout=timeout) as raw:
            s = _client_tls().wrap_socket(raw, server_hostname=host) if tls else raw
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: netlab-verify\r\n"
                      f"Connection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        return status, headers, body.decode("utf-8", "replace")
    return sockets.in_netns(ns, ask)


def _client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False            # the lab's certificates are self-signed
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _redirected(view: LabView) -> set[str]:
    """Hosts whose plain HTTP is redirected to https: requests to them go over TLS."""
    servers = plan(view.cluster, endpoints(view.cluster, view.ready))[0]
    return {h for h, s in servers.items() if s.ssl_redirect}


def _logged(view: LabView, marker: str, timeout: float = 1.0) -> tuple[str, str]:
    """(upstream name, endpoint address) of nginx's access log line for the request marked so."""
    pod = _controller(view)
    path = state.container_log(view.name, pod.meta.namespace, pod.meta.name, INGRESS_CONTAINER)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path, "rb") as f:
                f.seek(max(0, f.seek(0, 2) - (1 << 20)))
                tail = f.read().decode("utf-8", "replace")
        except OSError:
            tail = ""
        for line in reversed(tail.splitlines()):
            if marker in line:
                m = _LOG.search(line)
                if m:
                    return m["up"], m["addr"]
        if time.monotonic() > deadline:
            return "", "(no access log line)"
        time.sleep(0.02)


def _request(view: LabView, ev: Evidence, node, host: str, path: str, want: Route, what: str) -> bool:
    """Send one request and judge it against the route the spec gives."""
    from ...plan.ingress import host_matches
    marker = uuid.uuid4().hex[:12]
    uri = f"{path}?netlab-verify={marker}"
    tls = any(host_matches(h, host) for h in _redirected(view))
    port = INGRESS_NODE_PORTS["https" if tls else "http"]
    try:
        status, _, body = _http(view.client_netns, node.internal_ip, port, host, uri, tls=tls)
    except (OSError, ssl.SSLError) as exc:
        return ev.add(f"client {view.client_ip}", f"{node.internal_ip}:{port} Host: {host}",
                      f"GET {path}", sockets.describe_error(exc, 3.0), False, f"{want.status} via {want}")
    upstream, addr = _logged(view, marker)
    if want.upstream == DEFAULT_UPSTREAM:
        ok = status == 404 and body.startswith("default backend - 404")
        seen = f"{status} {body.strip()[:40]!r}"
    else:
        ok = status == want.status and upstream == want.upstream
        seen = f"{status} from upstream {upstream or '-'} ({addr})"
    return ev.add(f"client {view.client_ip}", f"node {node.name} {node.internal_ip}:{port} Host: {host}",
                  f"GET {path}{' over TLS' if tls else ''} ({what})", seen, ok, f"{want.status} via {want}")


def _hosts(view: LabView) -> list[str]:
    """A request host for every host the Ingresses name: a wildcard's one-label stand-in."""
    hosts = sorted({r.host or "" for i in ingresses_served(view.cluster) for r in i.rules})
    return [("netlab-verify." + h[2:]) if h.startswith("*.") else (h or UNKNOWN_HOST) for h in hosts]


@check("ingress-host",
       claim="The Ingress controller routes by the Host header: a request from outside the cluster "
             "to any node's NodePort of the controller reaches the Service its host's rule names "
             "(nginx picks one of its ready pods, not the ClusterIP), and no other; a wildcard "
             "host matches exactly one label.",
       source=SOURCE, needs="an Ingress served by the ingress-nginx controller",
       applies=_applies, evidence=SOCKET)
def ingress_host(view: LabView, ev: Evidence) -> str:
    cluster, eps = view.cluster, endpoints(view.cluster, view.ready)
    nodes = cluster.nodes
    sent = 0
    for i, ing in enumerate(ingresses_served(cluster)):
        for rule in ing.rules:
            host = ("netlab-verify." + rule.host[2:]) if rule.host.startswith("*.") else (rule.host or UNKNOWN_HOST)
            for p in rule.paths[:3] or []:
                want = expected_route(cluster, eps, host, p.path)
                _request(view, ev, nodes[sent % len(nodes)], host, p.path, want, f"{ing.meta.key} rule")
                sent += 1
            if rule.host.startswith("*."):
                deeper = "a.netlab-verify." + rule.host[2:]
                path = rule.paths[0].path if rule.paths else "/"
                want = expected_route(cluster, eps, deeper, path)
                _request(view, ev, nodes[sent % len(nodes)], deeper, path, want, "two labels under the wildcard")
                sent += 1
    return f"{sent} requests by host reached the Services their rules name"


def _path_variants(path: str) -> list[str]:
    base = path.rstrip("/") or ""
    out = [path, base + "/netlab-sub", base + "netlab-more"]
    if not path.endswith("/"):
        out.append(path + "/")
    return [p for p in dict.fromkeys(out) if p.startswith("/")]


@check("ingress-path",
       claim="Paths follow the Ingress spec's precedence: an Exact path only itself, a Prefix path "
             "itself and what lies under it element by element (/foo matches /foo/bar, not "
             "/foobar), the exact match first, else the longest prefix.",
       source=SOURCE, needs="an Ingress with http paths, served by ingress-nginx",
       applies=lambda view: _applies(view) and any(r.paths for i in ingresses_served(view.cluster) for r in i.rules),
       evidence=SOCKET)
def ingress_path(view: LabView, ev: Evidence) -> str:
    cluster, eps = view.cluster, endpoints(view.cluster, view.ready)
    node = cluster.nodes[0]
    sent = 0
    for ing in ingresses_served(cluster):
        for rule in ing.rules:
            host = ("netlab-verify." + rule.host[2:]) if rule.host.startswith("*.") else (rule.host or UNKNOWN_HOST)
            for p in rule.paths:
                for variant in _path_variants(p.path):
                    want = expected_route(cluster, eps, host, variant)
                    _request(view, ev, node, host, variant, want, f"near {p.path} ({p.path_type})")
                    sent += 1
    return f"{sent} requests around the Ingress paths went where the spec's precedence says"


@check("ingress-default-backend",
       claim="A request the Ingress rules do not match (an unknown host, or a known host and an "
             "unknown path) goes to the default backend: the Ingress's defaultBackend if it has "
             "one, else the controller's own, which answers 404.",
       source=SOURCE, needs="an Ingress served by the ingress-nginx controller",
       applies=_applies, evidence=SOCKET)
def ingress_default_backend(view: LabView, ev: Evidence) -> str:
    cluster, eps = view.cluster, endpoints(view.cluster, view.ready)
    node = cluster.nodes[-1]
    unknown_path = "/netlab-verify-no-such-path"
    _request(view, ev, node, UNKNOWN_HOST, unknown_path, expected_route(cluster, eps, UNKNOWN_HOST, unknown_path),
             "unknown host")
    for host in [h for h in _hosts(view) if h != UNKNOWN_HOST][:4]:
        _request(view, ev, node, host, unknown_path, expected_route(cluster, eps, host, unknown_path),
                 "known host, unknown path")
    return "unmatched requests went to the default backend"


def _tls_hosts(view: LabView) -> list[tuple[str, object]]:
    """(request host, server) for every server that terminates TLS with a certificate."""
    servers = plan(view.cluster, endpoints(view.cluster, view.ready))[0]
    out = []
    for host, server in sorted(servers.items()):
        if host != CATCH_ALL and server.secret:
            out.append((("netlab-verify." + host[2:]) if host.startswith("*.") else host, server))
    return out


def _handshake(ns: str, ip: str, port: int, sni: str, timeout: float = 3.0) -> bytes:
    def shake() -> bytes:
        with socket.create_connection((ip, port), timeout=timeout) as raw:
            with _client_tls().wrap_socket(raw, server_hostname=sni) as tls:
                return tls.getpeercert(binary_form=True)
    return sockets.in_netns(ns, shake)


def _cert_der(pem: bytes) -> bytes:
    return next((der for label, der in pem_blocks(pem) if label == "CERTIFICATE"), b"")


@check("ingress-tls",
       claim="TLS terminates at the Ingress controller: the SNI name picks the certificate of the "
             "Secret the host's Ingress names (others get the controller's default certificate), "
             "and plain HTTP to such a host is redirected to https (308), as ingress-nginx does.",
       source=SOURCE, needs="an Ingress with tls (a host and a kubernetes.io/tls Secret)",
       applies=lambda view: _applies(view) and bool(_tls_hosts(view)), evidence=SOCKET)
def ingress_tls(view: LabView, ev: Evidence) -> str:
    from ...model.addons import ingress_dir
    from ...runtime.ingress import DEFAULT_CERT
    cluster = view.cluster
    node = cluster.nodes[0]
    port = INGRESS_NODE_PORTS["https"]
    with open(f"{ingress_dir(view.name)}/ssl/{DEFAULT_CERT}", "rb") as f:
        default = _cert_der(f.read())
    for host, server in _tls_hosts(view):
        secret = cluster.secrets.get(server.secret)
        want = _cert_der(secret.pem) if secret is not None and secret.type == TLS_TYPE else default
        what = f"the certificate of Secret {server.secret}" if want != default else "the default certificate"
        try:
            got = _handshake(view.client_netns, node.internal_ip, port, host)
            seen = "the Secret's certificate" if got == want and want != default else \
                "the default certificate" if got == default else f"another certificate ({len(got)} bytes)"
            ok = got == want
        except (OSError, ssl.SSLError) as exc:
            seen, ok = f"handshake failed: {exc}", False
        ev.add(f"client {view.client_ip}", f"{node.internal_ip}:{port} SNI {host}", "TLS handshake", seen, ok, what)
        if server.ssl_redirect:
            status, headers, _ = _http(view.client_netns, node.internal_ip, INGRESS_NODE_PORTS["http"], host, "/netlab-verify")
            location = headers.get("location", "")
            ev.add(f"client {view.client_ip}", f"{node.internal_ip}:{INGRESS_NODE_PORTS['http']} Host: {host}",
                   "GET /netlab-verify (plain HTTP)", f"{status} Location: {location or '-'}",
                   status == 308 and location == f"https://{host}/netlab-verify", "308 to https")
    # A name without a TLS rule gets the default certificate, not some Ingress's.
    try:
        got = _handshake(view.client_netns, node.internal_ip, port, UNKNOWN_HOST)
        ev.add(f"client {view.client_ip}", f"{node.internal_ip}:{port} SNI {UNKNOWN_HOST}", "TLS handshake",
               "the default certificate" if got == default else "another certificate", got == default,
               "the default certificate")
    except (OSError, ssl.SSLError) as exc:
        ev.add(f"client {view.client_ip}", f"{node.internal_ip}:{port} SNI {UNKNOWN_HOST}", "TLS handshake",
               f"handshake failed: {exc}", False, "the default certificate")
    return "SNI picked each host's certificate; plain HTTP was redirected"
