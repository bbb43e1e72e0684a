"""Evaluate a node's live iptables rules for one packet, the way the kernel walks them.

Only the first packet of a connection is walked (that is the one the nat table sees). The
matches kube-proxy and flannel use are understood: addresses, protocol and ports,
interfaces, addrtype LOCAL, mark, conntrack state (NEW, and DNAT once translated), statistic
random (the walk forks, each branch with its probability) and recent (no earlier entry is
assumed: a first connection). A rule with a match it does not know is taken as not matching
and says so, rather than guessing.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from typing import Optional

from .rules import Rule, Table

TERMINAL = {"ACCEPT", "DROP", "REJECT", "DNAT", "SNAT", "MASQUERADE", "REDIRECT"}
MAX_DEPTH = 16


@dataclass(frozen=True)
class Packet:
    src: str
    dst: str
    proto: str = "tcp"
    dport: int = 0
    mark: int = 0
    dnat: bool = False          # translated already (conntrack's DNAT status)
    masquerade: bool = False    # to be rewritten to the outgoing device's address


@dataclass(frozen=True)
class Where:
    local: frozenset[str]       # the node's own addresses (addrtype LOCAL)
    iif: str = ""
    oif: str = ""
    # ipsets of the namespace (calico's policy selectors): name -> (type, members)
    sets: Optional[dict] = field(default=None, compare=False, hash=False)


@dataclass
class Outcome:
    chance: float
    packet: Packet
    verdict: str                # ACCEPT (a policy or fell through), DROP, REJECT, DNAT, MASQUERADE, ...
    lines: list[str] = field(default_factory=list)
    hit: list[Rule] = field(default_factory=list)


def _in(addr: str, cidr: str) -> bool:
    return ipaddress.ip_address(addr) in ipaddress.ip_network(cidr, strict=False)


def _iface(pattern: str, name: str) -> bool:
    return name.startswith(pattern[:-1]) if pattern.endswith("+") else name == pattern


def _mark(value: str) -> tuple[int, int]:
    v, _, m = value.partition("/")
    return int(v, 0), int(m, 0) if m else 0xFFFFFFFF


def match(rule: Rule, pkt: Packet, where: Where) -> tuple[Optional[bool], float, str]:
    """(matches?, probability, note): None when a match is unknown; probability < 1 for
    statistic random (the rule then matches with that chance)."""
    end = next((rule.args.index(f) for f in ("-j", "-g") if f in rule.args), len(rule.args))
    args = list(rule.args[:end])
    chance, note, negate, i = 1.0, "", False, 0
    while i < len(args):
        opt = args[i]
        if opt == "!":
            negate, i = True, i + 1
            continue
        value = args[i + 1] if i + 1 < len(args) else ""
        if opt == "-m":
            i += 2
            continue
        if opt in ("-s", "--source", "-d", "--destination"):
            ok = _in(pkt.src if opt in ("-s", "--source") else pkt.dst, value)
        elif opt in ("-p", "--protocol"):
            ok = value == pkt.proto
        elif opt == "--dport":
            lo, _, hi = value.partition(":")
            ok = int(lo) <= pkt.dport <= int(hi or lo)
        elif opt == "--match-set":
            if where.sets is None or value not in where.sets:
                return None, 1.0, f"not evaluated: ipset {value} not read"
            direction = args[i + 2] if i + 2 < len(args) else "src"
            ok = _in_set(where.sets[value], pkt, direction)
            i += 1                      # the direction word
        elif opt in ("-i", "-o"):
            ok = _iface(value, where.iif if opt == "-i" else where.oif)
        elif opt == "--dst-type":
            ok = value == "LOCAL" and pkt.dst in where.local
        elif opt == "--src-type":
            ok = value == "LOCAL" and pkt.src in where.local
        elif opt == "--mark":
            v, m = _mark(value)
            ok = (pkt.mark & m) == v
        elif opt in ("--ctstate", "--state"):
            ok = bool(set(value.split(",")) & ({"NEW", "DNAT"} if pkt.dnat else {"NEW"}))
        elif opt == "--probability":
            chance *= float(value)
            ok = True
        elif opt == "--rcheck" or opt == "--update":
            note = "session affinity: no earlier connection from this client assumed"
            ok, value = False, None
        elif opt == "--set":
            note = "session affinity: remembers this client's endpoint"
            ok, value = True, None
        elif opt in ("--comment", "--mode", "--name", "--seconds", "--mask"):
            ok = True
        elif opt in ("--reap", "--rsource", "--rdest"):
            ok, value = True, None
        else:
            return None, 1.0, f"not evaluated: {opt}"
        if ok == negate:
            return False, 1.0, ""
        negate = False
        i += 1 if value is None else 2
    return True, chance, note


def _in_set(ipset: tuple[str, list[str]], pkt: Packet, direction: str) -> bool:
    """Membership as the kernel's set match sees it: hash:ip and hash:net by address (the
    first direction word), hash:ip,port by address, protocol and port."""
    kind, members = ipset
    ip = pkt.src if direction.split(",")[0] == "src" else pkt.dst
    if kind == "hash:ip,port":
        return f"{ip},{pkt.proto}:{pkt.dport}" in members
    if kind == "hash:net":
        return any(_in(ip, m) for m in members)
    return ip in members


def _target_arg(rule: Rule, name: str) -> str:
    args = list(rule.args)
    return args[args.index(name) + 1] if name in args else ""


def _apply(rule: Rule, pkt: Packet) -> Packet:
    """The packet after a non-terminating target (MARK) or a translation (DNAT, MASQUERADE)."""
    target = rule.target
    if target == "MARK":
        spec = _target_arg(rule, "--set-xmark") or _target_arg(rule, "--or-mark")
        v, m = _mark(spec) if "/" in spec else (int(spec, 0), int(spec, 0))
        return replace(pkt, mark=(pkt.mark & ~m) ^ v)
    if target == "DNAT":
        ip, _, port = _target_arg(rule, "--to-destination").partition(":")
        return replace(pkt, dst=ip, dport=int(port) if port else pkt.dport, dnat=True)
    if target == "REDIRECT":        # to the node itself: the address it came in on, another port
        return replace(pkt, dport=int(_target_arg(rule, "--to-ports") or pkt.dport), dnat=True)
    if target in ("MASQUERADE", "SNAT"):
        return replace(pkt, masquerade=True)
    return pkt


def walk(table: Table, chain: str, pkt: Packet, where: Where, chance: float = 1.0,
         depth: int = 0) -> list[Outcome]:
    """Every way `pkt` can leave `chain` (forking at random rules), with its chance."""
    return _walk(table, chain, 0, pkt, where, chance, [], [], depth)


def _walk(table: Table, chain: str, start: int, pkt: Packet, where: Where, chance: float,
          lines: list[str], hit: list[Rule], depth: int) -> list[Outcome]:
    rules = table.chains.get(chain, [])
    if depth > MAX_DEPTH:
        return [Outcome(chance, pkt, "DROP", lines + [f"{chain}: chains nested too deep"], hit)]
    # A service's random cascade (one statistic rule per endpoint) forks at every rule: the
    # taken branches wait here while the walk goes on down the chain in a loop, since a
    # service of a thousand endpoints would otherwise recurse a thousand frames deep. They
    # come out last first, the order the kernel's rules are read in from the bottom.
    taken: list[list[Outcome]] = []

    def done(last: list[Outcome]) -> list[Outcome]:
        return last + [o for branch in reversed(taken) for o in branch]

    for pos in range(start, len(rules)):
        rule = rules[pos]
        ok, p, note = match(rule, pkt, where)
        if ok is None and note:
            lines = lines + [f"  {table.name} {chain} #{rule.index} skipped ({note}): {rule.text}"]
        if not ok:
            continue
        label = f"  {table.name} {chain} #{rule.index}" + (f" (p={p:.2f})" if p < 1.0 else "")
        here = lines + [f"{label}: {rule.text}" + (f"   [{note}]" if note else "")]
        branch = _take(table, chain, pos, rule, pkt, where, chance * p, here, hit + [rule], depth)
        if p < 1.0:       # statistic random: the other branch carries on with the next rule
            taken.append(branch)
            chance *= 1 - p
            continue
        return done(branch)
    return done([Outcome(chance, pkt, "RETURN" if depth else "ACCEPT", lines, hit)])


def _take(table: Table, chain: str, pos: int, rule: Rule, pkt: Packet, where: Where, chance: float,
          here: list[str], seen: list[Rule], depth: int) -> list[Outcome]:
    """Where the packet goes when `rule` (at `pos` in `chain`) matched it."""
    target = rule.target
    if target in table.chains and rule.goto:
        # A goto: the chain's RETURN returns to this chain's caller, not here.
        return _walk(table, target, 0, pkt, where, chance, here, seen, depth + 1)
    if target in table.chains:
        out: list[Outcome] = []
        for sub in _walk(table, target, 0, pkt, where, chance, here, seen, depth + 1):
            if sub.verdict == "RETURN":
                out += _walk(table, chain, pos + 1, sub.packet, where, sub.chance, sub.lines, sub.hit, depth)
            else:
                out.append(sub)
        return out
    if target == "RETURN":
        return [Outcome(chance, pkt, "RETURN", here, seen)]
    moved = _apply(rule, pkt)
    if target in TERMINAL:
        return [Outcome(chance, moved, target, here, seen)]
    return _walk(table, chain, pos + 1, moved, where, chance, here, seen, depth)
