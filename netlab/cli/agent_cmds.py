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


@app.command()
def kubeconfig(lab: Optional[str] = LabOption,
               timeout: float = typer.Option(15.0, "--timeout", help="Seconds to wait for the listener.")) -> None:
    """Print the path of the lab's kubeconfig, for the real kubectl:
    KUBECONFIG=$(netlab kubeconfig) kubectl get pods. The lab's API listens on 127.0.0.1
    (TLS with the lab's own CA, a bearer token); the file is 0600 and root's."""
    import time
    from ..model.errors import StateError
    from ..runtime import agent_client
    from ..runtime.kubeapi_paths import kubeconfig_path, listening
    name = lab_name(lab)
    agent_client.require_agent(name)
    deadline = time.monotonic() + timeout
    while not listening(name):
        if time.monotonic() > deadline:
            raise StateError(f"the API listener of lab {name} did not come up within {timeout:.0f}s; "
                             f"see `netlab status --lab {name}` (daemon apiserver/host)")
        time.sleep(0.05)
    typer.echo(str(kubeconfig_path(name)))
