"""Run a list of checks against a lab, one after the other (their probes must not overlap:
counters, captures and socket tables would see each other's traffic)."""
from __future__ import annotations

from typing import Callable

from .catalog import Check
from .lab import LabView
from .result import CheckResult, Status

Progress = Callable[[str, int, int], None]


def run(view: LabView, checks: list[Check], progress: Progress = lambda *_: None) -> list[CheckResult]:
    results = []
    for i, check in enumerate(checks):
        progress(check.id, i, len(checks))
        results.append(check.run(view))
    progress("done", len(checks), len(checks))
    return results


def all_passed(results: list[CheckResult]) -> bool:
    """Every applicable check passed (n/a ones neither pass nor fail)."""
    return all(r.status != Status.FAIL for r in results)
