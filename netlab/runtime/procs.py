"""Process identity from /proc: never act on a PID without proving whose it is.

A PID alone names a process only until it exits; then the number is handed out again. A
process is the same one if its PID *and* its start time (field 22 of /proc/PID/stat, in
clock ticks since boot) are the same, and it is a pod's if it sits in the pod's network
namespace (the inode of /proc/PID/ns/net equals that of /run/netns/<pod netns>).
"""
from __future__ import annotations

import os
import time
from typing import Optional


def _stat_fields(pid: int) -> Optional[list[str]]:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    return raw[raw.rfind(")") + 2:].split()


def start_ticks(pid: int) -> Optional[int]:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def run_state(pid: int) -> Optional[str]:
    """R, S, D, T (stopped), t (traced), Z (zombie), X ... or None if there is no such process."""
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def netns_inode(pid: int) -> Optional[int]:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def is_same(pid: int, ticks: Optional[int]) -> bool:
    """Is `pid` still the process that had start time `ticks`?"""
    return bool(pid) and ticks is not None and start_ticks(pid) == ticks


def catches(pid: int, sig: int) -> Optional[bool]:
    """Whether the process has its own handler for sig yet (None: there is no such process)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            caught = next(line for line in f if line.startswith("SigCgt:")).split()[1]
    except (OSError, StopIteration, IndexError):
        return None
    return bool(int(caught, 16) >> (sig - 1) & 1)


def wait_for_handler(pid: int, sig: int, deadline: float) -> None:
    """Wait (until time.monotonic() reaches deadline) for the process to handle sig. A
    daemon told to reload with SIGHUP before it has set its handler (nginx reads its
    configuration first, Python its imports) dies of it instead."""
    while catches(pid, sig) is False and time.monotonic() < deadline:
        time.sleep(0.002)


def exited_children():
    """(pid, wait status) of each child that has exited, until none is left to reap now."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, status
