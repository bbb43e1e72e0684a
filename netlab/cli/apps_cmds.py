"""apps/v1 workloads from the command line: `get deploy|rs|ds|sts` (as the lab's API serves them)
and `rollout status|history|undo`. Thin: the agent's controllers do the work."""
from __future__ import annotations

from typing import Optional
from urllib.parse import quote

import typer

from .common import LabOption, NamespaceOption, lab_name
from .main import app
from .output import as_list, emit, table
from ..rollout import rollout_state, wait_rollout

RESOURCES = {
    "deployments": "deployments", "deployment": "deployments", "deploy": "deployments",
    "replicasets": "replicasets", "replicaset": "replicasets", "rs": "replicasets",
    "daemonsets": "daemonsets", "daemonset": "daemonsets", "ds": "daemonsets",
    "statefulsets": "statefulsets", "statefulset": "statefulsets", "sts": "statefulsets",
}
for _short, _res in list(RESOURCES.items()):
    RESOURCES[f"{_short}.apps"] = _res
SINGULAR = {"deployments": "deployment.apps", "replicasets": "replicaset.apps",
            "daemonsets": "daemonset.apps", "statefulsets": "statefulset.apps"}


def handles(kind: str) -> bool:
    return kind.lower() in RESOURCES


def _call(lab: str, method: str, path: str, body=None):
    from ..runtime import agent_client
    return agent_client.call(lab, method, path, body)


def get(kind: str, name: Optional[str], lab: Optional[str], namespace: str, all_namespaces: bool,
        output: str) -> None:
    from ..model.errors import LabError
    res = RESOURCES[kind.lower()]
    where = "" if all_namespaces else f"/namespaces/{quote(namespace, safe='')}"
    path = f"/apis/apps/v1{where}/{res}" + (f"/{quote(name, safe='')}" if name else "")
    reply = _call(lab_name(lab), "GET", path)
    docs = [reply] if name else reply["items"]
    if output in ("json", "yaml"):
        emit(docs[0] if name else as_list(docs), output)
        return
    if output == "name":
        typer.echo("\n".join(f"{SINGULAR[res]}/{d['metadata']['name']}" for d in docs))
        return
    if output not in ("table", "wide"):
        raise LabError(f"unknown output format {output!r} for {res} (table, wide, json, yaml, name)")
    ns = (lambda d: [d["metadata"]["namespace"]]) if all_namespaces else (lambda d: [])
    nscol = ["NAMESPACE"] if all_namespaces else []
    if res == "deployments":
        headers = ["NAME", "READY", "UP-TO-DATE", "AVAILABLE"]
        rows = [[d["metadata"]["name"], f'{d["status"]["readyReplicas"]}/{d["spec"]["replicas"]}',
                 d["status"]["updatedReplicas"], d["status"]["availableReplicas"]] for d in docs]
    elif res == "replicasets":
        headers = ["NAME", "DESIRED", "CURRENT", "READY"]
        rows = [[d["metadata"]["name"], d["spec"]["replicas"], d["status"]["replicas"],
                 d["status"]["readyReplicas"]] for d in docs]
    elif res == "daemonsets":
        headers = ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE SELECTOR"]
        rows = [[d["metadata"]["name"], s["desiredNumberScheduled"], s["currentNumberScheduled"], s["numberReady"],
                 s["updatedNumberScheduled"], s["numberAvailable"],
                 ",".join(f"{k}={v}" for k, v in ((d["spec"]["template"].get("spec") or {}).get("nodeSelector")
                                                  or {}).items()) or "<none>"]
                for d in docs for s in [d["status"]]]
    else:
        headers = ["NAME", "READY"]
        rows = [[d["metadata"]["name"], f'{d["status"]["readyReplicas"]}/{d["spec"]["replicas"]}'] for d in docs]
    if output == "wide":
        headers = headers + ["CONTAINERS", "IMAGES", "SELECTOR"]
        rows = [r + [",".join(c["name"] for c in d["spec"]["template"]["spec"]["containers"]),
                     ",".join(c.get("image", "") for c in d["spec"]["template"]["spec"]["containers"]),
                     ",".join(f"{k}={v}" for k, v in (d["spec"]["selector"].get("matchLabels") or {}).items())]
                for r, d in zip(rows, docs)]
    typer.echo(table(nscol + headers, [ns(d) + r for d, r in zip(docs, rows)]))


rollout_app = typer.Typer(help="Follow and undo the rollouts of Deployments (also DaemonSets, StatefulSets).",
                          no_args_is_help=True)
app.add_typer(rollout_app, name="rollout")


def _target(what: str, name: Optional[str]) -> tuple[str, str]:
    from ..model.errors import LabError
    kind, _, rest = what.partition("/")
    name = rest or name
    if not name or kind.lower() not in RESOURCES or RESOURCES[kind.lower()] == "replicasets":
        raise LabError(f"expected deployment/NAME, daemonset/NAME or statefulset/NAME, got {what!r}")
    return RESOURCES[kind.lower()], name


@rollout_app.command("status")
def status(what: str = typer.Argument(..., help="deployment/NAME (or daemonset/, statefulset/)"),
           name: Optional[str] = typer.Argument(None),
           timeout: float = typer.Option(300.0, "--timeout", help="Seconds to wait."),
           watch: bool = typer.Option(True, "--watch/--no-watch", "-w", help="Wait until it is done."),
           lab: Optional[str] = LabOption, namespace: str = NamespaceOption) -> None:
    """Wait until the rollout is complete, printing its progress as kubectl does."""
    res, name = _target(what, name)
    lab = lab_name(lab)
    if not watch:
        typer.echo(rollout_state(lab, res, name, namespace)["message"])
        return
    wait_rollout(lab, res, name, namespace, timeout, typer.echo)


@rollout_app.command("history")
def history(what: str = typer.Argument(..., help="deployment/NAME"), name: Optional[str] = typer.Argument(None),
            lab: Optional[str] = LabOption, namespace: str = NamespaceOption) -> None:
    """The Deployment's revisions (its ReplicaSets), oldest first."""
    res, name = _target(what, name)
    st = rollout_state(lab_name(lab), res, name, namespace)
    typer.echo(f"{SINGULAR[res]}/{name}")
    typer.echo(table(["REVISION", "REPLICASET", "IMAGES", "CHANGE-CAUSE"],
                     [[h["revision"], h["name"], ",".join(h["images"]), h["changeCause"] or "<none>"]
                      for h in st["history"]]))


@rollout_app.command("undo")
def undo(what: str = typer.Argument(..., help="deployment/NAME"), name: Optional[str] = typer.Argument(None),
         to_revision: int = typer.Option(0, "--to-revision", help="The revision to go back to (default: the previous)."),
         lab: Optional[str] = LabOption, namespace: str = NamespaceOption) -> None:
    """Roll back to an earlier revision; the agent rolls it out as any update."""
    res, name = _target(what, name)
    reply = _call(lab_name(lab), "POST", f"/apis/netlab.io/v1/namespaces/{quote(namespace, safe='')}/deployments/"
                                         f"{quote(name, safe='')}/rollback", {"toRevision": to_revision})
    typer.echo(reply["message"])
