"""echoserver: what Kubernetes' Ingress examples put behind an Ingress (registry.k8s.io/echoserver).

Answers every path and method on each TCP port (8080 when none is declared) with the
request as the server saw it, in the real echoserver's layout: the pod's hostname, the
client address (for a request through the ingress controller: nginx's pod), the real path
and URI, and every request header (Host, X-Forwarded-For, X-Real-IP, X-Forwarded-Proto ...).
HTTP/1.1 with keep-alive, as nginx's upstream connections use it.
"""
from __future__ import annotations

import socket
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from .serving import IDLE_TIMEOUT, HTTPServer, bind_all, log, parse_flags, peer, wait_for_termination

DEFAULT_PORT = 8080
MAX_BODY = 1 << 20


class _Handler(BaseHTTPRequestHandler):
    server_version = "netlab-echoserver"
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes: without TCP_NODELAY, Nagle holds the body until
    # the client's delayed ACK (40 ms per request on a kept-alive connection).
    disable_nagle_algorithm = True
    timeout = IDLE_TIMEOUT

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(min(length, MAX_BODY)) if length > 0 else b""
        url = urlsplit(self.path)
        host = self.headers.get("Host", "")
        lines = [f"Hostname: {socket.gethostname()}", "", "Pod Information:",
                 "\t-no pod information available-", "", "Server values:",
                 f"\tserver_version={self.server_version}", "", "Request Information:",
                 f"\tclient_address={self.client_address[0]}", f"\tmethod={self.command}",
                 f"\treal path={url.path}", f"\tquery={url.query}",
                 f"\trequest_version={self.request_version.partition('/')[2]}",
                 "\trequest_scheme=http", f"\trequest_uri=http://{host}{self.path}", "",
                 "Request Headers:"]
        lines += [f"\t{k.lower()}={v}" for k, v in self.headers.items()]
        lines += ["", "Request Body:", "\t" + (body.decode("utf-8", "replace") if body
                                               else "-no body in request-"), ""]
        data = "\n".join(lines).encode("utf-8", "replace")
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _answer

    def log_message(self, format: str, *args) -> None:
        log(f"http:{self.server.server_port} {peer(self.client_address)} {format % args}")


def serve(address: str, ports: list[int]):
    return bind_all([lambda p=p: HTTPServer((address, p), _Handler) for p in ports]).start()


def main(args: list[str]) -> int:
    opts = parse_flags(args, {"http-port": [], "address": "0.0.0.0"})
    group = serve(opts.address, sorted(set(opts.http_port)) or [DEFAULT_PORT])
    wait_for_termination()
    group.stop()
    return 0
