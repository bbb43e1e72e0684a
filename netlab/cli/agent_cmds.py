"""netlab agent: the per-lab supervisor's own lifecycle."""
from __future__ import annotations

from typing import Optional

import typer

from .common import LabOption, lab_name
from .main import app

agent_app = typer.Typer(help="The lab's agent (kubelet, controllers and proxy in one process).",
                        no_args_is_help=True, rich_markup_mode=None)
app.add_typer(agent_app, name="agent")


@agent_app.command()
def restart(lab: Optional[str] = LabOption) -> None:
    """Start a new agent for a running lab without rebuilding its network."""
    from .. import engine
    name = lab_name(lab)
    typer.echo(f"agent of lab {name} running again (pid {engine.restart_agent(name)})")


@agent_app.command()
def status(lab: Optional[str] = LabOption) -> None:
    """Whether the agent runs."""
    from ..runtime import agent_client
    name = lab_name(lab)
    how, pid = agent_client.agent_state(name)
    typer.echo({"running": f"running (pid {pid})",
                "stopped": f"stopped (pid {pid}): `kill -CONT {pid}` or `netlab agent restart`",
                "gone": "gone: `netlab agent restart`"}[how])
    if how != "running":
        raise typer.Exit(1)
