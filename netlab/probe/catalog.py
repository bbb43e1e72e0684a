"""The verify catalog: each check is a claim from the documents, a predicate saying whether
the lab has what the claim is about (read from the lab's model, never from what the kernel
happens to hold: a broken data plane must fail, not make checks n/a), the kind of evidence
the claim needs (packet, socket or state), and a probe that gathers it.

Check modules register with @check; `catalog()` imports them in a fixed order (the order of
the report: pods, overlay, services, outside, discovery).
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from ..model.errors import InvalidError
from .lab import LabView
from .result import SOCKET, CheckResult, Evidence, Kind, Status

_MODULES = ("pods", "overlay", "calico", "services", "outside", "ingress", "discovery", "controllers")
_REGISTRY: list["Check"] = []


@dataclass(frozen=True)
class Check:
    id: str
    claim: str                              # the claim, in plain words
    source: str                             # the document (and section) it comes from
    needs: str                              # what a lab needs for the check to apply
    applies: Callable[[LabView], bool]
    probe: Callable[[LabView, Evidence], str]   # sends traffic, records it, returns the pass line
    disruptive: bool = False                # breaks something (of its own) on purpose: opt-in
    evidence: Kind = SOCKET                 # the kind of evidence the claim needs (result.Kind)

    def run(self, view: LabView) -> CheckResult:
        started = time.perf_counter()
        result = CheckResult(self.id, self.claim, self.source, Status.NA, f"needs {self.needs}",
                             evidence=self.evidence)
        evidence = Evidence(self.evidence)
        try:
            if self.applies(view):
                passed = self.probe(view, evidence)
                result.status, result.summary = evidence.verdict(passed)
        except Exception as exc:        # a probe that cannot run is a failure, never a pass
            result.status, result.summary = Status.FAIL, f"could not run: {type(exc).__name__}: {exc}"
        result.probes = evidence.probes
        result.seconds = time.perf_counter() - started
        return result


def check(id: str, claim: str, source: str, needs: str, applies: Callable[[LabView], bool],
          disruptive: bool = False, evidence: Kind = SOCKET):
    def register(probe: Callable[[LabView, Evidence], str]) -> Callable[[LabView, Evidence], str]:
        _REGISTRY.append(Check(id, claim, source, needs, applies, probe, disruptive, Kind(evidence)))
        return probe
    return register


def catalog() -> list[Check]:
    for name in _MODULES:
        importlib.import_module(f"{__package__}.checks.{name}")
    return list(_REGISTRY)


def select(ids: Optional[Iterable[str]] = None, disruptive: bool = False) -> list[Check]:
    """The checks named (an id, or a prefix ending in '*' such as dns-*), or all of them; the
    disruptive ones only when named or asked for."""
    checks = catalog()
    if not ids:
        return [c for c in checks if disruptive or not c.disruptive]
    chosen: list[Check] = []
    for wanted in ids:
        if wanted.endswith("*"):
            found = [c for c in checks if c.id.startswith(wanted[:-1])]
        else:
            found = [c for c in checks if c.id == wanted]
        if not found:
            raise InvalidError(f"no such check (known: {', '.join(c.id for c in checks)})", value=wanted)
        chosen += [c for c in found if c not in chosen]
    return chosen
