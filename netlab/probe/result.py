"""What a check reports: a status, one line saying why, and the probes that back it up."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum


class Status(str, Enum):
    PASS = "pass"
    FAIL = "fail"
    NA = "n/a"


@dataclass
class Probe:
    """One exchange: what was sent from where to where, and what came back."""

    src: str            # "pod default/a 10.244.1.2" / "client 192.168.56.2"
    dst: str            # "10.96.0.3:6379 (service default/redis-master)"
    sent: str           # "TCP connect" / "GET /hostname" / "capture on ul-1234 (12 pkts max)"
    seen: str           # what came back: an answer, an error, a packet summary
    ok: bool


@dataclass
class CheckResult:
    id: str
    claim: str
    source: str
    status: Status
    summary: str                    # why: "expected X, seen Y" on failure, the requirement on n/a
    probes: list[Probe] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict:
        data = asdict(self)
        data["status"] = self.status.value
        return data


class Evidence:
    """Collects probes while a check runs; the check's verdict follows from them."""

    def __init__(self) -> None:
        self.probes: list[Probe] = []
        self.failures: list[str] = []
        self.notes: list[str] = []

    def add(self, src: str, dst: str, sent: str, seen: str, ok: bool, expected: str = "") -> bool:
        self.probes.append(Probe(src, dst, sent, seen, ok))
        if not ok:
            self.failures.append(f"{src} -> {dst}: expected {expected or 'success'}, seen {seen}")
        return ok

    def note(self, text: str) -> None:
        self.notes.append(text)

    def verdict(self, success: str) -> tuple[Status, str]:
        if self.failures:
            more = f" (+{len(self.failures) - 1} more)" if len(self.failures) > 1 else ""
            return Status.FAIL, self.failures[0] + more
        if not self.probes:
            # A check that sent nothing proved nothing: never report that as a pass.
            return Status.FAIL, "no probe could be sent" + (f" ({'; '.join(self.notes)})" if self.notes else "")
        return Status.PASS, success + (f" ({'; '.join(self.notes)})" if self.notes else "")
