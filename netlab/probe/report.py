"""Verify results as a rich table (people), JSON (scripts) or JUnit XML (CI: one testcase per
check, n/a as skipped, the evidence as system-out). Each check shows the kind of evidence it
rests on (packet, socket or state), and each probe line its own kind."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .result import CheckResult, Kind, Probe, Status

STYLE = {Status.PASS: "bold green", Status.FAIL: "bold red", Status.NA: "dim"}


def probe_line(p: Probe) -> str:
    return f"{'ok ' if p.ok else 'BAD'} {Kind(p.kind).value:<6} {p.src} -> {p.dst} [{p.sent}]: {p.seen}"


def tally(results: list[CheckResult]) -> str:
    counts = Counter(r.status for r in results)
    return f"{counts[Status.PASS]} passed, {counts[Status.FAIL]} failed, {counts[Status.NA]} n/a"


def table(console: Console, lab: str, results: list[CheckResult], seconds: float, evidence: bool) -> None:
    grid = Table(title=f"netlab verify: lab {lab}", title_justify="left", expand=False)
    grid.add_column("CHECK", no_wrap=True)
    grid.add_column("RESULT", no_wrap=True)
    grid.add_column("EVIDENCE", no_wrap=True)
    grid.add_column("TIME", justify="right", no_wrap=True)
    grid.add_column("WHAT WAS SEEN")
    for r in results:
        grid.add_row(r.id, Text(r.status.value.upper(), style=STYLE[r.status]), Kind(r.evidence).value,
                     f"{r.seconds:.2f}s" if r.status != Status.NA else "", Text(r.summary))
    console.print(grid)
    for r in results:
        if r.probes and (evidence or r.status == Status.FAIL):
            console.print(Text.assemble((r.id, "bold"), "  ", (f"{r.claim} ({r.source})", "dim")))
            for p in r.probes:
                console.print(Text(f"  {probe_line(p)}", style="green" if p.ok else "red"), soft_wrap=True)
    console.print(Text(f"{tally(results)} in {seconds:.1f}s"))


def to_json(lab: str, results: list[CheckResult], seconds: float) -> str:
    return json.dumps({"lab": lab, "seconds": round(seconds, 3), "summary": tally(results),
                       "passed": all(r.status != Status.FAIL for r in results),
                       "checks": [r.to_json() for r in results]}, indent=2)


def to_junit(lab: str, results: list[CheckResult], seconds: float) -> str:
    counts = Counter(r.status for r in results)
    suite = ET.Element("testsuite", name=f"netlab verify {lab}", tests=str(len(results)),
                       failures=str(counts[Status.FAIL]), errors="0", skipped=str(counts[Status.NA]),
                       time=f"{seconds:.3f}")
    for r in results:
        case = ET.SubElement(suite, "testcase", classname=f"netlab.{lab}", name=r.id, time=f"{r.seconds:.3f}")
        props = ET.SubElement(case, "properties")
        ET.SubElement(props, "property", name="evidence", value=Kind(r.evidence).value)
        if r.status == Status.FAIL:
            ET.SubElement(case, "failure", message=r.summary).text = r.claim
        elif r.status == Status.NA:
            ET.SubElement(case, "skipped", message=r.summary)
        if r.probes:
            ET.SubElement(case, "system-out").text = "\n".join(probe_line(p) for p in r.probes)
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"
