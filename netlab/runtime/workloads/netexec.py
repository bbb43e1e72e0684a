"""netexec: the network test server, after Kubernetes' e2e `agnhost netexec`.

HTTP on each TCP port:
  /                  "NOW: <time>"
  /hostname          the pod's hostname (also /hostName)
  /clientip          the client's "ip:port" as this server sees it (shows SNAT/DNAT)
  /echo?msg=M&code=N M, with status N (default 200)
  /healthz           200 "ok", or 412 after /sethealth?ok=false (to fail probes on purpose)
  /sethealth?ok=B    set what /healthz answers
  /env               the process's environment as a JSON object (what the container was
                     started with: Service variables included; netlab verify reads it)
UDP on each UDP port, one reply per datagram: "echo M" -> M, "clientip" -> "ip:port",
anything else ("hostname" included) -> the hostname.
Unlike agnhost there is no /shell, /upload or /exit: nothing here runs commands.
"""
from __future__ import annotations

import datetime
import json
import os
import socket
import socketserver
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from .serving import (IDLE_TIMEOUT, HTTPServer, ServerGroup, UDPServer, bind_all, log, parse_flags, peer,
                      wait_for_termination)

# agnhost's defaults, used when no port was declared or given.
DEFAULT_HTTP_PORT = 8080
DEFAULT_UDP_PORT = 8081


class Health:
    """What /healthz answers; shared by every HTTP port of the process."""

    def __init__(self) -> None:
        self.ok = True


Query = dict[str, list[str]]
Route = Callable[["_HTTPHandler", Query], tuple[int, str]]


def _arg(query: Query, name: str, default: str = "") -> str:
    return query.get(name, [default])[0]


def _root(handler: _HTTPHandler, query: Query) -> tuple[int, str]:
    return 200, f"NOW: {datetime.datetime.now()}"


def _hostname(handler: _HTTPHandler, query: Query) -> tuple[int, str]:
    return 200, socket.gethostname()  # read per request: the runtime may set it after start


def _clientip(handler: _HTTPHandler, query: Query) -> tuple[int, str]:
    return 200, peer(handler.client_address)


def _echo(handler: _HTTPHandler, query: Query) -> tuple[int, str]:
    code = _arg(query, "code", "200")
    if not code.isdigit() or not 100 <= int(code) <= 599:
        return 400, f"argument 'code' must be an HTTP status, got {code!r}"
    return int(code), _arg(query, "msg")


def _env(handler: _HTTPHandler, query: Query) -> tuple[int, str]:
    return 200, json.dumps(dict(sorted(os.environ.items())))


def _healthz(handler: _HTTPHandler, query: Query) -> tuple[int, str]:
    return (200, "ok") if handler.server.health.ok else (412, "unhealthy (set by /sethealth)")


def _sethealth(handler: _HTTPHandler, query: Query) -> tuple[int, str]:
    value = _arg(query, "ok", "true").lower()
    if value not in ("true", "false"):
        return 400, f"argument 'ok' must be true or false, got {value!r}"
    handler.server.health.ok = value == "true"
    return 200, f"healthy: {value}"


_ROUTES: dict[str, Route] = {
    "/": _root, "/hostname": _hostname, "/hostName": _hostname, "/clientip": _clientip,
    "/echo": _echo, "/healthz": _healthz, "/sethealth": _sethealth, "/env": _env,
}


class _HTTPHandler(BaseHTTPRequestHandler):
    server_version = "netlab-netexec"
    timeout = IDLE_TIMEOUT
    server: _NetexecHTTPServer

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        route = _ROUTES.get(url.path)
        if route is None:
            status, body = 404, f"404 page not found: {url.path}"
        else:
            status, body = route(self, parse_qs(url.query, keep_blank_values=True))
        data = body.encode("utf-8", "replace")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:
        log(f"http:{self.server.server_port} {peer(self.client_address)} {format % args}")


class _NetexecHTTPServer(HTTPServer):
    def __init__(self, address: tuple[str, int], health: Health) -> None:
        self.health = health
        super().__init__(address, _HTTPHandler)


def udp_reply(text: str, client: tuple) -> str:
    """agnhost's UDP protocol: 'echo M' -> M, 'clientip' -> ip:port, else the hostname."""
    command, _, rest = text.strip().partition(" ")
    if command.lower() == "echo":
        return rest
    if command.lower() == "clientip":
        return peer(client)
    return socket.gethostname()


class _UDPHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        text = data.decode("utf-8", "replace")
        reply = udp_reply(text, self.client_address)
        sock.sendto(reply.encode("utf-8"), self.client_address)
        port = self.server.server_address[1]
        log(f"udp:{port} {peer(self.client_address)} {text.strip()[:80]!r} -> {reply[:80]!r}")


def serve(address: str, http_ports: Iterable[int], udp_ports: Iterable[int]) -> ServerGroup:
    """Bind and start the servers (port 0 picks a free one); stop them with .stop()."""
    health = Health()
    factories = [lambda p=p: _NetexecHTTPServer((address, p), health) for p in http_ports]
    factories += [lambda p=p: UDPServer((address, p), _UDPHandler) for p in udp_ports]
    return bind_all(factories).start()


def _parse(args: list[str]):
    opts = parse_flags(args, {"http-port": [], "udp-port": [], "address": "0.0.0.0"})
    if not opts.http_port and not opts.udp_port:
        opts.http_port, opts.udp_port = [DEFAULT_HTTP_PORT], [DEFAULT_UDP_PORT]
    # A negative port disables that protocol, as agnhost's --udp-port=-1 does; repeats count once.
    opts.http_port = sorted({p for p in opts.http_port if p >= 0})
    opts.udp_port = sorted({p for p in opts.udp_port if p >= 0})
    return opts


def main(args: list[str]) -> int:
    opts = _parse(args)
    group = serve(opts.address, opts.http_port, opts.udp_port)
    wait_for_termination()
    group.stop()
    return 0
