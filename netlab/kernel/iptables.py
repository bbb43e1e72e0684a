"""iptables inside a named network namespace: apply with iptables-restore, read back rules.

Everything runs in a namespace under /run/netns, never in the caller's own: commands go
through `nsenter --net=/run/netns/NAME`, and python-iptables is used in a forked child that
has entered the namespace first (it caches tables per process, and its libiptc handle reads
whichever namespace the process is in). The legacy backend is used throughout, the only one
python-iptables speaks, so iptables-legacy-save and the reader see the same rules.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from netlab.kernel import netns as namespaces
from netlab.model.errors import LabError, NotFoundError, StateError
from netlab.plan.kubeproxy import Jump, render_jumps

RESTORE = "iptables-legacy-restore"
SAVE = "iptables-legacy-save"
CONTEXT_LINES = 3
RUN_TIMEOUT = 30.0
_FAILED_LINE = re.compile(r"line:?\s+(\d+)")


class IptablesError(LabError):
    """iptables-restore refused its input; `lines` shows the offending line in context."""

    def __init__(self, message: str, *, netns: str, lines: Sequence[str] = ()):
        self.netns = netns
        self.lines = list(lines)
        detail = "\n".join(self.lines)
        super().__init__(f"{message}\n{detail}" if detail else message, obj=f"netns/{netns}")


# ---------------------------------------------------------------------- running commands


def require_netns(name: str) -> str:
    """/run/netns/NAME, refusing anything that is not an existing named namespace.

    Netlab's own namespace (the host's, for netlab on a host) is refused even under a name,
    as `ip netns attach NAME <pid>` would give it.
    """
    if not name or "/" in name or name in (".", ".."):
        raise LabError(f"not a network namespace name: {name!r}")
    path = Path(namespaces.NETNS_DIR) / name
    if not path.exists():
        raise NotFoundError(f'network namespace "{name}" not found')
    if path.stat().st_ino == namespaces.host_netns_inode():
        raise LabError(f'network namespace "{name}" is netlab\'s own: its rules stay untouched')
    return str(path)


def _run(netns: str, argv: Sequence[str], stdin: Optional[str] = None) -> subprocess.CompletedProcess:
    cmd = ["nsenter", f"--net={require_netns(netns)}", "--", *argv]
    try:      # bounded: the agent runs this and must always come back to reap and answer
        return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise StateError(f"{argv[0]} in {netns} did not finish within {RUN_TIMEOUT:g}s") from None


def context(text: str, line_no: int, around: int = CONTEXT_LINES) -> list[str]:
    """Numbered lines around line_no (1-based), the offending one marked with '>'."""
    lines = text.splitlines()
    first, last = max(1, line_no - around), min(len(lines), line_no + around)
    return [f"{'>' if n == line_no else ' '} {n:5d} | {lines[n - 1]}" for n in range(first, last + 1)]


def restore(netns: str, text: str, noflush: bool = True) -> None:
    """Apply iptables-restore input inside netns.

    Each table is committed atomically at its COMMIT line: when a line fails, that table keeps
    the rules it had (tables committed earlier in the same input stay applied).
    """
    argv = [RESTORE, "-w"] + (["--noflush"] if noflush else [])
    proc = _run(netns, argv, text)
    if proc.returncode == 0:
        return
    message = proc.stderr.strip().splitlines()
    found = _FAILED_LINE.search(proc.stderr)
    lines = context(text, int(found.group(1))) if found else []
    first = next((m for m in message if m and not m.startswith("Try `")), "failed")
    raise IptablesError(f"{RESTORE} failed: {first}", netns=netns, lines=lines)


def save(netns: str, table: Optional[str] = None) -> str:
    """iptables-legacy-save output of netns (all tables, or one)."""
    proc = _run(netns, [SAVE] + (["-t", table] if table else []))
    if proc.returncode != 0:
        raise IptablesError(f"{SAVE} failed: {proc.stderr.strip()}", netns=netns)
    return proc.stdout


# ---------------------------------------------------------------------- jumps


def _tables(saved: str) -> dict[str, str]:
    """iptables-save output split into {table: its lines, each line between newlines}."""
    tables = {}
    for block in ("\n" + saved).split("\n*")[1:]:
        name, _, body = block.partition("\n")
        tables[name] = "\n" + body
    return tables


def missing_jumps_text(saved: str, jumps: Sequence[Jump]) -> str:
    """Restore input adding the jumps absent from `saved`, and any chain they need; "" if none.

    A jump counts as present when iptables-save prints exactly its rule, the check `-C` makes.
    Missing target chains are declared only when absent, since declaring an existing chain
    under --noflush would flush it. (Substring search: the saved text can hold 20,000 rules.)
    """
    existing = _tables(saved)
    out: dict[str, list[str]] = {}
    for jump in jumps:
        body = existing.get(jump.table, "")
        if f"\n-A {jump.chain} {jump.spec}\n" in body:
            continue
        lines = out.setdefault(jump.table, [])
        declare = f":{jump.target} - [0:0]"
        if f"\n:{jump.target} " not in body and declare not in lines:
            lines.append(declare)
        where = f"-I {jump.chain} 1" if jump.prepend else f"-A {jump.chain}"
        lines.append(f"{where} {jump.spec}")
    return "".join(f"*{table}\n" + "\n".join(lines) + "\nCOMMIT\n" for table, lines in out.items())


def ensure_jumps(netns: str, jumps: Optional[Sequence[Jump]] = None) -> int:
    """Add the built-in-chain jumps that are missing; return how many rules were written.

    One iptables-save and at most one iptables-restore instead of a `-C`/`-I` pair per jump:
    each iptables call reloads the whole table, which is slow with thousands of rules.
    """
    jumps = render_jumps() if jumps is None else jumps
    text = missing_jumps_text(save(netns), jumps)
    if text:
        restore(netns, text)
    return sum(1 for line in text.splitlines() if line.startswith(("-I ", "-A ")))


def sync_node(netns: str, text: str, jumps: Optional[Sequence[Jump]] = None) -> None:
    """A kube-proxy-like sync: make sure the jumps exist, then restore the rendered rules.

    Jumps first, as kube-proxy does: on a fresh node they go in while the tables are still
    small (legacy iptables rewrites a whole table for any change). Pass jumps=() on a partial
    sync: like kube-proxy, only full syncs check them.
    """
    if jumps is None or jumps:
        ensure_jumps(netns, jumps)
    restore(netns, text)


# ---------------------------------------------------------------------- reading back


@dataclass
class Rule:
    """One rule as the kernel holds it, with its counters."""

    chain: str
    src: Optional[str]                  # "10.244.0.0/16", "!10.244.0.0/16", None for any
    dst: Optional[str]
    protocol: Optional[str]
    matches: list[dict[str, Any]]       # [{"name": "comment", "comment": ["..."]}, ...]
    target: str
    target_params: dict[str, list[str]] = field(default_factory=dict)
    packets: int = 0
    bytes: int = 0

    def match(self, name: str) -> Optional[dict[str, Any]]:
        return next((m for m in self.matches if m["name"] == name), None)

    @property
    def comment(self) -> Optional[str]:
        m = self.match("comment")
        return " ".join(m["comment"]) if m else None


def _in_netns(name: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Run fn(*args) in a forked child that entered netns; its JSON result comes over a pipe."""
    require_netns(name)   # fail here, in the caller, for a bad name
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:   # the child must report and exit, never return into the caller's code
        try:
            os.close(read_fd)
            try:
                namespaces.enter(name)
                payload = json.dumps({"result": fn(*args)})
            except BaseException as exc:
                payload = json.dumps({"error": f"{type(exc).__name__}: {exc}"})
            with os.fdopen(write_fd, "w") as out:
                out.write(payload)
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as inp:
        data = inp.read()
    os.waitpid(pid, 0)
    reply = json.loads(data) if data else {"error": "reader process died"}
    if "error" in reply:
        raise LabError(f"reading iptables in {name}: {reply['error']}")
    return reply["result"]


def _cidr(value: str) -> Optional[str]:
    """python-iptables gives "10.0.0.0/255.0.0.0" (maybe "!"-prefixed); print it as a CIDR."""
    neg = value.startswith("!")
    addr, _, mask = value.lstrip("!").partition("/")
    if addr == "0.0.0.0" and mask in ("0.0.0.0", ""):
        return None
    prefix = bin(int.from_bytes(bytes(int(x) for x in mask.split(".")), "big")).count("1") if mask else 32
    return f"{'!' if neg else ''}{addr}/{prefix}"


def _table(name: str) -> Any:
    import iptc   # imported in the child, after setns
    table = iptc.Table(name)
    table.refresh()     # a fresh libiptc handle, opened in this namespace
    return table


def _read_rules(table_name: str, counters: bool) -> list[dict]:
    rules = []
    for chain in _table(table_name).chains:
        for rule in chain.rules:
            packets, nbytes = rule.get_counters() if counters else (0, 0)
            rules.append({
                "chain": chain.name, "src": _cidr(rule.src), "dst": _cidr(rule.dst),
                "protocol": None if rule.protocol == "ip" else rule.protocol,
                "matches": [{"name": m.name, **m.get_all_parameters()} for m in rule.matches],
                "target": rule.target.name if rule.target else "",
                "target_params": rule.target.get_all_parameters() if rule.target else {},
                "packets": packets, "bytes": nbytes,
            })
    return rules


def _list_chains(table_name: str) -> list[str]:
    return [chain.name for chain in _table(table_name).chains]


def read_rules(netns: str, table: str = "nat", counters: bool = True) -> list[Rule]:
    """Every rule of `table` in netns, chain by chain, with packet and byte counters."""
    return [Rule(**r) for r in _in_netns(netns, _read_rules, table, counters)]


def list_chains(netns: str, table: str = "nat") -> list[str]:
    """Every chain of `table` in netns, built-in ones included."""
    return _in_netns(netns, _list_chains, table)
