"""The pod spawner: a small process that forks every pod's holder and containers for the agent.

Forking the agent itself grew costly with the lab: each fork copies the page tables of the
agent's whole heap, which holds the lab (43 MB resident at 1,000 pods), and each process
then tears that copy down again (the holder when it execs catatonit, a container when it
exits). The spawner is forked from the agent before it loads the lab, so it holds netlab's
code and little else, and it does nothing between forks but read the agent's requests.

The holders and containers are the spawner's children. It reaps them and reports each exit
to the agent on their socket, which the agent's loop watches beside its own children. If
the spawner dies, its children pass to the agent, a child subreaper, which then reaps them
itself.

Wire format, both ways: a 4-byte length, then a pickle (both ends are this program).
    agent -> spawner  ("holders", [spawn_holder args, ...])    -> [(pid, ready) | error text]
                      ("containers", [spawn_container args, ...]) -> [pid | error text]
    spawner -> agent  ("reply", [...])  and, at any time, ("exited", pid, wait status)
"""
from __future__ import annotations

import os
import pickle
import select
import signal
import socket
import struct
import sys
import time
from typing import Any, Optional

from . import nsops, procs
from . import pods as podproc

READY_TIMEOUT = 10.0       # a holder that has not said "ready" by then counts as failed
_HEADER = struct.Struct("!I")


class SpawnerGone(OSError):
    """The spawner died (its socket closed) before it answered."""


def _send(sock: socket.socket, message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_HEADER.pack(len(data)) + data)


class _Frames:
    """Whole messages out of a stream socket."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = bytearray()

    def read(self, block: bool) -> Optional[list]:
        """The messages complete so far (waiting for more bytes if block); None at EOF."""
        try:
            chunk = self.sock.recv(1 << 20, 0 if block else socket.MSG_DONTWAIT)
        except BlockingIOError:
            chunk = None
        if chunk == b"":
            return None
        if chunk:
            self.buf += chunk
        messages = []
        while len(self.buf) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(self.buf)
            if len(self.buf) < _HEADER.size + length:
                break
            messages.append(pickle.loads(bytes(self.buf[_HEADER.size:_HEADER.size + length])))
            del self.buf[:_HEADER.size + length]
        return messages


class Spawner:
    """The agent's handle on its spawner process."""

    def __init__(self):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                ours.close()
                code = _serve(theirs)
            finally:
                os._exit(code)
        theirs.close()
        self.pid = pid
        self.sock = ours
        self._frames = _Frames(ours)
        self._exits: list[tuple[int, int]] = []
        self.gone = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def holders(self, args: list[tuple]) -> list:
        """spawn_holder(*a) for each, then its readiness: [(pid, ready) or an OSError]."""
        return [OSError(r) if isinstance(r, str) else r for r in self._ask("holders", args)]

    def containers(self, args: list[tuple]) -> list:
        """spawn_container(*a) for each: [pid or an OSError]."""
        return [OSError(r) if isinstance(r, str) else r for r in self._ask("containers", args)]

    def exits(self) -> list[tuple[int, int]]:
        """The (pid, wait status) reported since the last call; reads what the socket holds."""
        if not self.gone:
            self._take(self._frames.read(block=False))
        found, self._exits = self._exits, []
        return found

    def _ask(self, kind: str, args: list[tuple]) -> list:
        if not args:
            return []
        if self.gone:
            raise SpawnerGone("the pod spawner is gone")
        try:
            _send(self.sock, (kind, args))
            while True:
                reply = self._take(self._frames.read(block=True))
                if reply is not None:
                    return reply
        except OSError as exc:
            self.gone = True
            raise SpawnerGone(f"the pod spawner is gone: {exc}") from None

    def _take(self, messages: Optional[list]) -> Optional[list]:
        """File exit reports; return a reply if one came."""
        if messages is None:
            self.gone = True
            raise OSError("connection closed")
        reply = None
        for message in messages:
            if message[0] == "exited":
                self._exits.append((message[1], message[2]))
            else:
                reply = message[1]
        return reply

    def close(self, timeout: float = 2.0) -> list[tuple[int, int]]:
        """Let the spawner go: it reports the exits it has reaped and exits, and its living
        children pass to the agent. Returns the exits reported and not read before."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
            self.sock.settimeout(timeout)
            while not self.gone:
                self._take(self._frames.read(block=True))
        except OSError:              # EOF (it has gone), or it did not go in time
            pass
        self.sock.close()
        self.gone = True
        try:
            os.kill(self.pid, signal.SIGKILL)        # in case it did not go in time
        except ProcessLookupError:
            pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        found, self._exits = self._exits, []
        return found


# ---------------------------------------------------------------------- the spawner process


def _serve(sock: socket.socket) -> int:
    podproc.forget_agent_signals()
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    nsops.die_with_parent(signal.SIGKILL)               # the agent gone: so are we
    if os.getppid() == 1:
        return 1
    wake_r, wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    frames = _Frames(sock)
    while True:
        readable, _, _ = select.select([sock, wake_r], [], [])
        if wake_r in readable:
            try:
                os.read(wake_r, 4096)
            except BlockingIOError:
                pass
        _report_exits(sock)
        if sock in readable:
            messages = frames.read(block=True)
            if messages is None:                 # the agent closed its end: report, and go
                _report_exits(sock)
                return 0
            for kind, args in messages:
                _send(sock, ("reply", _holders(args) if kind == "holders" else _containers(args)))
                _report_exits(sock)


def _report_exits(sock: socket.socket) -> None:
    for pid, status in procs.exited_children():
        _send(sock, ("exited", pid, status))


def _each(spawn, args: list[tuple]) -> list:
    """spawn(*a) for each a: its result, or its OSError's text."""
    results = []
    for a in args:
        try:
            results.append(spawn(*a))
        except OSError as exc:
            results.append(str(exc) or repr(exc))
    return results


def _holders(args: list[tuple]) -> list:
    """Fork every holder back to back, then wait for each to say it is ready."""
    replies = []
    deadline = time.monotonic() + READY_TIMEOUT
    for item in _each(podproc.spawn_holder, args):
        if isinstance(item, str):
            replies.append(item)
            continue
        pid, ready_fd = item
        try:
            readable, _, _ = select.select([ready_fd], [], [], max(0.0, deadline - time.monotonic()))
            ready = bool(readable) and os.read(ready_fd, 1) == b"1"
        finally:
            os.close(ready_fd)
        replies.append((pid, ready))
    return replies


def _containers(args: list[tuple]) -> list:
    return _each(podproc.spawn_container, args)


if __name__ == "__main__":     # pragma: no cover - only ever forked from the agent
    sys.exit("the pod spawner is started by the lab agent")
