"""Socket probes from inside a lab namespace.

A thread that entered a namespace (netns.enter) opens its sockets there, and a socket keeps
its namespace for life, whichever thread uses it later. The `attempt_*` functions run in
the calling thread (the matrix's pool threads enter a source namespace first); `in_netns`
runs any of them in a throwaway thread that enters the namespace. Every call has a
timeout, and every loop a bound on its count.
"""
from __future__ import annotations

import errno
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, TypeVar

from ..kernel import netns

T = TypeVar("T")
# Inside a lab a SYN-ACK takes well under a millisecond; half a second only waits for a
# packet that is not coming (the kernel's first SYN retry would come after a second).
CONNECT_TIMEOUT = 0.5


@dataclass
class Outcome:
    ok: bool
    seen: str                   # "connected in 0.3 ms", "connection refused", "200 'c'"
    body: str = ""              # an HTTP body or a UDP reply
    peer: str = ""              # the address the client's socket is connected to
    local: str = ""             # the client's own address, as its kernel sees it


def in_netns(ns: str, fn: Callable[..., T], *args) -> T:
    def run() -> T:
        netns.enter(ns)
        return fn(*args)
    return netns.in_thread(run)


def describe_error(exc: OSError, timeout: float) -> str:
    if isinstance(exc, socket.timeout):
        return f"no answer within {timeout:g}s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return {errno.EHOSTUNREACH: "no route to host", errno.ENETUNREACH: "network unreachable",
            errno.ECONNRESET: "connection reset"}.get(exc.errno, f"{type(exc).__name__}: {exc}")


def _addr(pair: tuple) -> str:
    return f"{pair[0]}:{pair[1]}"


def open_connection(ip: str, port: int, timeout: float = CONNECT_TIMEOUT) -> socket.socket:
    """A connected TCP socket in the calling thread's namespace (raises OSError)."""
    return socket.create_connection((ip, port), timeout=timeout)


def attempt_tcp(ip: str, port: int, timeout: float = CONNECT_TIMEOUT) -> Outcome:
    started = time.perf_counter()
    try:
        with open_connection(ip, port, timeout) as s:
            return Outcome(True, f"connected in {(time.perf_counter() - started) * 1000:.1f} ms",
                           peer=_addr(s.getpeername()), local=_addr(s.getsockname()))
    except OSError as exc:
        return Outcome(False, describe_error(exc, timeout))


def attempt_http(ip: str, port: int, path: str, timeout: float = CONNECT_TIMEOUT) -> Outcome:
    """GET path over HTTP/1.0; ok when the answer is 200."""
    try:
        with open_connection(ip, port, timeout) as s:
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n".encode())
            data = b""
            for _ in range(64):          # at most 64 reads: a test server's answer is small
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            peer, local = _addr(s.getpeername()), _addr(s.getsockname())
    except OSError as exc:
        return Outcome(False, describe_error(exc, timeout))
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    text = body.decode(errors="replace").strip()
    ok = status.startswith("HTTP/1.") and " 200 " in status + " "
    return Outcome(ok, f"{status.split(' ', 1)[-1]} {text[:60]!r}", body=text, peer=peer, local=local)


def attempt_udp(ip: str, port: int, payload: bytes, timeout: float = CONNECT_TIMEOUT) -> Outcome:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.connect((ip, port))      # connected: ICMP port unreachable shows up as an error
            s.send(payload)
            reply = s.recv(65536).decode(errors="replace").strip()
        except OSError as exc:
            return Outcome(False, describe_error(exc, timeout))
        return Outcome(True, f"reply {reply[:60]!r}", body=reply, local=_addr(s.getsockname()))


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def attempt_ping(ip: str, timeout: float = CONNECT_TIMEOUT) -> Outcome:
    """One ICMP echo request (raw socket: needs root) and its reply, matched by identifier."""
    ident = threading.get_native_id() & 0xFFFF
    header = bytes([8, 0, 0, 0]) + ident.to_bytes(2, "big") + (1).to_bytes(2, "big")
    payload = b"netlab-verify"
    packet = header[:2] + _checksum(header + payload).to_bytes(2, "big") + header[4:] + payload
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        s.sendto(packet, (ip, 0))
        for _ in range(100):             # other pings may share the namespace: skip their replies
            left = deadline - time.monotonic()
            if left <= 0:
                break
            s.settimeout(left)
            try:
                data, addr = s.recvfrom(2048)
            except socket.timeout:
                break
            icmp = data[(data[0] & 0x0F) * 4:]
            if addr[0] == ip and icmp[0] == 0 and int.from_bytes(icmp[4:6], "big") == ident:
                return Outcome(True, "echo reply")
    return Outcome(False, f"no echo reply within {timeout:g}s")


def close_all(sockets: list[socket.socket]) -> None:
    for s in sockets:
        s.close()


@dataclass
class Listener:
    """A short-lived TCP server in a namespace that tells each client the address it sees.

    It accepts at most `limit` connections and stops at `deadline_s`, whichever comes first,
    so a probe that never arrives cannot keep it alive.
    """

    ns: str
    ip: str
    port: int = 0
    limit: int = 16
    deadline_s: float = 5.0
    peers: list[str] = field(default_factory=list)

    def __enter__(self) -> "Listener":
        ready = threading.Event()
        self._stop = threading.Event()
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="verify-listener", daemon=True)
        self._thread.start()
        ready.wait(self.deadline_s)
        if self._error:
            raise self._error
        return self

    def _serve(self, ready: threading.Event) -> None:
        try:
            netns.enter(self.ns)
            server = socket.socket()
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind((self.ip, self.port))
            server.listen(self.limit)
            self.port = server.getsockname()[1]
        except OSError as exc:
            self._error = exc
            ready.set()
            return
        ready.set()
        end = time.monotonic() + self.deadline_s
        with server:
            while len(self.peers) < self.limit and time.monotonic() < end and not self._stop.is_set():
                server.settimeout(0.05)      # short waits, so __exit__ need not wait out the deadline
                try:
                    conn, addr = server.accept()
                except socket.timeout:
                    continue
                except OSError:
                    break
                with conn:
                    self.peers.append(_addr(addr))
                    conn.sendall(f"{_addr(addr)}\n".encode())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(self.deadline_s + 1)


def ask_listener(ip: str, port: int, timeout: float = CONNECT_TIMEOUT) -> Outcome:
    """Connect to a Listener and read the address it saw us as."""
    try:
        with open_connection(ip, port, timeout) as s:
            seen = s.recv(256).decode(errors="replace").strip()
            local = _addr(s.getsockname())
    except OSError as exc:
        return Outcome(False, describe_error(exc, timeout))
    return Outcome(bool(seen), f"server saw {seen or 'nothing'}", body=seen, local=local)
