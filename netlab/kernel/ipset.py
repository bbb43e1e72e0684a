"""ipset inside a lab namespace (Felix's selector sets): restore a batch, list names, destroy.

Sets are per network namespace, like iptables rules; every command runs through nsenter into
a namespace netlab names, never the caller's own (iptables.require_netns refuses that)."""
from __future__ import annotations

from .iptables import IptablesError, _run

IPSET = "ipset"


def restore(netns: str, text: str) -> None:
    if not text:
        return
    proc = _run(netns, [IPSET, "restore"], text)
    if proc.returncode != 0:
        raise IptablesError(f"ipset restore failed: {proc.stderr.strip()}", netns=netns)


def names(netns: str) -> list[str]:
    proc = _run(netns, [IPSET, "list", "-n"])
    if proc.returncode != 0:
        raise IptablesError(f"ipset list failed: {proc.stderr.strip()}", netns=netns)
    return proc.stdout.split()


def destroy(netns: str, sets: list[str]) -> None:
    restore(netns, "".join(f"destroy {s}\n" for s in sets))


def members(netns: str, name: str) -> list[str]:
    proc = _run(netns, [IPSET, "list", name])
    if proc.returncode != 0:
        raise IptablesError(f"ipset list {name} failed: {proc.stderr.strip()}", netns=netns)
    return proc.stdout.partition("Members:\n")[2].split()


def read_all(netns: str) -> dict[str, tuple[str, list[str]]]:
    """Every set of the namespace with its type and members, from `ipset save`."""
    proc = _run(netns, [IPSET, "save"])
    if proc.returncode != 0:
        raise IptablesError(f"ipset save failed: {proc.stderr.strip()}", netns=netns)
    sets: dict[str, tuple[str, list[str]]] = {}
    for line in proc.stdout.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == "create":
            sets[words[1]] = (words[2], [])
        elif len(words) >= 3 and words[0] == "add" and words[1] in sets:
            sets[words[1]][1].append(words[2])
    return sets
