"""get and describe for Ingress, IngressClass and Secret, shaped like kubectl's output."""
from __future__ import annotations

import typer

from .output import age, as_list, emit, table

KINDS = ("ingresses", "ingressclasses", "secrets")


def _hosts_column(ing) -> str:
    """kubectl's HOSTS (formatHosts): the rules' hosts, '*' for a rule without one, the first
    four then '+ N more...'."""
    hosts = [r.host or "*" for r in ing.rules] or ["*"]
    more = f" + {len(hosts) - 4} more..." if len(hosts) > 4 else ""
    return ",".join(hosts[:4]) + more


def _context(cluster, status: dict):
    from .. import engine
    from ..dataplane import endpoints
    return endpoints(cluster, engine.ready_from(status))


def get(cluster, status: dict, resource: str, objs: list, output: str, all_namespaces: bool) -> None:
    from ..model.cluster import to_manifest
    from ..runtime.ingress import ingress_address
    nscol = ["NAMESPACE"] if all_namespaces and resource != "ingressclasses" else []
    ns_of = (lambda o: [o.meta.namespace]) if nscol else (lambda o: [])
    if output == "name":
        singular = {"ingresses": "ingress.networking.k8s.io", "ingressclasses": "ingressclass.networking.k8s.io",
                    "secrets": "secret"}[resource]
        typer.echo("\n".join(f"{singular}/{o.meta.name}" for o in objs))
        return
    if output in ("json", "yaml"):
        docs = []
        for o in objs:
            doc = to_manifest(o)
            ip = ingress_address(cluster, o) if resource == "ingresses" else ""
            if ip:
                doc["status"] = {"loadBalancer": {"ingress": [{"ip": a} for a in ip.split(",")]}}
            docs.append(doc)
        emit(as_list(docs), output)
        return
    if resource == "ingresses":
        headers = nscol + ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
        rows = [ns_of(i) + [i.meta.name, i.class_name or "<none>", _hosts_column(i), ingress_address(cluster, i),
                            "80, 443" if i.tls else "80", age(i.created)] for i in objs]
    elif resource == "ingressclasses":
        headers = ["NAME", "CONTROLLER", "PARAMETERS", "AGE"]
        rows = [[c.meta.name, c.controller, "<none>", "<unknown>"] for c in objs]
    else:
        headers = nscol + ["NAME", "TYPE", "DATA", "AGE"]
        rows = [ns_of(s) + [s.meta.name, s.type, len(s.data), "<unknown>"] for s in objs]
    typer.echo(table(headers, rows))


def describe(cluster, status: dict, resource: str, name: str, namespace: str) -> None:
    from ..model.errors import LabError, NotFoundError
    if resource != "ingresses":
        raise LabError("describe supports pod, node, service and ingress")
    from ..plan.ingress import resolve_backend
    from ..runtime.ingress import events, ingress_address
    ing = cluster.ingresses.get(f"{namespace}/{name}")
    if ing is None:
        raise NotFoundError(f'ingresses.networking.k8s.io "{name}" not found in namespace "{namespace}"')
    eps = _context(cluster, status)

    def backend(b) -> str:
        up = resolve_backend(cluster, ing.meta.namespace, b, eps)
        if up.error:
            return f"{b} (<error: {up.error}>)"
        return f"{b} ({up})"

    lines = [f"Name:             {ing.meta.name}",
             f"Labels:           {', '.join(f'{k}={v}' for k, v in ing.meta.labels.items()) or '<none>'}",
             f"Namespace:        {ing.meta.namespace}",
             f"Address:          {ingress_address(cluster, ing)}",
             f"Ingress Class:    {ing.class_name or '<none>'}",
             f"Default backend:  {backend(ing.default_backend) if ing.default_backend else '<default>'}"]
    if ing.tls:
        lines.append("TLS:")
        lines += [f"  {t.secret or 'SNI routes'} terminates {','.join(t.hosts)}" for t in ing.tls]
    lines.append("Rules:")
    rows = []
    for rule in ing.rules:
        rows.append(["  " + (rule.host or "*"), "", ""])
        if not rule.paths:
            rows.append(["", "/", backend(ing.default_backend) if ing.default_backend else "default-http-backend:80"])
        for p in rule.paths:
            rows.append(["", f"{p.path} ({p.path_type})", backend(p.backend)])
    if rows:
        lines.append(table(["  Host", "Path", "Backends"], [["  ----", "----", "--------"]] + rows))
    ann = {k: v for k, v in ing.meta.annotations.items() if not k.startswith("netlab/")}
    lines.append(f"Annotations:      {', '.join(f'{k}: {v}' for k, v in ann.items()) or '<none>'}")
    lines.append("Events:")
    evs = events(cluster.name).get(ing.meta.key, [])
    if evs:
        lines.append(table(["  Type", "Reason", "Age", "From", "Message"],
                           [["  " + t, r, age(when), "nginx-ingress-controller", m] for t, r, m, when in evs]))
    else:
        lines.append("  <none>")
    typer.echo("\n".join(lines))
