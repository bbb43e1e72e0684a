"""Lab lifecycle: up, down, clean, list, status."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from .common import LabOption, lab_name
from .main import app
from .output import table


def _progress_printer():
    """A rich progress bar on stderr when it is a terminal, one line per phase otherwise."""
    import sys
    if not sys.stderr.isatty():         # a log or a pipe: plain lines, and no rich to import
        last = {"phase": None}

        def plain(phase: str, done: int, total: int) -> None:
            if phase != last["phase"]:
                print(f"  {phase} ...", file=sys.stderr, flush=True)
                last["phase"] = phase
        return plain, None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    console = Console(stderr=True)
    bar = Progress(TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=console, transient=True)
    tasks: dict[str, int] = {}

    def update(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = bar.add_task(phase, total=max(total, 1))
        bar.update(tasks[phase], completed=done, total=max(total, 1))
    return update, bar


@app.command()
def up(lab_dir: Path = typer.Argument(..., help="Lab directory (lab.yaml + manifests) or one manifest file."),
       name: Optional[str] = typer.Option(None, "--name", help="Lab name (default: lab.yaml's, or the directory's)."),
       nodes: Optional[int] = typer.Option(None, "--nodes", min=1, max=250, help="Number of nodes."),
       backend: Optional[str] = typer.Option(None, "--backend", help="Cross-node backend: vxlan, host-gw, udp (flannel0 + flanneld) or calico (routed, BIRD + BGP)."),
       proxy_mode: Optional[str] = typer.Option(None, "--proxy-mode", help="kube-proxy mode: iptables or userspace."),
       timeout: float = typer.Option(60.0, help="Seconds to wait for the pods to start (and serve)."),
       wait_ready: bool = typer.Option(False, "--wait-ready",
                                       help="Fail unless every pod serves (is Ready) within --timeout."),
       ) -> None:
    """Build a lab: nodes, pods, the pod network, Services; returns when pods serve."""
    import contextlib
    from .. import engine

    from ..model.errors import LabError

    engine.check_timeout(timeout)        # before anything is built
    started = time.monotonic()
    progress, bar = _progress_printer()
    try:
        with bar if bar is not None else contextlib.nullcontext():
            report: dict = {}
            cluster = engine.up(lab_dir, name=name, nodes=nodes, backend=backend,
                                proxy_mode=proxy_mode, progress=progress, wait=timeout,
                                wait_ready=wait_ready, report=report)
    except LabError as exc:
        _show_kept_logs(getattr(exc, "kept_logs", None))
        raise
    cfg = cluster.config
    typer.echo(f"lab {cluster.name} is up in {time.monotonic() - started:.1f}s: "
               f"{len(cluster.nodes)} nodes ({cfg.backend_label}), {len(cluster.pods)} pods, "
               f"{len(cluster.services)} services, kube-proxy {cfg.proxy_mode} mode")
    typer.echo(table(["NODE", "INTERNAL-IP", "POD-CIDR", "PODS"],
                     [[n.name, n.internal_ip, n.pod_cidr, len(cluster.pods_on(n.name))] for n in cluster.nodes]))
    for key, why in sorted(report.get("notReady", {}).items()):
        typer.echo(f"not ready: pod {key}: {why}")
    if report.get("bgp"):
        typer.echo(f"BGP not converged: {report['bgp']}; see `netlab verify` (bgp-sessions, bgp-routes)")
    typer.echo(f"\nnext: netlab get pods -o wide | netlab verify | netlab down {cluster.name}")


def _show_kept_logs(kept) -> None:
    """After a failed `up`: the end of the agent's log, and which logs were kept where."""
    import sys
    from .. import state
    if kept is None:
        return
    lines = state.tail(kept / "agent.log", 15)
    print(f"last lines of {kept / 'agent.log'}:" + ("" if lines else " (it is empty)"), file=sys.stderr)
    for line in lines:
        print(f"  {line}", file=sys.stderr)
    # The last events of the pods that never served: usually the reason itself.
    pods = (state.read_json(kept / "status.json") or {}).get("pods", {}) if (kept / "status.json").exists() else {}
    for key, st in sorted(pods.items()):
        if not st.get("serving"):
            for event in st.get("events", [])[-3:]:
                print(f"  {key}: {event.get('reason')}: {event.get('message')}", file=sys.stderr)
    logs = sorted(p.name for p in (kept / "logs").glob("*.log")) if (kept / "logs").is_dir() else []
    if logs:
        print(f"container logs in {kept / 'logs'}/: {', '.join(logs)}", file=sys.stderr)


@app.command()
def down(lab: Optional[str] = typer.Argument(None, help="Lab name (default: the only running lab).")) -> None:
    """Remove every trace of a lab: processes, namespaces, devices, rules, state."""
    from .. import engine
    name = lab_name(lab)
    removed = engine.down(name)
    typer.echo(f"lab {name} removed ({removed['namespaces']} namespaces, {removed['processes']} processes)")
    _report_skipped(removed)


def _report_skipped(removed: dict) -> None:
    if removed.get("skipped"):
        typer.echo(f"left alone (named like lab {removed['lab']} but not carrying its mark): "
                   f"{', '.join(removed['skipped'])}", err=True)


@app.command()
def clean(lab: Optional[str] = typer.Argument(None, help="Only this lab (default: every lab on this machine).")) -> None:
    """Remove everything netlab labs left on this machine (and nothing else); with LAB, only that lab's."""
    from .. import engine
    removed = engine.clean(lab)
    if not removed:
        typer.echo("nothing to clean")
    for r in removed:
        typer.echo(f"removed lab {r['lab']} ({r['namespaces']} namespaces, {r['processes']} processes)")
        _report_skipped(r)


@app.command("list")
def list_labs() -> None:
    """List the labs on this machine."""
    from .. import labs, state
    from ..runtime import agent_client
    rows = []
    for name in labs.running_labs():
        data = state.read_json(state.state_file(name)) or {}
        spec = (data.get("lab") or {}).get("spec") or {}
        pods = sum(1 for o in data.get("objects", []) if o.get("kind") == "Pod")
        agent = agent_client.agent_state(name)[0]
        rows.append([name, len(spec.get("nodes", [])), pods, spec.get("backend", "?"),
                     spec.get("proxyMode", "?"), agent, len(labs.lab_namespaces(name))])
    typer.echo(table(["LAB", "NODES", "PODS", "BACKEND", "PROXY", "AGENT", "NETNS"], rows)
               if rows else "no labs")


@app.command()
def status(lab: Optional[str] = LabOption) -> None:
    """Is the lab healthy: agent alive, pods running, namespaces present."""
    from .. import engine
    from ..runtime import agent_client
    name = lab_name(lab)
    cluster = engine.load(name)
    how, pid = agent_client.agent_state(name)
    live = agent_client.live_status(name) if how == "running" else {}
    pods = live.get("pods", {})
    running = sum(1 for k in cluster.pods if pods.get(k, {}).get("phase") == "Running")
    missing = [n for n in (p.netns for p in cluster.nodes) if n not in engine.lab_namespaces(name)]
    typer.echo(f"lab:    {name}")
    typer.echo("agent:  " + {"running": f"running (pid {pid})",
                             "stopped": f"stopped (pid {pid}): it answers nothing; `kill -CONT {pid}` "
                                        f"or `netlab agent restart`",
                             "gone": "gone: restart it with `netlab agent restart`"}[how])
    typer.echo(f"pods:   {running}/{len(cluster.pods)} running")
    typer.echo(f"nodes:  {len(cluster.nodes) - len(missing)}/{len(cluster.nodes)} present"
               + (f" (missing: {', '.join(missing)})" if missing else ""))
    daemons = live.get("daemons", {})
    down = [k for k, d in daemons.items() if d["state"] != "Running"]
    for key, d in sorted(daemons.items()):
        typer.echo(f"daemon: {key} {d['state'].lower()}" + (f" (pid {d['pid']})" if d["pid"] else "")
                   + (f", {d['restartCount']} restarts" if d["restartCount"] else ""))
    if how != "running" or missing or down or running < len(cluster.pods):
        raise typer.Exit(1)
