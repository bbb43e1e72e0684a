"""`netlab get` through the lab's API, for what is shaped by the objects themselves: -o json,
yaml, name, jsonpath=..., custom-columns=..., --show-labels and -w (watch). The objects are
the ones kubectl gets (runtime/kubeobjects.py): `netlab get pods -o json | jq
'.items[].status.podIP'` works as on a cluster. Tables for --show-labels and -w are the API's
Tables, printed as kubectl prints them.
"""
from __future__ import annotations

import json
import sys
import time
from typing import Any, Optional
from urllib.parse import urlencode

RESOURCES = {
    "pods": "pods", "pod": "pods", "po": "pods",
    "services": "services", "service": "services", "svc": "services",
    "endpoints": "endpoints", "ep": "endpoints",
    "replicationcontrollers": "replicationcontrollers", "replicationcontroller": "replicationcontrollers",
    "rc": "replicationcontrollers",
    "namespaces": "namespaces", "namespace": "namespaces", "ns": "namespaces",
    "nodes": "nodes", "node": "nodes", "no": "nodes",
    "events": "events", "event": "events", "ev": "events",
}
CLUSTER_SCOPED = ("namespaces", "nodes")
SINGULAR = {"pods": "pod", "services": "service", "endpoints": "endpoints",
            "replicationcontrollers": "replicationcontroller", "namespaces": "namespace", "nodes": "node",
            "events": "event"}
TABLE_ACCEPT = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


def handles(kind: str, output: str, show_labels: bool, watch: bool) -> bool:
    if kind.lower() not in RESOURCES:
        return False
    return (output in ("json", "yaml", "name") or output.startswith(("jsonpath", "custom-columns"))
            or show_labels or watch or RESOURCES[kind.lower()] == "events")


def request(lab: str, path: str, accept: str = "application/json") -> Any:
    from ..runtime import agent_client, api
    agent_client.require_agent(lab)
    data = (f"GET {path} HTTP/1.1\r\nHost: netlab\r\nConnection: close\r\nAccept: {accept}\r\n"
            f"Content-Length: 0\r\n\r\n").encode()
    code, reply = api.parse_response(agent_client._exchange(lab, data, 60))
    if code >= 300:
        raise api.error_of(code, reply)
    return reply


def path_of(resource: str, namespace: str, all_ns: bool, name: Optional[str], query: dict) -> str:
    base = "/api/v1" if resource in CLUSTER_SCOPED or all_ns else f"/api/v1/namespaces/{namespace}"
    path = f"{base}/{resource}" + (f"/{name}" if name else "")
    q = {k: v for k, v in query.items() if v}
    return path + (f"?{urlencode(q)}" if q else "")


def get(kind: str, name: Optional[str], lab_opt: Optional[str], namespace: str, all_ns: bool,
        selector: Optional[str], output: str, show_labels: bool, watch: bool) -> None:
    from .common import lab_name
    from ..model.errors import LabError
    lab = lab_name(lab_opt)
    resource = RESOURCES[kind.lower()]
    structured = output in ("json", "yaml", "name") or output.startswith(("jsonpath", "custom-columns"))
    if output not in ("table", "wide") and not structured:
        raise LabError(f"unknown output format {output!r} (choose from wide, json, yaml, name, "
                       f"jsonpath=TEMPLATE, custom-columns=SPEC)")
    query = {"labelSelector": selector or ""}
    path = path_of(resource, namespace, all_ns, name if not watch else None,
                   dict(query, fieldSelector=f"metadata.name={name}" if watch and name else ""))
    if structured:
        reply = request(lab, path)
        if name and not watch:
            emit_objects([reply], output, single=True)
        else:
            emit_objects(reply.get("items", []), output, single=False, rv=reply)
        if watch:
            _watch(lab, path, reply["metadata"].get("resourceVersion", ""), output, None, all_ns, show_labels)
        return
    reply = request(lab, path, TABLE_ACCEPT)
    print_table(reply, output == "wide", all_ns and resource not in CLUSTER_SCOPED, show_labels, headers=True,
                kind=SINGULAR[resource])
    if watch:
        _watch(lab, path, reply["metadata"].get("resourceVersion", ""), output, reply, all_ns, show_labels)


def emit_objects(items: list, output: str, single: bool, rv: Any = None) -> None:
    from .jsonpath import render, evaluate, text
    doc = items[0] if single else {"apiVersion": "v1", "items": items, "kind": "List",
                                   "metadata": {"resourceVersion": ""}}
    if output == "json":
        sys.stdout.write(json.dumps(doc, indent=4) + "\n")
    elif output == "yaml":
        import yaml
        sys.stdout.write(yaml.safe_dump(doc, sort_keys=True, default_flow_style=False))
    elif output == "name":
        for item in items:
            sys.stdout.write(f"{SINGULAR_BY_KIND.get(item.get('kind'), item.get('kind', '').lower())}/"
                             f"{item['metadata']['name']}\n")
    elif output.startswith("jsonpath"):
        template = output.partition("=")[2]
        sys.stdout.write(render(template, doc))
    else:
        spec = output.partition("=")[2]
        columns = []
        for col in filter(None, spec.split(",")):
            header, _, expr = col.partition(":")
            columns.append((header, expr.strip().strip("{}")))
        rows = []
        for item in items:
            cells = []
            for _, expr in columns:
                found = evaluate(expr, [item])
                cells.append(",".join(text(v) for v in found) if found else "<none>")
            rows.append(cells)
        from .output import table
        sys.stdout.write(table([h for h, _ in columns], rows) + "\n")
    sys.stdout.flush()


SINGULAR_BY_KIND = {"Pod": "pod", "Service": "service", "Endpoints": "endpoints",
                    "ReplicationController": "replicationcontroller", "Namespace": "namespace",
                    "Node": "node", "Event": "event"}


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "<none>" if value is None else ""
    return str(value)


def print_table(tbl: dict, wide: bool, namespaced: bool, show_labels: bool, headers: bool,
                kind: str = "", columns: Optional[list] = None) -> None:
    from .output import table
    cols = columns or tbl.get("columnDefinitions") or []
    keep = [i for i, c in enumerate(cols) if wide or c.get("priority", 0) == 0]
    head = ([("NAMESPACE")] if namespaced else []) + [cols[i]["name"].upper() for i in keep]
    if show_labels:
        head.append("LABELS")
    rows = []
    for row in tbl.get("rows") or []:
        md = (row.get("object") or {}).get("metadata") or {}
        cells = ([md.get("namespace", "")] if namespaced else []) + [_cell(row["cells"][i]) for i in keep]
        if show_labels:
            labels = md.get("labels") or {}
            cells.append(",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "<none>")
        rows.append(cells)
    if not rows and headers:
        sys.stdout.write("No resources found.\n")
        return
    text = table(head, rows)
    lines = text.splitlines()
    sys.stdout.write("\n".join(lines if headers else lines[1:]) + ("\n" if lines[1 if not headers else 0:] else ""))
    sys.stdout.flush()


def _watch(lab: str, path: str, rv: str, output: str, first: Optional[dict], all_ns: bool,
           show_labels: bool) -> None:
    """Print each change as it comes, like kubectl get -w, until interrupted."""
    sep = "&" if "?" in path else "?"
    columns = (first or {}).get("columnDefinitions")
    while True:
        accept = TABLE_ACCEPT if first is not None else "application/json"
        reply = request(lab, f"{path}{sep}{urlencode({'watch': '1', 'resourceVersion': rv})}", accept)
        for event in reply.get("events", []):
            obj = event["object"]
            if first is not None:
                print_table(obj, output == "wide", all_ns and not path.startswith(("/api/v1/nodes",
                                                                                   "/api/v1/namespaces?")),
                            show_labels, headers=False, columns=columns)
            else:
                emit_objects([obj], output, single=True)
        rv = reply.get("resourceVersion", rv)
        time.sleep(0.5)
