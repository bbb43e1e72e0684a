"""verify and trace: prove the lab's network with packets, and follow one packet through it."""
from __future__ import annotations

import sys
import time
from typing import Optional

import typer

from .common import LabOption, lab_name
from .main import app

VERIFY_FORMATS = ("table", "json", "junit")


def _console():
    from rich.console import Console
    return Console()


def _progress(total_label: str):
    """(callback, context manager): a transient bar on a terminal's stderr, nothing otherwise."""
    from contextlib import nullcontext

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    err = Console(stderr=True)
    if not err.is_terminal:
        return (lambda *_: None), nullcontext()
    bar = Progress(TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=err, transient=True)
    task = bar.add_task(total_label, total=None)

    def update(label: str, done: int, total: int) -> None:
        bar.update(task, description=label, completed=done, total=max(total, 1))
    return update, bar


@app.command()
def verify(check_ids: Optional[list[str]] = typer.Argument(
               None, help="Checks to run (ids, or a prefix like 'dns-*'); default: all."),
           output: str = typer.Option("table", "--output", "-o", help="table, json or junit."),
           lab: Optional[str] = LabOption,
           matrix: bool = typer.Option(False, "--matrix", help="Probe every pod pair and pod -> service instead."),
           evidence: bool = typer.Option(False, "--evidence", "-e", help="Show every probe, not only failed ones."),
           list_checks: bool = typer.Option(False, "--list", help="List the checks and exit (no lab needed)."),
           disruptive: bool = typer.Option(False, "--disruptive", help="Also run the checks that break a "
                                           "workload of their own on purpose (controllers, proxy retry)."),
           ) -> None:
    """Prove the lab behaves as Kubernetes networking is documented, with real packets.

    Whether a check applies comes from the lab's model; missing or unreadable kube-proxy
    rules fail the service checks. Each check shows its evidence: packet (captured on the
    wire), socket (a real exchange) or state (a read of rules, routes, /proc).
    Exit code 0 only when every applicable check passed (n/a checks do not count)."""
    from ..probe import catalog

    if output not in VERIFY_FORMATS:
        raise typer.BadParameter(f"must be one of {', '.join(VERIFY_FORMATS)}", param_hint="--output")
    chosen = catalog.select(check_ids, disruptive=disruptive)
    if list_checks:
        for c in chosen:
            typer.echo(f"{c.id:<22} {c.claim}\n{'':<22} source: {c.source}; needs {c.needs}; "
                       f"evidence: {c.evidence.value}")
        return
    from .. import engine
    from ..probe.lab import load_settled

    engine.require_root()
    view, settled = load_settled(lab_name(lab))
    if not settled:
        typer.echo("note: pods not all ready, or kube-proxy's rules behind them; verifying as it is", err=True)
    if matrix:
        _matrix(view, output)
        return
    from ..probe import report, runner

    update, bar = _progress("checks")
    started = time.perf_counter()
    with bar:
        results = runner.run(view, chosen, update)
    seconds = time.perf_counter() - started
    if output == "json":
        typer.echo(report.to_json(view.name, results, seconds))
    elif output == "junit":
        sys.stdout.write(report.to_junit(view.name, results, seconds))
    else:
        report.table(_console(), view.name, results, seconds, evidence)
    if not runner.all_passed(results):
        raise typer.Exit(1)


def _matrix(view, output: str) -> None:
    import json

    from ..probe import matrix

    update, bar = _progress("pairs")
    with bar:
        m = matrix.run(view, progress=lambda done, total: update("pairs", done, total))
    if output == "json":
        typer.echo(json.dumps(m.to_json(), indent=2))
    elif output == "junit":
        raise typer.BadParameter("--matrix prints a table or json", param_hint="--output")
    else:
        matrix.render(_console(), m)
    if m.failed():
        raise typer.Exit(1)


@app.command()
def trace(src: str = typer.Argument(..., help="Source pod (NAME or NAMESPACE/NAME), or 'client' (outside)."),
          dst: str = typer.Argument(..., help="Pod name or IP, service name or ClusterIP, nodeIP:nodePort, "
                                              "load-balancer IP or an internet address; :PORT optional."),
          namespace: str = typer.Option("default", "--namespace", "-n", help="Namespace of bare pod/service names."),
          output: str = typer.Option("text", "--output", "-o", help="text or json."),
          probe: bool = typer.Option(True, "--probe/--no-probe", help="Confirm with one real connection."),
          lab: Optional[str] = LabOption,
          ingress: bool = typer.Option(False, "--ingress", help="DST is HOST/PATH: both legs through the "
                                                                "Ingress controller."),
          ) -> None:
    """Walk a packet from SRC to DST through the lab's live routes, iptables rules and overlay,
    then send one real connection and show which rules' counters moved."""
    import json

    from .. import engine
    from ..probe import trace as tracer
    from ..probe.lab import LabView

    if output not in ("text", "json"):
        raise typer.BadParameter("must be text or json", param_hint="--output")
    engine.require_root()
    view = LabView.load(lab_name(lab))
    if ingress:
        from ..probe.ingress_trace import trace_ingress
        said, legs = trace_ingress(view, src, dst, confirm=probe)
        typer.echo(f"the Ingress rules: {said}")
        for i, leg in enumerate(legs):
            typer.echo(f"\nleg {min(i, 1) + 1}: " + ("to the controller" if i == 0 else "from nginx to the backend"))
            tracer.render(_console(), leg)
        if probe and not all(leg.confirmed for leg in legs):
            raise typer.Exit(1)
        return
    result = tracer.trace(view, src, dst, namespace=namespace, confirm=probe)
    if output == "json":
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        tracer.render(_console(), result)
    if probe and not result.confirmed:
        raise typer.Exit(1)
