"""Starting, asking and stopping a lab's agent from the CLI or the library."""
from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Optional

from .. import state
from ..model.errors import StateError
from . import api, procs


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
    raise StateError(f"the lab agent did not come up within {timeout:.0f}s; see "
                     f"{state.lab_dir(lab) / 'agent.log'}")


def agent_state(lab: str) -> tuple[str, Optional[int]]:
    """("running" | "stopped" | "gone", pid): stopped is SIGSTOPped (or traced) and answers nothing."""
    pid = agent_pid(lab)
    if pid is None:
        return "gone", None
    run = procs.run_state(pid)
    if run in (None, "Z", "X"):
        return "gone", None
    return ("stopped" if run in ("T", "t") else "running"), pid


def require_agent(lab: str) -> int:
    """The live agent's PID, or one clear line saying why there is none and what to do."""
    how, pid = agent_state(lab)
    if how == "gone":
        raise StateError(f"the agent of lab {lab} is not running, so nothing can change or be read "
                         f"live; start it with `netlab agent restart --lab {lab}`")
    if how == "stopped":
        raise StateError(f"the agent of lab {lab} (pid {pid}) is stopped and answers nothing: "
                         f"`kill -CONT {pid}` or `netlab agent restart --lab {lab}`")
    return pid


def call(lab: str, method: str, path: str, body: Any = None, timeout: float = 120.0) -> Any:
    """One request to the lab's API; an error Status becomes the LabError it describes."""
    require_agent(lab)
    raw = _exchange(lab, api.encode_request(method, path, body), timeout)
    code, reply = api.parse_response(raw)
    if code >= 300:
        raise api.error_of(code, reply)
    return reply


def _exchange(lab: str, data: bytes, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            sock.connect(str(state.agent_socket(lab)))
            sock.sendall(data)
            return _read_response(sock)
        except (BlockingIOError, ConnectionRefusedError) as exc:
            # A full backlog (EAGAIN) or a restarting agent: retry, bounded by the timeout.
            if time.monotonic() + delay > deadline:
                raise _no_answer(lab, exc) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
        except (OSError, socket.timeout) as exc:
            raise _no_answer(lab, exc) from None
        finally:
            sock.close()


def _read_response(sock: socket.socket) -> bytes:
    """Read one HTTP response: by Content-Length, not until EOF."""
    data = b""
    while True:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            length = 0
            for line in data[:head_end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(data) >= head_end + 4 + length:
                return data[:head_end + 4 + length]
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise ConnectionResetError("the agent closed the connection mid-answer")
        data += chunk


def _no_answer(lab: str, exc: BaseException) -> StateError:
    how, pid = agent_state(lab)
    if how != "running":
        try:
            require_agent(lab)
        except StateError as err:
            return err
    return StateError(f"the agent of lab {lab} does not answer ({exc}); `netlab status --lab {lab}` "
                      f"shows its state, `netlab agent restart --lab {lab}` replaces it")


def nudge(lab: str, body: Any = None) -> None:
    """Say something to the agent without waiting for the answer; a missed nudge is caught up
    by the next one (what `up` says is cumulative)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(0.5)
    try:
        sock.connect(str(state.agent_socket(lab)))
        sock.sendall(api.encode_request("POST", "/apis/netlab.io/v1/sync", body or {}))
    except OSError:
        pass
    finally:
        sock.close()


def live_status(lab: str) -> dict:
    """The agent's process facts, fresh from the agent (never a dead agent's file)."""
    return call(lab, "GET", "/apis/netlab.io/v1/status", timeout=30)


def stop(lab: str, timeout: float = 5.0) -> None:
    pid = agent_pid(lab)
    if pid is None:
        return
    try:
        exited = os.pidfd_open(pid)       # readable when the agent has exited
    except ProcessLookupError:
        return
    try:
        os.kill(pid, signal.SIGTERM)
        if select.select([exited], [], [], timeout)[0]:
            return
    except ProcessLookupError:
        return
    finally:
        os.close(exited)
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
