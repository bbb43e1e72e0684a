"""Starting, asking and stopping a lab's agent from the CLI or the library."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Optional

from .. import state
from ..model.errors import StateError


def agent_pid(lab: str) -> Optional[int]:
    """The agent's PID if it is alive (and really is this lab's agent)."""
    try:
        pid = int(state.agent_pidfile(lab).read_text())
        with open(f"/proc/{pid}/environ", "rb") as f:
            marks = f.read().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if f"{state.LAB_ENV}={lab}".encode() in marks else None


def start(lab: str, timeout: float = 15.0, defer_sync: bool = False) -> int:
    """Start the lab's agent and wait until it answers; return its PID."""
    return wait_started(lab, launch(lab, defer_sync), timeout)


def launch(lab: str, defer_sync: bool = False) -> subprocess.Popen:
    """Start the agent without waiting for it (its start-up overlaps `up`'s wiring)."""
    # A dead agent's socket and status must not pass for the new agent's.
    for leftover in (state.agent_socket(lab), state.status_file(lab), state.agent_pidfile(lab)):
        try:
            leftover.unlink()
        except FileNotFoundError:
            pass
    log = open(state.lab_dir(lab) / "agent.log", "ab")
    env = dict(os.environ, **{state.LAB_ENV: lab})
    # The agent must import this same netlab, wherever it was imported from.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    argv = [sys.executable, "-m", "netlab.runtime.agent", "--lab", lab] + (["--defer-sync"] if defer_sync else [])
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                            start_new_session=True, close_fds=True)
    log.close()
    return proc


def wait_started(lab: str, proc: subprocess.Popen, timeout: float = 15.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StateError(f"the lab agent exited with code {proc.returncode}; see "
                             f"{state.lab_dir(lab) / 'agent.log'}")
        if (agent_pid(lab) == proc.pid and state.agent_socket(lab).exists()
                and state.read_json(state.status_file(lab))):
            return proc.pid
        time.sleep(0.02)
    raise StateError(f"the lab agent did not come up within {timeout:.0f}s")


def request(lab: str, cmd: str, timeout: float = 30.0, **args) -> dict:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(state.agent_socket(lab)))
        sock.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            data += chunk
    except (OSError, socket.timeout) as exc:
        raise StateError(f"the agent of lab {lab} does not answer ({exc}); "
                         f"`netlab status` shows whether it runs") from None
    finally:
        sock.close()
    reply = json.loads(data)
    if not reply.get("ok"):
        raise StateError(f"agent: {reply.get('error')}")
    return reply


def nudge(lab: str) -> None:
    """Ask the agent to sync without waiting for it; a missed nudge is caught up later."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(0.5)
    try:
        sock.connect(str(state.agent_socket(lab)))
        sock.sendall(json.dumps({"cmd": "sync"}).encode() + b"\n")
    except OSError:
        pass
    finally:
        sock.close()


def stop(lab: str, timeout: float = 5.0) -> None:
    pid = agent_pid(lab)
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if agent_pid(lab) is None or not os.path.exists(f"/proc/{pid}"):
            return
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def marked_processes(lab: Optional[str] = None) -> list[int]:
    """PIDs carrying netlab's mark (NETLAB_LAB in the environment), for one lab or all."""
    found = []
    want = f"{state.LAB_ENV}={lab}".encode() if lab else f"{state.LAB_ENV}=".encode()
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                marks = f.read().split(b"\0")
        except OSError:
            continue
        if any(m == want or (not lab and m.startswith(want)) for m in marks):
            found.append(int(entry))
    return found
