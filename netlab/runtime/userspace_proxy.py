"""kube-proxy's userspace proxy: one process per node, run inside the node's network namespace.

It listens on 0.0.0.0:<proxy port> for every service port in its config file (written by
plan.userspace.proxy_config), where the node's iptables rules REDIRECT or DNAT service
traffic, and relays each connection to an endpoint. As the historical proxy did: round
robin over the endpoints, ClientIP affinity keyed by the source address it sees (a pod's IP
for REDIRECTed pod traffic), a short connect timeout after which the next endpoint is tried
(the retry that iptables mode cannot do), and accept-then-close when a service has no
endpoint. UDP is relayed per client address through a connected socket to the endpoint,
dropped after UDP_IDLE_TIMEOUT without traffic (kube-proxy's --udp-timeout).

TCP bytes never enter Python: once connected, each direction is a thread that splices
socket -> pipe -> socket. Everything else (accepts, dials and their timeouts, UDP, config
reloads, signals) runs in one epoll loop in the main thread, so the balancers need no lock.
Relaying in that loop too was measured slower: about 30% more CPU per byte, and lower
iperf3 throughput (bench/bench_proxy.py).

The config file is re-read when its mtime, inode or size changes (checked every
POLL_INTERVAL) or at once on SIGHUP; SIGTERM or SIGINT stop the proxy with exit code 0.
"""
from __future__ import annotations

import argparse
import errno
import fcntl
import json
import os
import selectors
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

CONNECT_TIMEOUT = 0.5       # per endpoint; the first of kube-proxy's dial timeouts was 250 ms
UDP_IDLE_TIMEOUT = 0.25     # kube-proxy's --udp-timeout default
POLL_INTERVAL = 0.5         # config mtime checks, UDP and affinity expiry
PIPE_SIZE = 1 << 20         # fs.pipe-max-size's default: fewer, larger splices
F_SETPIPE_SZ = 1031
READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


# ---------------------------------------------------------------------- load balancing


@dataclass
class Balancer:
    """Round robin with optional ClientIP affinity: kube-proxy's LoadBalancerRR for one port."""

    endpoints: list[str]
    affinity: bool = False
    affinity_timeout: float = 10800.0
    index: int = 0
    sessions: dict[str, tuple[str, float]] = field(default_factory=dict)  # client IP -> (endpoint, last use)

    def update(self, endpoints: list[str], affinity: bool, affinity_timeout: float) -> None:
        if endpoints != self.endpoints:
            self.endpoints, self.index = list(endpoints), 0
        self.affinity, self.affinity_timeout = affinity, affinity_timeout
        # Sessions outlive an update only while their endpoint does (and affinity is on).
        self.sessions = {ip: s for ip, s in self.sessions.items() if affinity and s[0] in self.endpoints}

    def prune(self, now: float) -> None:
        """Forget idle sessions (kube-proxy's CleanupStaleStickySessions), or they pile up."""
        self.sessions = {ip: s for ip, s in self.sessions.items() if now - s[1] < self.affinity_timeout}

    def next(self, client_ip: str, now: float, reset: bool = False) -> str:
        """The endpoint for a new connection; reset=True after a failed dial skips the session."""
        if self.affinity and not reset:
            session = self.sessions.get(client_ip)
            if session and now - session[1] < self.affinity_timeout:
                self.sessions[client_ip] = (session[0], now)
                return session[0]
        endpoint = self.endpoints[self.index % len(self.endpoints)]
        self.index = (self.index + 1) % len(self.endpoints)
        if self.affinity:
            self.sessions[client_ip] = (endpoint, now)
        return endpoint


def _addr(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host, int(port)


@dataclass
class ProxiedPort:
    """One entry of the config's "services", with its listener once open."""

    name: str
    listen: int
    protocol: str
    balancer: Balancer
    sock: Optional[socket.socket] = None


# ---------------------------------------------------------------------- TCP relaying


def _pipe() -> tuple[int, int]:
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass    # above fs.pipe-max-size for this user: the default 64 KiB still works
    return r, w


class Relay:
    """A proxied TCP connection: a thread per direction, each splicing src -> pipe -> dst.

    Blocking splices release the GIL; two syscalls move a chunk, where an epoll relay
    needed four (wait, read, write, the read that says EAGAIN).
    """

    def __init__(self, client: socket.socket, backend: socket.socket, live: set["Relay"]):
        self.client, self.backend = client, backend
        self.live = live

    def start(self) -> None:
        for sock in (self.client, self.backend):
            sock.setblocking(True)
        self.live.add(self)
        threading.Thread(target=self._run, name="relay", daemon=True).start()

    def _run(self) -> None:
        down = threading.Thread(target=self._flow, args=(self.backend, self.client), name="relay", daemon=True)
        down.start()
        self._flow(self.client, self.backend)
        down.join()
        self.client.close()
        self.backend.close()
        self.live.discard(self)

    def _flow(self, src: socket.socket, dst: socket.socket) -> None:
        r, w = _pipe()
        try:
            while True:
                n = os.splice(src.fileno(), w, PIPE_SIZE, flags=os.SPLICE_F_MOVE)
                if n == 0:
                    dst.shutdown(socket.SHUT_WR)    # pass the half-close on
                    return
                while n:
                    n -= os.splice(r, dst.fileno(), n, flags=os.SPLICE_F_MOVE)
        except OSError:
            self.abort()    # a reset on either side ends both directions, as a stream copy would
        finally:
            os.close(r)
            os.close(w)

    def abort(self) -> None:
        """Wake both directions' blocked splices; each thread then closes what it owns."""
        for sock in (self.client, self.backend):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass    # already closed


@dataclass
class Dial:
    """A client waiting while the proxy connects to one endpoint after another."""

    service: ProxiedPort
    client: socket.socket
    client_addr: tuple[str, int]
    attempts: int = 0
    failures: list[str] = field(default_factory=list)
    endpoint: str = ""
    sock: Optional[socket.socket] = None
    deadline: float = 0.0


# ---------------------------------------------------------------------- UDP relaying


@dataclass
class UdpSession:
    """One client's datagrams to one endpoint, replies sent back from the listener."""

    service: ProxiedPort
    client: tuple[str, int]
    sock: socket.socket
    last: float


# ---------------------------------------------------------------------- the proxy


class Proxy:
    def __init__(self, config_path: str):
        self.config_path = config_path
        self.sel = selectors.DefaultSelector()
        self.services: dict[str, ProxiedPort] = {}
        self.relays: set[Relay] = set()                 # live ones, to abort at exit
        self.dials: dict[int, Dial] = {}                # id(dial) -> dial
        self.udp: dict[tuple[str, tuple[str, int]], UdpSession] = {}
        self.config_stamp: Optional[tuple[int, int, int]] = None
        self.bind_errors: dict[str, str] = {}
        self.running = True
        self.reload_now = False
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)     # set_wakeup_fd requires it

    # ------------------------------------------------------------------ config

    def load_config(self) -> None:
        """Re-read the config if it changed: open, close and update listeners to match."""
        try:
            st = os.stat(self.config_path)
        except FileNotFoundError:
            return
        stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
        if stamp == self.config_stamp and not self.reload_now:
            self._open_listeners()
            return
        self.reload_now = False
        try:
            with open(self.config_path) as f:
                wanted = json.load(f)["services"]
        except (OSError, ValueError, KeyError) as exc:
            log(f"config {self.config_path}: {exc}; keeping the previous one")
            return
        self.config_stamp = stamp
        for name in [n for n, s in self.services.items()
                     if n not in wanted or (s.listen, s.protocol) != (wanted[n]["listen"], wanted[n]["protocol"])]:
            self._close_service(self.services.pop(name))
        for name, spec in wanted.items():
            affinity = spec.get("sessionAffinity") == "ClientIP"
            timeout = float(spec.get("affinityTimeoutSeconds", 10800))
            svc = self.services.get(name)
            if svc is None:
                self.services[name] = ProxiedPort(name, spec["listen"], spec["protocol"],
                                                  Balancer(list(spec["endpoints"]), affinity, timeout))
            else:
                svc.balancer.update(spec["endpoints"], affinity, timeout)
        log(f"config loaded: {len(wanted)} service ports")
        self._open_listeners()

    def _open_listeners(self) -> None:
        for svc in self.services.values():
            if svc.sock is not None:
                continue
            kind = socket.SOCK_STREAM if svc.protocol == "TCP" else socket.SOCK_DGRAM
            sock = socket.socket(socket.AF_INET, kind)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("0.0.0.0", svc.listen))
                if kind == socket.SOCK_STREAM:
                    sock.listen(socket.SOMAXCONN)
            except OSError as exc:
                sock.close()
                if self.bind_errors.get(svc.name) != str(exc):   # retried each poll; said once
                    log(f"{svc.name}: cannot listen on {svc.protocol} port {svc.listen}: {exc}")
                    self.bind_errors[svc.name] = str(exc)
                continue
            self.bind_errors.pop(svc.name, None)
            sock.setblocking(False)
            svc.sock = sock
            self.sel.register(sock, READ, svc)
            log(f"{svc.name}: listening on {svc.protocol} port {svc.listen}")

    def _close_service(self, svc: ProxiedPort) -> None:
        """Stop listening; established TCP connections run on, as the historical proxy let them."""
        self.bind_errors.pop(svc.name, None)
        for key in [k for k, s in self.udp.items() if s.service is svc]:
            self._close_udp(key)
        if svc.sock is not None:
            self.sel.unregister(svc.sock)
            svc.sock.close()
            log(f"{svc.name}: stopped listening on {svc.protocol} port {svc.listen}")

    # ------------------------------------------------------------------ TCP

    def accept(self, svc: ProxiedPort) -> None:
        for _ in range(64):     # a burst at most; the listener stays readable for the rest
            try:
                client, addr = svc.sock.accept()
            except (BlockingIOError, ConnectionAbortedError):
                return
            if not svc.balancer.endpoints:
                log(f"{svc.name} {addr[0]}:{addr[1]} -> no endpoints, closed")
                client.close()
                continue
            self.dial(Dial(svc, client, addr))

    def dial(self, d: Dial) -> None:
        """Connect to the next endpoint (non-blocking); fail the client after trying them all."""
        now = time.monotonic()
        if d.attempts >= len(d.service.balancer.endpoints):
            log(f"{d.service.name} {d.client_addr[0]}:{d.client_addr[1]} -> no endpoint answered "
                f"({', '.join(d.failures)}), closed")
            d.client.close()
            return
        d.endpoint = d.service.balancer.next(d.client_addr[0], now, reset=bool(d.failures))
        d.attempts += 1
        d.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        d.sock.setblocking(False)
        code = d.sock.connect_ex(_addr(d.endpoint))
        if code not in (0, errno.EINPROGRESS):
            self._dial_failed(d, os.strerror(code))
            return
        d.deadline = now + CONNECT_TIMEOUT
        self.dials[id(d)] = d
        self.sel.register(d.sock, WRITE, d)

    def _dial_failed(self, d: Dial, why: str) -> None:
        self.dials.pop(id(d), None)
        d.sock.close()
        d.failures.append(f"{d.endpoint} {why}")
        self.dial(d)

    def on_dial(self, d: Dial) -> None:
        self.sel.unregister(d.sock)
        code = d.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._dial_failed(d, os.strerror(code))
            return
        self.dials.pop(id(d))
        retried = f" (after {', '.join(d.failures)})" if d.failures else ""
        log(f"{d.service.name} {d.client_addr[0]}:{d.client_addr[1]} -> {d.endpoint}{retried}")
        Relay(d.client, d.sock, self.relays).start()

    def expire_dials(self, now: float) -> None:
        for d in [d for d in self.dials.values() if d.deadline <= now]:
            self.sel.unregister(d.sock)
            self._dial_failed(d, "timed out")

    # ------------------------------------------------------------------ UDP

    def on_datagram(self, svc: ProxiedPort) -> None:
        now = time.monotonic()
        for _ in range(64):
            try:
                data, client = svc.sock.recvfrom(65535)
            except BlockingIOError:
                return
            session = self.udp.get((svc.name, client))
            if session is None:
                if not svc.balancer.endpoints:
                    continue
                endpoint = svc.balancer.next(client[0], now)
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.setblocking(False)
                try:
                    sock.connect(_addr(endpoint))
                except OSError as exc:     # no route: drop the datagram, as the network would
                    log(f"{svc.name} {client[0]}:{client[1]} -> {endpoint} (udp): {exc}")
                    sock.close()
                    continue
                session = self.udp[(svc.name, client)] = UdpSession(svc, client, sock, now)
                self.sel.register(sock, READ, session)
                log(f"{svc.name} {client[0]}:{client[1]} -> {endpoint} (udp)")
            session.last = now
            try:
                session.sock.send(data)
            except OSError:
                pass    # e.g. ECONNREFUSED from an earlier datagram: UDP may lose this one too

    def on_reply(self, session: UdpSession) -> None:
        session.last = time.monotonic()
        for _ in range(64):
            try:
                data = session.sock.recv(65535)
                session.service.sock.sendto(data, session.client)
            except BlockingIOError:
                return
            except OSError:
                return  # the endpoint's port is closed (ICMP): the client's next datagram tries again

    def _close_udp(self, key: tuple[str, tuple[str, int]]) -> None:
        session = self.udp.pop(key)
        self.sel.unregister(session.sock)
        session.sock.close()

    def expire_udp(self, now: float) -> None:
        for key in [k for k, s in self.udp.items() if now - s.last > UDP_IDLE_TIMEOUT]:
            self._close_udp(key)

    # ------------------------------------------------------------------ loop

    def on_signal(self) -> None:
        for signum in self.wake_r.recv(64):
            if signum == signal.SIGHUP:
                self.reload_now = True
            else:
                self.running = False

    def serve(self) -> None:
        self.sel.register(self.wake_r, READ, None)
        next_poll = 0.0
        while self.running:
            now = time.monotonic()
            if now >= next_poll or self.reload_now:
                self.load_config()
                self.expire_udp(now)
                for svc in self.services.values():
                    svc.balancer.prune(now)
                next_poll = now + POLL_INTERVAL
            self.expire_dials(now)
            deadlines = [next_poll] + [d.deadline for d in self.dials.values()]
            for key, _ in self.sel.select(max(0.0, min(deadlines) - now)):
                handler = key.data
                if handler is None:
                    self.on_signal()
                elif isinstance(handler, Dial):
                    self.on_dial(handler)
                elif isinstance(handler, UdpSession):
                    self.on_reply(handler)
                elif handler.protocol == "TCP":
                    self.accept(handler)
                else:
                    self.on_datagram(handler)

    def close(self) -> None:
        for relay in list(self.relays):
            relay.abort()
        for d in list(self.dials.values()):
            d.sock.close()
            d.client.close()
        for svc in self.services.values():
            if svc.sock is not None:
                svc.sock.close()
        for session in self.udp.values():
            session.sock.close()
        self.sel.close()
        self.wake_r.close()
        self.wake_w.close()


def run(config_path: str) -> int:
    """Serve until SIGTERM/SIGINT, in the calling process's network namespace; 0 on a clean stop."""
    proxy = Proxy(config_path)
    handlers: dict[int, Callable] = {}
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        handlers[signum] = signal.signal(signum, lambda *_: None)   # the wakeup fd does the work
    old_wakeup = signal.set_wakeup_fd(proxy.wake_w.fileno())
    log(f"userspace proxy pid {os.getpid()}, config {config_path}")
    try:
        proxy.serve()
    finally:
        signal.set_wakeup_fd(old_wakeup)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        proxy.close()
    log("stopped")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netlab.runtime.userspace_proxy",
                                     description="kube-proxy's userspace proxy for one node")
    parser.add_argument("config", help="the JSON written from plan.userspace.proxy_config")
    parser.add_argument("--netns", help="enter this named network namespace first (the node's)")
    args = parser.parse_args(argv)
    if args.netns:
        from netlab.kernel import netns
        netns.enter(args.netns)
    return run(args.config)


if __name__ == "__main__":
    sys.exit(main())
