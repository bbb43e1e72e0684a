"""Options shared by many commands."""
from __future__ import annotations

from typing import Optional

import typer

LabOption = typer.Option(None, "--lab", "-L", help="The lab to act on (default: the only running lab).")
NamespaceOption = typer.Option("default", "--namespace", "-n", help="Kubernetes namespace.")
AllNamespacesOption = typer.Option(False, "--all-namespaces", "-A", help="All namespaces.")
OutputOption = typer.Option("table", "--output", "-o", help="Output format: wide, json, yaml, name, jsonpath=TEMPLATE or custom-columns=SPEC.")


def lab_name(lab: Optional[str]) -> str:
    from ..labs import resolve_lab
    return resolve_lab(lab)
