"""graph: a picture of the running lab (Graphviz)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from .common import LabOption, lab_name
from .main import app


@app.command()
def graph(output: str = typer.Option("svg", "--output", "-o", help="svg, png, dot or mermaid."),
          file: Optional[Path] = typer.Option(None, "--file", "-f", help="Write here instead of stdout."),
          stable: bool = typer.Option(False, "--stable", help="Name an RC's pods <rc>-xxxxx (for committed pictures)."),
          lab: Optional[str] = LabOption) -> None:
    """Draw the running lab: nodes with their bridge, overlay and pods, the underlay, the
    outside client and internet host, Services with arrows to their endpoints."""
    from .. import engine
    from .. import graph as g
    from ..probe.lab import LabView

    if output not in ("svg", "png", "dot", "mermaid"):
        raise typer.BadParameter("must be svg, png, dot or mermaid", param_hint="--output")
    engine.require_root()
    topo = g.describe(LabView.load(lab_name(lab)), stable=stable)
    if output == "mermaid":
        data = g.to_mermaid(topo).encode()
    elif output == "dot":
        data = g.to_dot(topo).encode()
    else:
        data = g.render(g.to_dot(topo), output)
    if file:
        file.write_bytes(data)
    else:
        sys.stdout.buffer.write(data)
