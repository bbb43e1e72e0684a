"""What the built-in servers share: log lines, servers that survive bad clients, termination."""
from __future__ import annotations

import os
import selectors
import signal
import socket
import socketserver
import sys
import threading
from http.server import ThreadingHTTPServer
from types import SimpleNamespace
from typing import Callable

# A client that connects and then says nothing is dropped after this long.
IDLE_TIMEOUT = 30.0

_TERMINATION = {signal.SIGTERM, signal.SIGINT}


def log(line: str, *, fd: int = 1) -> None:
    """Write one line to the container log (stdout, or stderr with fd=2).

    os.write of a whole line: lines from different threads never interleave, and nothing waits
    in a Python buffer. A broken log must not take the server down, so errors are dropped.
    """
    data = (line.rstrip("\n") + "\n").encode("utf-8", "replace")
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass


def parse_flags(args: list[str], flags: dict[str, object]) -> SimpleNamespace:
    """Flags as agnhost's servers take them (Go's flag package): -name or --name, the value
    after "=" or in the next word; a flag whose default is a list may repeat. Other words
    (agnhost's subcommand, flags these servers lack) are ignored. Values take the type of
    the default (of its items for a list: int). Returned with "-" as "_" (http_port).

    Hand-written rather than argparse: building a parser in a freshly forked container
    allocated across the agent's heap and so copied enough of its pages to cost about
    1.5 ms of CPU per pod at `up`; this costs a few microseconds."""
    values = {name: list(default) if isinstance(default, list) else default for name, default in flags.items()}
    words = iter(args)
    for word in words:
        name, eq, value = word.lstrip("-").partition("=")
        if not word.startswith("-") or name not in flags:
            continue
        if not eq:
            value = next(words, None)
            if value is None:
                log(f"flag needs an argument: {word}", fd=2)
                raise SystemExit(2)
        default = flags[name]
        kind = int if isinstance(default, list) else type(default)
        try:
            typed = kind(value)
        except ValueError:
            log(f"invalid value {value!r} for flag {word}", fd=2)
            raise SystemExit(2) from None
        if isinstance(default, list):
            values[name].append(typed)
        else:
            values[name] = typed
    return SimpleNamespace(**{name.replace("-", "_"): value for name, value in values.items()})


def peer(address: tuple) -> str:
    """'ip:port' of a socket address, as agnhost's /clientip prints it."""
    return f"{address[0]}:{address[1]}"


def hold_termination_signals() -> None:
    """Queue SIGTERM and SIGINT for wait_for_termination() instead of dying on them.

    Call before starting any thread: threads inherit the blocked mask, so the kernel cannot
    hand the signal to a worker thread and kill the process with a non-zero status.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # an inherited SIG_IGN would discard it
    signal.pthread_sigmask(signal.SIG_BLOCK, _TERMINATION)


def exec_program(argv: list[str]) -> None:
    """Become a real program (dnsmasq, nginx ...): with the termination signals no longer
    held, since a blocked signal mask survives exec and a program that waits in poll() would
    never see its SIGTERM (the pod's deletion would wait for SIGKILL)."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    os.execv(argv[0], argv)


def wait_for_termination() -> None:
    """Block until SIGTERM or SIGINT (held by hold_termination_signals) arrives."""
    signum = signal.sigwait(_TERMINATION)
    log(f"received {signal.Signals(signum).name}, exiting")


class _SurviveErrors:
    """Mixin: a client that vanishes or misbehaves costs one log line, not a traceback."""

    def handle_error(self, request, client_address) -> None:
        log(f"{peer(client_address)} error: {sys.exc_info()[1]!r}", fd=2)


class HTTPServer(_SurviveErrors, ThreadingHTTPServer):
    # socketserver's default backlog of 5 drops SYNs under a burst of clients (1 s stalls).
    request_queue_size = 128
    proto = "http"
    daemon_threads = True  # stopping never waits for a slow client

    def server_bind(self) -> None:
        # http.server would call socket.getfqdn() here, a reverse DNS lookup that stalls
        # start-up while the pod's DNS is not up yet.
        socketserver.TCPServer.server_bind(self)
        self.server_name = socket.gethostname()
        self.server_port = self.server_address[1]


class UDPServer(_SurviveErrors, socketserver.UDPServer):
    proto = "udp"


class ServerGroup:
    """Servers that each run on a daemon thread and are stopped together.

    Each thread sleeps in select() on its socket and the group's stop pipe, with no timeout:
    socketserver's serve_forever() woke every 0.2 s to look for a stop request, which made
    an idle lab of 1,000 pods (2,000 such threads) cost about a third of a core."""

    def __init__(self, servers: list[socketserver.BaseServer]) -> None:
        self.servers = servers
        self._threads: list[threading.Thread] = []
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)

    def start(self) -> ServerGroup:
        for server in self.servers:
            host, port = server.server_address[:2]
            thread = threading.Thread(target=self._serve, args=(server,),
                                      name=f"{server.proto}:{port}", daemon=True)
            thread.start()
            self._threads.append(thread)
            log(f"serving {server.proto} on {host}:{port}")
        return self

    def _serve(self, server: socketserver.BaseServer) -> None:
        """Handle requests until the stop pipe becomes readable (it stays so for every thread)."""
        with selectors.DefaultSelector() as selector:
            selector.register(server, selectors.EVENT_READ)
            selector.register(self._stop_r, selectors.EVENT_READ)
            while True:
                ready = [key.fileobj for key, _ in selector.select()]
                if self._stop_r in ready:
                    return
                server.handle_request()      # ready: it does not block (its timeout is None)

    def address(self, proto: str) -> tuple[str, int]:
        """(host, port) of the first server speaking `proto` ('http' or 'udp')."""
        server = next(s for s in self.servers if s.proto == proto)
        return server.server_address[:2]

    def stop(self) -> None:
        """Stop every server at once and close its socket."""
        os.write(self._stop_w, b"x")
        for t in self._threads:
            t.join()
        for server in self.servers:
            server.server_close()
        self._threads.clear()
        for fd in (self._stop_r, self._stop_w):
            os.close(fd)


def bind_all(factories: list[Callable[[], socketserver.BaseServer]]) -> ServerGroup:
    """Create every server (each factory binds one); if one fails, close the ones already bound."""
    servers: list[socketserver.BaseServer] = []
    try:
        for factory in factories:
            servers.append(factory())
    except BaseException:
        for server in servers:
            server.server_close()
        raise
    return ServerGroup(servers)
