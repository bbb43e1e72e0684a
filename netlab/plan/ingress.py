"""nginx.conf for the ingress controller, rendered from the lab's Ingresses the way
ingress-nginx renders its nginx.tmpl. Pure: model in, text out (golden-text tests).

What follows ingress-nginx (internal/ingress/controller: controller.go, location.go,
template/template.go and nginx.tmpl), re-done here rather than copied:

- Ingresses are read oldest first (creation time, then namespace/name); when two claim the
  same host and path the older keeps it and the newer gets a warning event.
- One `server` per host (rules of several Ingresses merge), plus the catch-all server `_`
  (default_server) for requests whose Host names no rule; a rule without a host adds its
  paths there. `*.example.net` becomes the regular expression
  `~^(?<subdomain>[\\w-]+)\\.example\\.net$`: exactly one label, as the Ingress spec says
  (nginx's own `*.` form would also match a.b.example.net), and exact names win over it.
- Paths: Exact is `location = /p`; Prefix `/p` is `location /p/` plus `location = /p` (unless
  an Exact /p exists), so /p and /p/x match and /px does not; ImplementationSpecific is
  nginx's own prefix match `location /p`. nginx picks an exact match first, else the longest
  prefix: the Ingress spec's precedence. Locations are listed in reverse lexical order,
  as ingress-nginx sorts them.
- Every server's `location /`, when no rule claims it, goes to the default backend: the
  Ingress's own defaultBackend (spec.backend in v1beta1) for its hosts, the oldest Ingress's
  defaultBackend for the catch-all, else the controller's built-in one: 404
  "default backend - 404".
- Upstreams are named <namespace>-<service>-<port> and list the Service's ready endpoints
  (pod IP and target port), not its ClusterIP. A Service or port that does not exist, or a
  resource backend, answers 503, with a warning event on the Ingress; no ready endpoint
  also answers 503 (nginx's answer when no upstream server is left).
- The headers the backend sees: Host, X-Request-ID, X-Real-IP and X-Forwarded-For (the
  client address nginx sees), X-Forwarded-Host, -Port, -Proto and -Scheme, X-Scheme,
  X-Original-URI.
- TLS: each host listed in an Ingress's tls gets its Secret's certificate (SNI picks the
  server); every other server has the controller's self-signed default certificate. HTTP
  to a TLS host is redirected to https with 308, unless the Ingress says
  nginx.ingress.kubernetes.io/ssl-redirect: "false".
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from ..model.ingress import (SSL_REDIRECT_ANNOTATION, TLS_TYPE, Ingress, IngressBackend,
                             served_by_nginx)

CATCH_ALL = "_"
DEFAULT_UPSTREAM = "upstream-default-backend"
DEFAULT_BACKEND_ADDR = "127.0.0.1:8181"


@dataclass
class Upstream:
    name: str                              # <ns>-<svc>-<port>, or "" when it cannot be served
    servers: list[str] = field(default_factory=list)    # ip:port of ready endpoints
    error: str = ""                        # why it answers 503 (service or port missing)

    def __str__(self) -> str:
        return ",".join(self.servers) or "<none>"


@dataclass
class Location:
    path: str                  # as nginx matches it ("/p/", "/p")
    exact: bool
    ingress: str               # ns/name that owns it
    path_type: str
    ingress_path: str          # the path as the Ingress wrote it
    upstream: Optional[Upstream]           # None: the controller's default backend (404)
    service: str = ""

    @property
    def key(self) -> tuple:
        return (self.exact, self.path)


@dataclass
class Server:
    host: str
    locations: dict[tuple, Location] = field(default_factory=dict)
    root: Optional[Location] = None        # the Ingress's defaultBackend for "/", if any
    cert: str = ""                         # a certificate file, "" = the default one
    secret: str = ""                       # ns/name of its TLS Secret
    ssl_redirect: bool = False


@dataclass
class Rendered:
    text: str
    certs: dict[str, bytes]                        # file name (under ssl/) -> PEM
    events: dict[str, list[tuple[str, str, str]]]  # Ingress ns/name -> [(type, reason, message)]
    servers: dict[str, Server]
    upstreams: dict[str, Upstream]


def ingresses_served(cluster) -> list[Ingress]:
    """The Ingresses ingress-nginx takes, oldest first."""
    classes = getattr(cluster, "ingress_classes", {})
    return sorted((i for i in cluster.ingresses.values() if served_by_nginx(i, classes)),
                  key=lambda i: (i.created, i.meta.namespace, i.meta.name))


def resolve_backend(cluster, namespace: str, backend: IngressBackend, eps: dict) -> Upstream:
    """The upstream an Ingress backend stands for: the Service port's ready endpoints."""
    if backend.resource:
        return Upstream("", error=f"resource backend {backend.resource} is not served by ingress-nginx")
    svc = cluster.services.get(f"{namespace}/{backend.service}")
    port_text = backend.port_name or str(backend.port_number)
    if svc is None:
        return Upstream("", error=f'service "{namespace}/{backend.service}" not found')
    if svc.type == "ExternalName":
        return Upstream("", error=f'service "{namespace}/{backend.service}" is ExternalName: netlab\'s '
                                  f"ingress serves Services with endpoints only")
    port = next((p for p in svc.ports if p.protocol == "TCP" and
                 (p.name == backend.port_name if backend.port_name else p.port == backend.port_number)), None)
    if port is None:
        return Upstream("", error=f'service "{namespace}/{backend.service}" does not have port {port_text}')
    found = (eps.get(svc.meta.key) or {}).get(port.name, [])
    servers = sorted({f"{e.ip}:{e.port}" for e in found}, key=_addr_key)
    return Upstream(f"{namespace}-{backend.service}-{port_text}", servers)


def _addr_key(addr: str):
    ip, _, port = addr.rpartition(":")
    return tuple(int(x) for x in ip.split(".")) + (int(port),)


def server_name(host: str) -> str:
    """nginx's server_name for an Ingress host: a wildcard matches exactly one label."""
    if not host.startswith("*."):
        return host
    return r"~^(?<subdomain>[\w-]+)\." + re.escape(host[2:]).replace(r"\-", "-") + "$"


def host_matches(pattern: str, host: str) -> bool:
    """Whether an Ingress host (maybe *.wildcard) matches a request's host."""
    if pattern.startswith("*."):
        first, _, rest = host.partition(".")
        return bool(first) and rest == pattern[2:]
    return pattern == host


def cert_name(secret_key: str) -> str:
    return secret_key.replace("/", "-") + ".pem"


def plan(cluster, eps: dict) -> tuple[dict[str, Server], dict[str, Upstream], dict, dict]:
    """Servers and upstreams from the served Ingresses; certificates and events on the way."""
    servers: dict[str, Server] = {CATCH_ALL: Server(CATCH_ALL)}
    upstreams: dict[str, Upstream] = {}
    certs: dict[str, bytes] = {}
    events: dict[str, list] = {}

    def warn(ing: Ingress, reason: str, message: str) -> None:
        events.setdefault(ing.meta.key, []).append(("Warning", reason, message))

    def upstream_of(ing: Ingress, backend: IngressBackend) -> Upstream:
        up = resolve_backend(cluster, ing.meta.namespace, backend, eps)
        if up.error:
            warn(ing, "BackendNotFound" if not backend.resource else "ResourceBackend",
                 f"{up.error}: requests for it answer 503")
        elif up.name not in upstreams:
            upstreams[up.name] = up
        return up

    for ing in ingresses_served(cluster):
        default = None
        if ing.default_backend is not None:
            up = upstream_of(ing, ing.default_backend)
            default = Location("/", False, ing.meta.key, "Prefix", "/", up, ing.default_backend.service)
            if servers[CATCH_ALL].root is None:
                servers[CATCH_ALL].root = default
        tls_for = {}
        for t in ing.tls:
            for host in (t.hosts or [r.host for r in ing.rules if r.host]):
                tls_for.setdefault(host, t.secret)
        redirect = ing.meta.annotations.get(SSL_REDIRECT_ANNOTATION, "true") != "false"
        for rule in ing.rules:
            host = rule.host or CATCH_ALL
            server = servers.setdefault(host, Server(host))
            if default is not None and server.root is None and host != CATCH_ALL:
                server.root = default
            secret = next((s for h, s in tls_for.items() if host != CATCH_ALL and host_matches(h, host)), None)
            if secret is not None and not server.cert and not server.secret:
                server.ssl_redirect = redirect
                if secret:
                    key = f"{ing.meta.namespace}/{secret}"
                    obj = cluster.secrets.get(key)
                    server.secret = key
                    if obj is None or obj.type != TLS_TYPE:
                        warn(ing, "SecretNotFound", f'secret "{key}" ' + ("not found" if obj is None else
                             f"is not of type {TLS_TYPE}") + f": {host} gets the default certificate")
                    else:
                        server.cert = cert_name(key)
                        certs[server.cert] = obj.pem
            for p in rule.paths:
                up = upstream_of(ing, p.backend)
                taken_by = ""
                for loc in _locations(p.path, p.path_type, ing, up, p.backend.service, server):
                    held = server.locations.setdefault(loc.key, loc)
                    if held.ingress != ing.meta.key:
                        taken_by = held.ingress
                if taken_by:
                    warn(ing, "PathConflict", f"{rule.host or '*'}{p.path} ({p.path_type}) is already "
                         f"served by Ingress {taken_by}: the older Ingress keeps it")
    return servers, upstreams, certs, events


def _locations(path: str, path_type: str, ing: Ingress, up: Upstream, service: str, server: Server):
    """ingress-nginx's locations for one Ingress path (updateServerLocations)."""
    def loc(p: str, exact: bool) -> Location:
        return Location(p, exact, ing.meta.key, path_type, path, up, service)
    if path_type == "Exact":
        return [loc(path, True)]
    if path_type == "ImplementationSpecific" or path == "/":
        return [loc(path, False)]
    prefix = path if path.endswith("/") else path + "/"
    out = [loc(prefix, False)]
    if (True, path) not in server.locations:
        out.append(loc(path, True))
    return out


def render(cluster, eps: dict, conf_dir: str) -> Rendered:
    """The whole nginx.conf; certificates go to conf_dir/ssl/<ns>-<secret>.pem."""
    servers, upstreams, certs, events = plan(cluster, eps)
    ssl = f"{conf_dir}/ssl"
    out = [
        "# Rendered by netlab's ingress controller from the lab's Ingress objects, the way",
        "# ingress-nginx renders nginx.tmpl; reloaded (SIGHUP) whenever it changes.",
        "daemon off;",
        "user www-data;",
        "worker_processes auto;",
        "pid /run/nginx.pid;",
        "error_log stderr notice;",
        "events {",
        "    worker_connections 16384;",
        "    multi_accept on;",
        "}",
        "http {",
        "    default_type text/html;",
        "    sendfile on;",
        "    tcp_nopush on;",
        "    tcp_nodelay on;",
        "    keepalive_timeout 75s;",
        "    keepalive_requests 1000;",
        "    server_tokens off;",
        "    server_names_hash_bucket_size 128;",
        "    client_body_temp_path /tmp/nginx-client-body;",
        "    proxy_temp_path /tmp/nginx-proxy;",
        "    fastcgi_temp_path /tmp/nginx-fastcgi;",
        "    uwsgi_temp_path /tmp/nginx-uwsgi;",
        "    scgi_temp_path /tmp/nginx-scgi;",
        "    log_format upstreaminfo '$remote_addr - $remote_user [$time_local] \"$request\" $status '",
        "        '$body_bytes_sent \"$http_referer\" \"$http_user_agent\" $request_length $request_time '",
        "        '[$proxy_upstream_name] [] $upstream_addr $upstream_response_length '",
        "        '$upstream_response_time $upstream_status $request_id';",
        "    access_log /proc/self/fd/1 upstreaminfo;",
        "    ssl_protocols TLSv1.2 TLSv1.3;",
        "    ssl_session_cache shared:SSL:10m;",
        f"    ssl_certificate {ssl}/default-fake-certificate.pem;",
        f"    ssl_certificate_key {ssl}/default-fake-certificate.pem;",
        "    proxy_http_version 1.1;",
        "    proxy_connect_timeout 5s;",
        "    proxy_send_timeout 60s;",
        "    proxy_read_timeout 60s;",
        "    proxy_next_upstream error timeout;",
        "    proxy_set_header Connection \"\";",
        "    proxy_set_header Host $host;",
        "    proxy_set_header X-Request-ID $request_id;",
        "    proxy_set_header X-Real-IP $remote_addr;",
        "    proxy_set_header X-Forwarded-For $remote_addr;",
        "    proxy_set_header X-Forwarded-Host $host;",
        "    proxy_set_header X-Forwarded-Port $server_port;",
        "    proxy_set_header X-Forwarded-Proto $scheme;",
        "    proxy_set_header X-Forwarded-Scheme $scheme;",
        "    proxy_set_header X-Scheme $scheme;",
        "    proxy_set_header X-Original-URI $request_uri;",
        "",
        f"    upstream {DEFAULT_UPSTREAM} {{",
        f"        server {DEFAULT_BACKEND_ADDR};",
        "        keepalive 32;",
        "    }",
    ]
    for name in sorted(upstreams):
        up = upstreams[name]
        if not up.servers:
            continue              # no ready endpoint: its locations answer 503 themselves
        out += ["", f"    upstream {name} {{"]
        out += [f"        server {addr} max_fails=0;" for addr in up.servers]
        out += ["        keepalive 320;", "    }"]
    # The catch-all first, then hosts in order (as ingress-nginx sorts them).
    for host in [CATCH_ALL] + sorted(h for h in servers if h != CATCH_ALL):
        out += [""] + _server(servers[host], ssl)
    out += [
        "",
        "    # The controller's default backend (ingress-nginx serves it from nginx itself).",
        "    server {",
        f"        listen {DEFAULT_BACKEND_ADDR};",
        "        access_log off;",
        "        location / {",
        "            default_type text/plain;",
        "            return 404 \"default backend - 404\\n\";",
        "        }",
        "    }",
        "",
        "    # Health of the controller, for its readiness and liveness probes.",
        "    server {",
        "        listen 10254;",
        "        access_log off;",
        "        location = /healthz {",
        "            default_type text/plain;",
        "            return 200 \"ok\\n\";",
        "        }",
        "        location = /nginx_status {",
        "            stub_status;",
        "        }",
        "    }",
        "}",
    ]
    return Rendered("\n".join(out) + "\n", certs, events, servers, upstreams)


def _server(server: Server, ssl: str) -> list[str]:
    catch_all = server.host == CATCH_ALL
    out = [f"    ## start server {server.host}", "    server {",
           f"        server_name {server_name(server.host)};"]
    if catch_all:
        out += ["        listen 80 default_server reuseport backlog=4096;",
                "        listen 443 default_server reuseport backlog=4096 ssl;"]
    else:
        out += ["        listen 80;", "        listen 443 ssl;"]
    if server.cert:
        out += [f"        ssl_certificate {ssl}/{server.cert};",
                f"        ssl_certificate_key {ssl}/{server.cert};"]
    out.append('        set $proxy_upstream_name "-";')
    if server.ssl_redirect:
        out += ["        if ($scheme = http) {",
                "            return 308 https://$host$request_uri;",
                "        }"]
    # Reverse lexical order, as ingress-nginx sorts them (nginx itself picks by match, not order).
    locations = sorted(server.locations.values(), key=lambda l: (l.path, l.exact), reverse=True)
    if (False, "/") not in server.locations:
        locations.append(server.root or Location("/", False, "", "Prefix", "/", None))
    for loc in locations:
        out += _location(loc)
    out += ["    }", f"    ## end server {server.host}"]
    return out


def _location(loc: Location) -> list[str]:
    match = f"= {loc.path}" if loc.exact else loc.path
    out = [f"        location {match} {{"]
    if loc.ingress:
        ns, _, name = loc.ingress.partition("/")
        out += [f"            # Ingress {loc.ingress}: {loc.ingress_path} ({loc.path_type})",
                f'            set $namespace "{ns}";', f'            set $ingress_name "{name}";',
                f'            set $service_name "{loc.service}";']
    up = loc.upstream
    if up is None:
        out += [f'            set $proxy_upstream_name "{DEFAULT_UPSTREAM}";',
                f"            proxy_pass http://{DEFAULT_UPSTREAM};"]
    elif up.error or not up.servers:
        out += [f'            set $proxy_upstream_name "{up.name or "-"}";',
                f"            # {up.error or 'no ready endpoint'}",
                "            return 503;"]
    else:
        out += [f'            set $proxy_upstream_name "{up.name}";',
                f"            proxy_pass http://{up.name};"]
    out.append("        }")
    return out


# ---------------------------------------------------------------------- the spec, for verify

@dataclass
class Route:
    """Where a request should go, worked out from the Ingress objects by the matching rules
    (not from nginx.conf): verify compares it with what nginx did."""
    upstream: str              # the upstream's name; DEFAULT_UPSTREAM for the built-in 404
    status: int                # 200 through an upstream, 404 default backend, 503 unservable
    ingress: str = ""          # the Ingress (ns/name) whose rule or defaultBackend matched
    rule: str = ""             # "host path (type)" of the matching rule, or why none did

    def __str__(self) -> str:
        return f"{self.upstream} ({self.rule or 'default backend'})"


def _route_to(cluster, eps, ing: Ingress, backend: IngressBackend, rule: str) -> Route:
    up = resolve_backend(cluster, ing.meta.namespace, backend, eps)
    if up.error or not up.servers:
        return Route(up.name or "-", 503, ing.meta.key, rule)
    return Route(up.name, 200, ing.meta.key, rule)


def expected_route(cluster, eps: dict, host: str, path: str) -> Route:
    """The Ingress spec's matching, as ingress-nginx reads it: the rules of the exact host,
    else of a one-label wildcard, else those without a host (the catch-all); among their paths
    an exact match (Exact, or a Prefix path itself) first, else the longest matching prefix
    (Prefix element-wise, ImplementationSpecific as a plain string prefix); the oldest Ingress
    wins a tie; no match: the defaultBackend of the host's oldest Ingress that has one, else
    the controller's 404."""
    served = ingresses_served(cluster)
    rules = ([(i, r) for i in served for r in i.rules if r.host == host]
             or [(i, r) for i in served for r in i.rules if r.host.startswith("*.") and host_matches(r.host, host)])
    catch_all = not rules
    if catch_all:
        rules = [(i, r) for i in served for r in i.rules if not r.host]
    exact, prefix = [], []
    for order, (ing, rule) in enumerate(rules):
        for p in rule.paths:
            label = f"{rule.host or '*'} {p.path} ({p.path_type})"
            if p.path_type == "Exact":
                if path == p.path:
                    exact.append((0, order, ing, p, label))
                continue
            if p.path_type == "Prefix" and p.path != "/":
                loc = p.path if p.path.endswith("/") else p.path + "/"
                if path == p.path:
                    exact.append((1, order, ing, p, label))
                    continue
            else:
                loc = p.path
            if path.startswith(loc):
                prefix.append((-len(loc), order, ing, p, label))
    best = min(exact, key=lambda c: c[:2], default=None) or min(prefix, key=lambda c: c[:2], default=None)
    if best is not None:
        return _route_to(cluster, eps, best[2], best[3].backend, best[4])
    owners = served if catch_all else [i for i, _ in rules]
    for ing in owners:
        if ing.default_backend is not None:
            return _route_to(cluster, eps, ing, ing.default_backend, f"defaultBackend of {ing.meta.key}")
    return Route(DEFAULT_UPSTREAM, 404, "", "no rule matches")
