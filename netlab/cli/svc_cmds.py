"""Changing a running lab (apply, delete, scale) and looking at kube-proxy's rules."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import LabOption, NamespaceOption, lab_name
from .main import app
from .output import table


@app.command("apply")
def apply_(filename: Path = typer.Option(..., "--filename", "-f", help="Manifest file or directory."),
           lab: Optional[str] = LabOption) -> None:
    """Create or update objects (Pods, RCs, Deployments, Services, ...) in a running lab."""
    from .. import engine
    from ..model.loader import load_objects
    name = lab_name(lab)
    for line in engine.apply(name, load_objects(filename)):
        typer.echo(line)


@app.command()
def delete(kind: str = typer.Argument(..., help="pod, svc, rc or namespace."),
           name: str = typer.Argument(...), lab: Optional[str] = LabOption,
           namespace: str = NamespaceOption) -> None:
    """Delete an object; endpoints and every node's rules follow."""
    from .. import engine
    from .get_cmds import _resource
    for line in engine.delete(lab_name(lab), _resource(kind), name, namespace):
        typer.echo(line)


@app.command()
def scale(kind: str = typer.Argument(..., help="rc, deployment, replicaset or statefulset"), name: str = typer.Argument(...),
          replicas: int = typer.Option(..., "--replicas", help="Desired number of pods."),
          lab: Optional[str] = LabOption, namespace: str = NamespaceOption) -> None:
    """Set the replicas of an RC, Deployment, ReplicaSet or StatefulSet; pods follow."""
    from .. import engine
    from ..model.errors import InvalidError, LabError
    from .get_cmds import _resource
    resource = _resource(kind)
    if resource not in ("rcs", "deployments", "replicasets", "statefulsets"):
        raise LabError("scale supports replicationcontrollers (rc), deployments, replicasets and statefulsets")
    if replicas < 0:
        raise InvalidError("must be greater than or equal to 0", value=replicas, field="--replicas")
    typer.echo(engine.scale(lab_name(lab), name, replicas, namespace, resource))


@app.command()
def iptables(node: str = typer.Argument(..., help="Node name."),
             counters: bool = typer.Option(False, "--counters", "-c", help="Show packet and byte counters."),
             table_name: str = typer.Option("nat", "--table", "-t", help="nat or filter."),
             all_chains: bool = typer.Option(False, "--all", help="Include built-in chains, not only kube-proxy's."),
             lab: Optional[str] = LabOption) -> None:
    """A node's kube-proxy chains, read back from the kernel (with counters)."""
    from .. import engine
    from ..kernel.iptables import read_rules
    cluster = engine.load(lab_name(lab))
    rules = read_rules(cluster.node(node).netns, table=table_name, counters=counters)
    ours = ("KUBE-", "FLANNEL-")
    rows = []
    for r in rules:
        if not all_chains and not r.chain.startswith(ours) and not r.target.startswith(ours):
            continue
        row = [r.chain, rule_text(r)]
        if counters:
            row = [r.packets, r.bytes] + row
        rows.append(row)
    headers = (["PKTS", "BYTES"] if counters else []) + ["CHAIN", "RULE"]
    typer.echo(table(headers, rows))


def rule_text(rule) -> str:
    """A rule in iptables-save's words, from what python-iptables read back."""
    parts = []
    if rule.protocol:
        parts.append(f"-p {rule.protocol}")
    for flag, value in (("-s", rule.src), ("-d", rule.dst)):
        if value:
            parts.append(f"! {flag} {value[1:]}" if value.startswith("!") else f"{flag} {value}")
    for m in rule.matches:
        args = " ".join(f"--{k.replace('_', '-')} {' '.join(v) if isinstance(v, list) else v}".rstrip()
                        for k, v in m.items() if k != "name")
        parts.append(f"-m {m['name']} {args}".rstrip())
    target = " ".join(f"--{k.replace('_', '-')} {' '.join(v)}".rstrip() for k, v in rule.target_params.items())
    parts.append(f"-j {rule.target} {target}".rstrip())
    return " ".join(parts)


@app.command("rolling-update")
def rolling_update(old: str = typer.Argument(..., help="The ReplicationController to replace."),
                   filename: Path = typer.Option(..., "--filename", "-f", help="The new RC's manifest."),
                   timeout: float = typer.Option(60.0, help="Seconds each step may take to serve."),
                   lab: Optional[str] = LabOption, namespace: str = NamespaceOption) -> None:
    """Replace an RC's pods one by one with a new RC's (new +1, old -1), as kubectl once did."""
    from .. import engine
    from ..model.errors import LabError
    from ..model.loader import load_objects
    from ..model.objects import ReplicationController
    rcs = [o for o in load_objects(filename) if isinstance(o, ReplicationController)]
    if len(rcs) != 1:
        raise LabError(f"{filename}: needs exactly one ReplicationController (found {len(rcs)})")
    engine.rolling_update(lab_name(lab), old, rcs[0], namespace, say=typer.echo, timeout=timeout)
