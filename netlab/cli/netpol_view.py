"""`get networkpolicies`: NAME POD-SELECTOR AGE, as kubectl prints them."""
from __future__ import annotations

import typer

from .output import age, as_list, emit, table

RESOURCES = {"networkpolicies": "networkpolicies", "networkpolicy": "networkpolicies",
             "netpol": "networkpolicies"}
KINDS = ("networkpolicies",)


def get(cluster, objs, output: str, all_namespaces: bool) -> None:
    from ..model.cluster import to_manifest
    if output in ("json", "yaml"):
        emit(as_list([to_manifest(p) for p in objs]), output)
        return
    if output == "name":
        typer.echo("\n".join(f"networkpolicy.networking.k8s.io/{p.meta.name}" for p in objs))
        return
    nscol = ["NAMESPACE"] if all_namespaces else []
    rows = [([p.meta.namespace] if all_namespaces else [])
            + [p.meta.name, str(p.pod_selector) or "<none>", age(p.created)] for p in objs]
    typer.echo(table(nscol + ["NAME", "POD-SELECTOR", "AGE"], rows))
