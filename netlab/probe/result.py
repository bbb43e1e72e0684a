"""What a check reports: a status, one line saying why, the kind of evidence it rests on, and
the probes that back it up.

Evidence comes in three kinds, strongest first:
  packet  a frame crafted or captured on the wire (scapy probe, capture)
  socket  a real exchange through the kernel's stack (a connect, a datagram and its reply)
  state   a read of kernel state (rules, routes, FDB, namespaces, a process's environment)
A check declares the kind its claim needs; it can pass only with at least one probe of that
kind or a stronger one (a packet check that sent no packet proved nothing).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum


class Status(str, Enum):
    PASS = "pass"
    FAIL = "fail"
    NA = "n/a"


class Kind(str, Enum):
    PACKET = "packet"
    SOCKET = "socket"
    STATE = "state"

    @property
    def strength(self) -> int:
        return {Kind.STATE: 0, Kind.SOCKET: 1, Kind.PACKET: 2}[self]


PACKET, SOCKET, STATE = Kind.PACKET, Kind.SOCKET, Kind.STATE


@dataclass
class Probe:
    """One exchange (or one read): what was sent from where to where, and what came back."""

    src: str            # "pod default/a 10.244.1.2" / "client 192.168.56.2"
    dst: str            # "10.96.0.3:6379 (service default/redis-master)"
    sent: str           # "TCP connect" / "GET /hostname" / "capture on ul-1234 (12 pkts max)"
    seen: str           # what came back: an answer, an error, a packet summary
    ok: bool
    kind: Kind = SOCKET

    def to_json(self) -> dict:
        data = asdict(self)
        data["kind"] = Kind(self.kind).value
        return data


@dataclass
class CheckResult:
    id: str
    claim: str
    source: str
    status: Status
    summary: str                    # why: "expected X, seen Y" on failure, the requirement on n/a
    probes: list[Probe] = field(default_factory=list)
    seconds: float = 0.0
    evidence: Kind = SOCKET         # the kind of evidence the check rests on

    def to_json(self) -> dict:
        return {"id": self.id, "claim": self.claim, "source": self.source, "status": self.status.value,
                "evidence": Kind(self.evidence).value, "summary": self.summary,
                "probes": [p.to_json() for p in self.probes], "seconds": self.seconds}


class Evidence:
    """Collects probes while a check runs; the check's verdict follows from them.

    `kind` is the kind the check needs (and the default kind of what it adds)."""

    def __init__(self, kind: Kind = SOCKET) -> None:
        self.kind = Kind(kind)
        self.probes: list[Probe] = []
        self.failures: list[str] = []
        self.notes: list[str] = []

    def add(self, src: str, dst: str, sent: str, seen: str, ok: bool, expected: str = "",
            kind: Kind | None = None) -> bool:
        self.probes.append(Probe(src, dst, sent, seen, ok, Kind(kind or self.kind)))
        if not ok:
            self.failures.append(f"{src} -> {dst}: expected {expected or 'success'}, seen {seen}")
        return ok

    def read(self, src: str, dst: str, what: str, seen: str, ok: bool, expected: str = "") -> bool:
        """A read of kernel state (rules, routes, /proc): evidence of kind state."""
        return self.add(src, dst, what, seen, ok, expected, kind=STATE)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def _noted(self) -> str:
        return f" ({'; '.join(self.notes)})" if self.notes else ""

    def verdict(self, success: str) -> tuple[Status, str]:
        if self.failures:
            more = f" (+{len(self.failures) - 1} more)" if len(self.failures) > 1 else ""
            return Status.FAIL, self.failures[0] + more
        if not self.probes:
            # A check that sent nothing proved nothing: never report that as a pass.
            return Status.FAIL, ("nothing could be read" if self.kind == STATE else "no probe could be sent") \
                + self._noted()
        if not any(p.kind.strength >= self.kind.strength for p in self.probes):
            # Reading the rules is not sending a packet: a traffic claim needs traffic.
            return Status.FAIL, f"no {self.kind.value} probe was made, only reads of kernel state" + self._noted()
        return Status.PASS, success + self._noted()
