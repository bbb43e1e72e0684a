"""Which labs exist on this machine, and which one a command means: light enough for every
command's start-up (no model, no kernel layer beyond listing /run/netns)."""
from __future__ import annotations

import os
from typing import Optional

from . import state
from .kernel import netns
from .model import names
from .model.errors import NotFoundError, StateError


def running_labs() -> list[str]:
    """Labs with state or with namespaces on this machine."""
    labs = set(state.labs_with_state())
    for name in netns.list_names(names.PREFIX):
        lab = names.lab_of_netns(name)
        if lab:
            labs.add(lab)
    return sorted(labs)


def resolve_lab(lab: Optional[str]) -> str:
    """The lab a command acts on: the one named (--lab, else $NETLAB_LAB), or the only one running."""
    lab = lab or os.environ.get("NETLAB_LAB") or None
    labs = running_labs()
    if lab:
        if lab not in labs:
            raise NotFoundError(f'lab "{lab}" is not running' +
                                (f" (running: {', '.join(labs)})" if labs else ""))
        return lab
    if not labs:
        raise NotFoundError("no lab is running; start one with `netlab up LABDIR`")
    if len(labs) > 1:
        raise StateError(f"several labs are running ({', '.join(labs)}): choose one with --lab")
    return labs[0]


def lab_namespaces(lab: str) -> list[str]:
    """The names under /run/netns that carry this lab's name (what `ip netns list` shows)."""
    return netns.list_names(f"{names.PREFIX}{lab}.")
