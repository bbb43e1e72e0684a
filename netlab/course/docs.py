"""A lesson README's runnable shell blocks (```sh run), so a test can type what a learner is
told to type and hold the output to what the README says.

Inside a block, a command is a line that does not start with '#'; lines under it say what it
must print (in substance, as regular expressions searched line by line):
    # => REGEX      the output matches
    # !~ REGEX      the output does not match
    # exit: N       the exit code is N (default 0)
Placeholders like `web-xxxxx` stand for a live pod of that RC (the first by name)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

FENCE = re.compile(r"^```sh run\s*\n(.*?)^```", re.S | re.M)
PLACEHOLDER = re.compile(r"\b([a-z][a-z0-9-]*?)-xxxxx\b")


@dataclass
class Command:
    line: str
    expect: list[str] = field(default_factory=list)
    reject: list[str] = field(default_factory=list)
    exit: int = 0


def commands(readme: Path) -> list[Command]:
    found: list[Command] = []
    for block in FENCE.findall(readme.read_text()):
        for raw in block.splitlines():
            line = raw.strip()
            if not line:
                continue
            if line.startswith("# => "):
                found[-1].expect.append(line[5:])
            elif line.startswith("# !~ "):
                found[-1].reject.append(line[5:])
            elif line.startswith("# exit: "):
                found[-1].exit = int(line[8:])
            elif not line.startswith("#"):
                found.append(Command(line))
    return found


def resolve(line: str, pod_names: list[str]) -> str:
    """web-xxxxx -> the first live pod named web-<5 chars>."""
    def one(m: re.Match) -> str:
        for name in sorted(pod_names):
            if re.fullmatch(re.escape(m.group(1)) + r"-[a-z0-9]{5}", name):
                return name
        raise LookupError(f"no live pod for {m.group(0)}")
    return PLACEHOLDER.sub(one, line)
