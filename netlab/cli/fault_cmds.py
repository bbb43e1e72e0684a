"""netlab fault: break the lab the way the documents describe, and heal it."""
from __future__ import annotations

from typing import Optional

import typer

from .common import LabOption, NamespaceOption, lab_name
from .main import app

fault_app = typer.Typer(help="Inject failures (kill, stop-server, cut-link, node-down) and heal them.",
                        no_args_is_help=True, rich_markup_mode=None)
app.add_typer(fault_app, name="fault")


@fault_app.command("kill")
def kill(pod: str, container: Optional[str] = typer.Option(None, "--container", "-c"),
         lab: Optional[str] = LabOption, namespace: str = NamespaceOption) -> None:
    """Kill a container's process; its restartPolicy decides what happens next."""
    from .. import engine
    typer.echo(engine.inject_fault(lab_name(lab), "kill", pod, namespace, container))


@fault_app.command("stop-server")
def stop_server(pod: str, lab: Optional[str] = LabOption, namespace: str = NamespaceOption) -> None:
    """Keep the pod running but make its server answer nothing (new connections time out)."""
    from .. import engine
    typer.echo(engine.inject_fault(lab_name(lab), "stop-server", pod, namespace))


@fault_app.command("cut-link")
def cut_link(node: str, grace: float = typer.Option(10.0, help="Seconds before its pods are evicted."),
             lab: Optional[str] = LabOption) -> None:
    """Pull a node's cable to the underlay."""
    from .. import engine
    typer.echo(engine.inject_fault(lab_name(lab), "cut-link", node, grace=grace))


@fault_app.command("node-down")
def node_down(node: str, grace: float = typer.Option(10.0, help="Seconds before its pods are evicted."),
              lab: Optional[str] = LabOption) -> None:
    """Stop a node: its link is cut and its pods freeze; after the grace period the RCs replace them."""
    from .. import engine
    typer.echo(engine.inject_fault(lab_name(lab), "node-down", node, grace=grace))


@fault_app.command("stop-daemon")
def stop_daemon(node: str = typer.Argument(..., help="Node name."),
                daemon: str = typer.Argument(..., help="The node daemon, e.g. kube-proxy (see `netlab status`)."),
                lab: Optional[str] = LabOption) -> None:
    """Stop a node daemon (kube-proxy in userspace mode, ...) until `fault heal`."""
    from .. import engine
    typer.echo(engine.inject_fault(lab_name(lab), "stop-daemon", node, container=daemon))


@fault_app.command("stop-bird")
def stop_bird(node: str = typer.Argument(..., help="Node name."), lab: Optional[str] = LabOption) -> None:
    """backend calico: stop a node's BIRD until `fault heal`; its peers drop the session and
    withdraw its blocks, so its pods become unreachable from other nodes."""
    from .. import engine
    typer.echo(engine.inject_fault(lab_name(lab), "stop-daemon", node, container="bird"))


@fault_app.command("heal")
def heal(lab: Optional[str] = LabOption) -> None:
    """Undo every injected fault."""
    from .. import engine
    for line in engine.heal_faults(lab_name(lab)):
        typer.echo(line)


@fault_app.command("list")
def list_faults(lab: Optional[str] = LabOption) -> None:
    """Faults in force."""
    from .. import faults
    recorded = faults.read(lab_name(lab))
    rows = [f"node {n}: {f['kind']}{' (pods evicted)' if f.get('evicted') else ''}" for n, f in recorded["nodes"].items()]
    rows += [f"pod {k}: {f['kind']}" for k, f in recorded["pods"].items()]
    rows += [f"daemon {k}: stopped" for k in recorded.get("daemons", {})]
    typer.echo("\n".join(rows) if rows else "no faults")
