"""`verify --matrix`: every pod to every other pod and to every service, like Mininet's
pingall for the Kubernetes model.

A destination pod is tried on its first declared TCP port: GET /hostname where netexec
serves it (the answer must be that pod's name, so a wrong pod answering counts as a
failure), a plain TCP connect otherwise; a pod without a TCP port gets an ICMP echo.
Services with endpoints (in the model) are tried at ClusterIP:port. Probes run on
a bounded pool of threads, each of which enters the source pod's namespace before a probe.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from ..kernel import netns
from ..model.objects import Pod
from . import sockets
from .lab import LabView, pod_hostname

WORKERS = 48
TIMEOUT = 1.0
# Test servers listen with a backlog of 5: more SYNs at once than they accept get dropped,
# and the retry comes a second later. Keep the probes to any one destination below that.
PER_DESTINATION = 4


@dataclass(frozen=True)
class Column:
    key: str                # "default/a" or "svc default/web:80"
    ip: str
    port: int               # 0 for ICMP
    how: str                # http | tcp | icmp
    expect: str = ""        # the hostname an HTTP /hostname answer must carry

    @property
    def target(self) -> str:
        return f"{self.ip}:{self.port} {self.how}" if self.port else f"{self.ip} icmp"


@dataclass
class Cell:
    src: str
    dst: str
    ok: bool
    seen: str
    policy: str = ""        # calico labs with NetworkPolicy: "allowed" or "denied" (then ok = dropped)


@dataclass
class Matrix:
    sources: list[str]
    columns: list[Column]
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    workers: int = 0

    def failed(self) -> list[Cell]:
        return [c for c in self.cells.values() if not c.ok]

    def counts(self, services: bool) -> tuple[int, int]:
        chosen = [c for c in self.cells.values() if c.dst.startswith("svc ") == services]
        return sum(c.ok for c in chosen), len(chosen)

    def to_json(self) -> dict:
        return {"seconds": round(self.seconds, 3), "sources": self.sources, "notes": self.notes,
                "columns": [{"key": c.key, "target": c.target} for c in self.columns],
                "pairs": [vars(c) for c in self.cells.values()]}


def pod_column(view: LabView, pod: Pod) -> Column:
    ports = view.tcp_ports(pod)
    if not ports:
        return Column(pod.meta.key, pod.pod_ip, 0, "icmp")
    if view.serves_netexec(pod, ports[0]):
        return Column(pod.meta.key, pod.pod_ip, ports[0], "http", pod_hostname(pod))
    return Column(pod.meta.key, pod.pod_ip, ports[0], "tcp")


def columns(view: LabView, notes: list[str]) -> list[Column]:
    cols = [pod_column(view, p) for p in view.pods]
    for svc, port in view.service_ports("TCP"):
        if view.endpoints(svc, port):
            cols.append(Column(f"svc {svc.meta.key}:{port.port}", svc.cluster_ip, port.port, "tcp"))
        else:
            notes.append(f"svc {svc.meta.key}:{port.port} left out: no endpoints")
    skipped = [f"{s.meta.key}:{p.port}" for s, p in view.service_ports("UDP")]
    if skipped:
        notes.append(f"UDP service ports left out: {', '.join(skipped)}")
    return cols


def probe(col: Column, timeout: float) -> sockets.Outcome:
    """One probe from the calling thread's namespace."""
    if col.how == "icmp":
        return sockets.attempt_ping(col.ip, timeout)
    if col.how == "tcp":
        return sockets.attempt_tcp(col.ip, col.port, timeout)
    out = sockets.attempt_http(col.ip, col.port, "/hostname", timeout)
    if out.ok and out.body != col.expect:
        return sockets.Outcome(False, f"answered by {out.body!r}, not {col.expect!r}")
    return out


def run(view: LabView, workers: int = WORKERS, timeout: float = TIMEOUT,
        progress: Callable[[int, int], None] = lambda *_: None) -> Matrix:
    notes: list[str] = []
    cols = columns(view, notes)
    result = Matrix([p.meta.key for p in view.pods], cols, notes=notes)
    # Diagonal order (source i with column i+k, for k = 0, 1, ...): the probes in flight at any
    # moment go to different destinations.
    pairs = [(src, cols[(i + k) % len(cols)]) for k in range(len(cols)) for i, src in enumerate(view.pods)
             if cols[(i + k) % len(cols)].key != src.meta.key]
    gates = {col.key: threading.BoundedSemaphore(PER_DESTINATION) for col in cols}

    verdicts = policy_verdicts(view, cols)

    def task(src: Pod, col: Column) -> Cell:
        netns.enter(view.netns(src))        # pool threads are ours: they may move between pods
        with gates[col.key]:
            out = probe(col, timeout)
        verdict = verdicts(src, col)
        if verdict == "denied":             # Felix drops it: the right outcome is no answer
            return Cell(src.meta.key, col.key, not out.ok and out.seen.startswith("no answer"),
                        out.seen if out.ok else "denied by NetworkPolicy: " + out.seen, verdict)
        return Cell(src.meta.key, col.key, out.ok, out.seen, verdict)

    result.workers = max(1, min(workers, len(pairs)))
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=result.workers, thread_name_prefix="matrix") as pool:
        futures = [pool.submit(task, src, col) for src, col in pairs]
        for done, future in enumerate(futures, 1):
            cell = future.result()
            result.cells[(cell.src, cell.dst)] = cell
            progress(done, len(futures))
    result.seconds = time.perf_counter() - started
    return result


def policy_verdicts(view: LabView, cols: list[Column]) -> Callable[[Pod, Column], str]:
    """What the lab's NetworkPolicies say of a pair (calico and Canal enforce them): "allowed",
    "denied", or "" (no policy, another backend, or a service whose endpoints differ)."""
    cluster = view.cluster
    if not cluster.policies or not cluster.config.calico_pods:
        return lambda src, col: ""
    from ..model.netpol import decide
    by_key = {p.meta.key: p for p in view.pods}

    def verdict(src: Pod, col: Column) -> str:
        if col.key in by_key:
            dst = by_key[col.key]
            proto = "TCP" if col.port else "ICMP"
            return "allowed" if decide(cluster, src.pod_ip, src, dst.pod_ip, dst, col.port, proto).allowed else "denied"
        svc_key, _, port = col.key[4:].rpartition(":")
        svc = cluster.services.get(svc_key)
        sp = next((p for p in svc.ports if p.port == int(port)), None) if svc else None
        eps = view.endpoints(svc, sp) if sp else []
        seen = {decide(cluster, src.pod_ip, src, e.ip, by_key.get(e.pod), e.port).allowed for e in eps}
        return "" if len(seen) != 1 else ("allowed" if seen.pop() else "denied")
    return verdict


def render(console, m: Matrix, show_failures: int = 20) -> None:
    """Rows are sources, columns destinations (numbered; the legend names them)."""
    from rich.table import Table
    from rich.text import Text

    grid = Table(box=None, padding=(0, 1), title="reachability: rows send, columns receive",
                 title_justify="left")
    grid.add_column("SOURCE", no_wrap=True)
    for i, _ in enumerate(m.columns, 1):
        grid.add_column(str(i), justify="center", no_wrap=True)
    for src in m.sources:
        row = []
        for col in m.columns:
            cell = m.cells.get((src, col.key))
            row.append("[dim]·[/]" if cell is None else "[red]✗[/]" if not cell.ok
                       else "[yellow]⊘[/]" if cell.policy == "denied" else "[green]✓[/]")
        grid.add_row(src, *row)
    console.print(grid)
    lines = [f"  {i:>3} {col.key} ({col.target})" for i, col in enumerate(m.columns, 1)]
    lines += [f"  note: {note}" for note in m.notes]
    if any(c.policy for c in m.cells.values()):
        lines.append("  ⊘ denied by NetworkPolicy, and dropped as Calico drops it (no answer); "
                     "✓ reached (allowed); ✗ not what the policies say")
    failed = m.failed()
    lines += [f"  ✗ {cell.src} -> {cell.dst}: {cell.seen}" for cell in failed[:show_failures]]
    if len(failed) > show_failures:
        lines.append(f"  ... and {len(failed) - show_failures} more failures")
    ok_p, all_p = m.counts(False)
    ok_s, all_s = m.counts(True)
    lines.append(f"pod -> pod {ok_p}/{all_p} ok, pod -> service {ok_s}/{all_s} ok, "
                 f"in {m.seconds:.2f}s ({m.workers} threads)")
    for line in lines:
        console.print(Text(line), soft_wrap=True)
