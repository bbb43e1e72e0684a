"""A node's live iptables rules with their packet counters, read with iptables-legacy-save -c.

One save per read (a few milliseconds) gives every rule of a table in the order the kernel
evaluates it, with counters; comparing two reads shows which rules a probe's packets hit.
"""
from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass, field

from ..model.errors import StateError

SAVE = "iptables-legacy-save"


@dataclass(frozen=True)
class Rule:
    table: str
    chain: str
    index: int                  # 1-based position in its chain, as `iptables -L --line-numbers`
    packets: int
    args: tuple[str, ...]       # everything after `-A CHAIN`

    @property
    def target(self) -> str:
        """The -j target, or the chain of a goto (-g, Felix's dispatch chains use them)."""
        for flag in ("-j", "-g"):
            if flag in self.args:
                return self.args[self.args.index(flag) + 1]
        return ""

    @property
    def goto(self) -> bool:
        return "-g" in self.args and "-j" not in self.args

    @property
    def text(self) -> str:
        return shlex.join(self.args)

    @property
    def key(self) -> tuple[str, str, int, tuple[str, ...]]:
        return self.table, self.chain, self.index, self.args


@dataclass
class Table:
    name: str
    chains: dict[str, list[Rule]] = field(default_factory=dict)    # built-in and user chains

    def rules(self) -> list[Rule]:
        return [r for chain in self.chains.values() for r in chain]


def parse(text: str) -> dict[str, Table]:
    """iptables-save -c output -> {table: Table}."""
    tables: dict[str, Table] = {}
    current: Table | None = None
    for line in text.splitlines():
        if line.startswith("*"):
            current = tables.setdefault(line[1:].strip(), Table(line[1:].strip()))
        elif line.startswith(":") and current is not None:
            current.chains.setdefault(line[1:].split(" ", 1)[0], [])
        elif line.startswith("[") and current is not None:
            counters, _, rest = line.partition("] ")
            tokens = shlex.split(rest)
            if len(tokens) < 2 or tokens[0] != "-A":
                continue
            chain = current.chains.setdefault(tokens[1], [])
            chain.append(Rule(current.name, tokens[1], len(chain) + 1,
                              int(counters[1:].split(":")[0]), tuple(tokens[2:])))
    return tables


class Unreadable(StateError):
    """A table's rules could not be read: nothing may be concluded from them (never 'empty')."""


def read(netns: str, tables: tuple[str, ...] = ("nat", "filter")) -> dict[str, Table]:
    """The tables of a namespace (iptables-save loads a table it is asked for, so one
    iptables never touched comes back with its built-in chains and no rules). A save that
    fails, or prints no such table, raises Unreadable."""
    found: dict[str, Table] = {}
    for table in tables:
        argv = ["nsenter", f"--net=/run/netns/{netns}", SAVE, "-c", "-t", table]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise Unreadable(f"cannot read the {table} table of {netns}: {exc}") from None
        parsed = parse(proc.stdout).get(table)
        if proc.returncode != 0 or parsed is None:
            lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}, no *{table} in its output"]
            why = lines[-1]
            raise Unreadable(f"cannot read the {table} table of {netns}: {SAVE}: {why}")
        found[table] = parsed
    return found


def moved(before: dict[str, Table], after: dict[str, Table]) -> list[tuple[Rule, int]]:
    """Rules whose packet counter went up between two reads, with how many packets."""
    old = {r.key: r.packets for t in before.values() for r in t.rules()}
    return [(r, r.packets - old.get(r.key, 0)) for t in after.values() for r in t.rules()
            if r.packets > old.get(r.key, 0)]
