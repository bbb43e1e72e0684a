"""exec and logs: step inside a pod, a node, the outside client or the internet host."""
from __future__ import annotations

import os
from typing import List, Optional

import typer

from .common import LabOption, NamespaceOption, lab_name
from .main import app


def pod_exec_argv(holder_pid: int, command: List[str]) -> list[str]:
    """nsenter into the pod's namespaces (those of its holder, as containers share them)."""
    return ["nsenter", f"--target={holder_pid}", "--net", "--uts", "--ipc", "--pid", "--mount",
            "--wd=/", *command]


@app.command("exec", context_settings={"allow_interspersed_args": False})
def exec_(target: Optional[str] = typer.Argument(None, help="Pod name (omit with --node/--client/--internet)."),
          command: List[str] = typer.Argument(..., help="Command to run, after --."),
          container: Optional[str] = typer.Option(None, "--container", "-c", help="Container (its environment is used)."),
          node: Optional[str] = typer.Option(None, "--node", help="Run in this node's network namespace."),
          client: bool = typer.Option(False, "--client", help="Run in the outside client's namespace."),
          internet: bool = typer.Option(False, "--internet", help="Run on the simulated internet host."),
          lab: Optional[str] = LabOption, namespace: str = NamespaceOption) -> None:
    """Run a command inside a pod (all its namespaces), a node, the outside client or the internet."""
    from .. import engine
    from ..model import names
    from ..model.errors import LabError, StateError
    name = lab_name(lab)
    chosen = [x for x in (target and not (node or client or internet), node, client, internet) if x]
    if len(chosen) != 1:
        raise LabError("give exactly one of: a pod name, --node NODE, --client, --internet")
    cluster = engine.load(name)
    env = None
    if node or client or internet:
        if target:
            command = [target, *command]
        ns = (cluster.node(node).netns if node else
              names.client_netns(name) if client else names.internet_netns(name))
        argv = ["ip", "netns", "exec", ns, *command]
    else:
        pod = cluster.pod(target, namespace)
        st = engine.pod_status(name).get(pod.meta.key, {})
        holder = st.get("holderPid")
        if not holder:
            raise StateError(f'pod "{target}" has no running sandbox (phase {st.get("phase", "Pending")})')
        names_in_pod = [c.name for c in pod.spec.containers]
        if container and container not in names_in_pod:
            raise LabError(f'container {container} is not valid for pod {target} (containers: {", ".join(names_in_pod)})')
        cname = container or names_in_pod[0]
        # The container's environment as the agent set it when the container started.
        env = next((c.get("env") for c in st.get("containers", []) if c["name"] == cname), None) or None
        argv = pod_exec_argv(holder, command)
    os.execvpe(argv[0], argv, env if env is not None else os.environ)


@app.command()
def logs(pod: str = typer.Argument(..., help="Pod name."),
         container: Optional[str] = typer.Option(None, "--container", "-c", help="Container (default: the first)."),
         tail: int = typer.Option(-1, "--tail", help="Lines from the end (-1: all)."),
         lab: Optional[str] = LabOption, namespace: str = NamespaceOption) -> None:
    """Print a container's stdout and stderr."""
    from .. import engine, state
    from ..model.errors import LabError
    name = lab_name(lab)
    p = engine.load(name).pod(pod, namespace)
    names_in_pod = [c.name for c in p.spec.containers]
    if container and container not in names_in_pod:
        raise LabError(f'container {container} is not valid for pod {pod} (containers: {", ".join(names_in_pod)})')
    if not container and len(names_in_pod) > 1:
        raise LabError(f"a container name must be specified for pod {pod}, choose one of: [{' '.join(names_in_pod)}]")
    path = state.container_log(name, namespace, pod, container or names_in_pod[0])
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        text = ""
    lines = text.splitlines(keepends=True)
    typer.echo("".join(lines[-tail:] if tail >= 0 else lines), nl=False)
