"""netlab node: nodes joining and leaving a running lab (the lab's agent does the work)."""
from __future__ import annotations

from typing import List, Optional

import typer

from .common import LabOption, lab_name
from .main import app

node_app = typer.Typer(help="Add a node to a running lab, or drain one and remove it.",
                       no_args_is_help=True, rich_markup_mode=None)
app.add_typer(node_app, name="node")


def _labels(pairs: List[str]) -> dict:
    from ..model.errors import InvalidError
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidError("must look like KEY=VALUE", value=pair, field="--label")
        out[key] = value
    return out


@node_app.command("add")
def add(name: Optional[str] = typer.Argument(None, help="The new node's name (default: node<k>, the lowest free)."),
        label: List[str] = typer.Option([], "--label", "-l", help="A node label KEY=VALUE (repeatable)."),
        timeout: float = typer.Option(30.0, "--timeout", help="Seconds to wait for its daemons (and BGP)."),
        lab: Optional[str] = LabOption) -> None:
    """Add a node: its namespace, underlay port, pod network and daemons; every other node
    learns the way to it (routes, VTEP, flanneld's table or a BGP peer). New pods can land on it."""
    from .. import engine
    node = engine.add_node(lab_name(lab), name, _labels(label), wait=engine.check_timeout(timeout))
    ip = next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")
    typer.echo(f'node/{node["metadata"]["name"]} added: internal IP {ip}, pod CIDR {node["spec"]["podCIDR"]}')
    if node.get("notConverged"):
        missing = node["notConverged"]
        typer.echo(f"BGP not converged yet: {len(missing)} routes missing ({', '.join(missing[:3])})")


@node_app.command("remove")
def remove(name: str = typer.Argument(..., help="The node to remove."), lab: Optional[str] = LabOption) -> None:
    """Drain a node (its pods are deleted; their controllers recreate them on the other nodes)
    and remove it, with everything that pointed at it."""
    from .. import engine
    gone = engine.remove_node(lab_name(lab), name)
    typer.echo(f"node/{name} removed" + (f"; pods deleted: {', '.join(gone)}" if gone else ""))
