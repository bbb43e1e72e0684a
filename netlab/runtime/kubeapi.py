"""The lab's Kubernetes API over HTTPS, for the real kubectl: a front-end to the agent.

The agent is the lab's API server and only writer, on its root-only Unix socket; it is
single-threaded and forks, so it never speaks TLS nor holds a connection. This front-end,
one process per listener, forked and restarted by the agent like a node daemon, terminates TLS,
checks the caller, forwards each request to the agent's socket, and holds the long requests
itself: a watch (it asks the agent for the events after the last resourceVersion, a few
times a second, and streams them) and `logs -f` (it asks for the bytes after the last ones).

Two listeners, both with the lab's own certificate (runtime/pki.py):

- loopback (`--loopback`): 127.0.0.1 on a free port of the host, the ONE thing a lab puts
  in the host's network namespace. Every request needs the lab's bearer token; the
  kubeconfig that carries it is /run/netlab/<lab>/kubeconfig (0600, root's), and the port
  stays the same when the front-end or the agent restarts. Full access, like cluster-admin.
- in-cluster (`--in-cluster ADDRESS`): port 6443 of a node's address, in the node's own
  namespace: the endpoints of the `kubernetes` Service (10.96.0.1:443). Pods have no token
  (netlab mounts no service-account secrets), so it answers anonymous reads only (GET of
  discovery and objects); everything else is 403, as for system:anonymous on a cluster.
"""
from __future__ import annotations

import hmac
import json
import os
import socket
import ssl
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import parse_qsl, urlencode, urlsplit

from .. import state

IN_CLUSTER_PORT = 6443
WATCH_POLL = 0.25              # seconds between asking the agent for a watch's new events
LOG_POLL = 0.3
AGENT_TIMEOUT = 120.0


from .kubeapi_paths import endpoint_file, kubeconfig_path  # noqa: E402


def status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


# ---------------------------------------------------------------------- the agent


def agent_request(lab: str, method: str, target: str, body: bytes = b"", headers: Optional[dict] = None,
                  timeout: float = AGENT_TIMEOUT) -> tuple[int, dict, bytes]:
    """One request to the agent's Unix socket: (code, headers, body)."""
    head = [f"{method} {target} HTTP/1.1", "Host: netlab", "Connection: close",
            f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items() if v]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                sock.connect(str(state.agent_socket(lab)))
                break
            except (BlockingIOError, ConnectionRefusedError, FileNotFoundError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        # By Content-Length, never until EOF: a process the agent forks meanwhile (a pod) may
        # hold the agent's end of this connection open for its whole life.
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise ConnectionResetError("the agent closed the connection mid-answer")
            data += chunk
        raw_head, _, payload = data.partition(b"\r\n\r\n")
        lines = raw_head.decode("latin-1").split("\r\n")
        code = int(lines[0].split(" ", 2)[1])
        hdrs = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        length = int(hdrs.get("content-length", "0"))
        while len(payload) < length:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise ConnectionResetError("the agent closed the connection mid-answer")
            payload += chunk
    finally:
        sock.close()
    return code, hdrs, payload[:length]


# ---------------------------------------------------------------------- HTTP


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "netlab-apiserver"
    lab = ""
    token = b""
    read_only = False

    def log_message(self, fmt, *args):       # quiet: one line per error only
        pass

    def _send(self, code: int, body, ctype: str = "application/json", extra: Optional[dict] = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _fail(self, code: int, reason: str, message: str) -> None:
        self._send(code, status(code, reason, message))

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _allowed(self, method: str, path: str, query: dict) -> bool:
        if not self.read_only:
            auth = self.headers.get("Authorization", "")
            given = auth[7:].strip().encode() if auth.startswith("Bearer ") else b""
            if not hmac.compare_digest(given, self.token):
                self._fail(401, "Unauthorized", "Unauthorized")
                return False
            return True
        readable = path in ("/version", "/api", "/apis", "/healthz", "/livez", "/readyz") or \
            path.startswith(("/api/v1", "/openapi/"))
        if method != "GET" or not readable or path.endswith("/log") or query.get("watch") in ("1", "true"):
            self._fail(403, "Forbidden", f'{path} is forbidden: User "system:anonymous" cannot '
                                         f'{method.lower()} it: the in-cluster endpoint of netlab answers '
                                         f'anonymous reads only')
            return False
        return True

    def _handle(self) -> None:
        method = self.command
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        body = self._body()
        if not self._allowed(method, path, query):
            return
        if path in ("/healthz", "/livez", "/readyz"):
            self._send(200, b"ok", "text/plain")
            return
        if path.startswith("/apis/netlab.io"):
            self._fail(404, "NotFound", "the server could not find the requested resource")
            return
        ctype = self.headers.get("Content-Type", "")
        if ctype.split(";")[0].strip() == "application/apply-patch+yaml":
            self._fail(415, "UnsupportedMediaType", "server-side apply is not supported by netlab: use "
                                                    "`kubectl apply` without --server-side")
            return
        if body and "json" not in ctype and method in ("POST", "PUT", "PATCH"):
            self._fail(415, "UnsupportedMediaType", f"netlab's API takes JSON bodies, not {ctype or 'this'}")
            return
        headers = {"Accept": self.headers.get("Accept", ""), "Content-Type": ctype}
        if method == "GET" and query.get("watch") in ("1", "true"):
            self._watch(path, query, headers)
            return
        if method == "GET" and path.endswith("/log") and query.get("follow") in ("1", "true"):
            self._follow(path, query)
            return
        try:
            code, hdrs, payload = agent_request(self.lab, method, self.path, body, headers)
        except OSError as exc:
            self._fail(503, "ServiceUnavailable", f"the lab's agent does not answer: {exc}")
            return
        self._send(code, payload, hdrs.get("content-type", "application/json"))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    # ------------------------------------------------------------------ streams

    def _start_stream(self, ctype: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

    def _end_stream(self) -> None:
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True

    def _watch(self, path: str, query: dict, headers: dict) -> None:
        timeout = float(query.get("timeoutSeconds") or 1800)
        deadline = time.monotonic() + min(timeout, 3600)
        rv = query.get("resourceVersion", "")
        ask = {k: v for k, v in query.items() if k not in ("watch", "resourceVersion", "timeoutSeconds",
                                                          "allowWatchBookmarks")}
        started = False
        try:
            while time.monotonic() < deadline:
                target = f"{path}?{urlencode(dict(ask, watch='1', resourceVersion=rv))}"
                code, _, payload = agent_request(self.lab, "GET", target, b"", headers)
                reply = json.loads(payload or b"{}")
                if code != 200:
                    if not started:
                        self._send(code, payload)
                        return
                    self._chunk(json.dumps({"type": "ERROR", "object": reply}).encode() + b"\n")
                    break
                if not started:
                    self._start_stream("application/json")
                    started = True
                for event in reply.get("events", []):
                    self._chunk(json.dumps(event, separators=(",", ":")).encode() + b"\n")
                rv = reply.get("resourceVersion", rv)
                time.sleep(WATCH_POLL)
        except (OSError, ValueError):
            pass                      # kubectl went away (or the agent did)
        if started:
            self._end_stream()

    def _follow(self, path: str, query: dict) -> None:
        ask = {k: v for k, v in query.items() if k != "follow"}
        code, hdrs, payload = agent_request(self.lab, "GET", f"{path}?{urlencode(ask)}")
        if code != 200:
            self._send(code, payload)
            return
        offset = int(hdrs.get("x-netlab-log-size", "0"))
        ask = {k: v for k, v in ask.items() if k in ("container",)}
        self._start_stream("text/plain")
        try:
            self._chunk(payload)
            while True:
                time.sleep(LOG_POLL)
                code, hdrs, payload = agent_request(self.lab, "GET",
                                                    f"{path}?{urlencode(dict(ask, netlabOffset=offset))}")
                if code != 200:
                    break
                size = int(hdrs.get("x-netlab-log-size", "0"))
                if size < offset:        # the log was truncated (a new container run)
                    offset = 0
                    continue
                self._chunk(payload)
                offset = size
        except OSError:
            pass
        self._end_stream()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, handler, context: ssl.SSLContext):
        self.context = context
        super().__init__(address, handler)

    def get_request(self):
        conn, addr = super().get_request()
        conn.settimeout(60)
        return self.context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False), addr

    def finish_request(self, request, client_address):
        try:
            request.do_handshake()
        except (ssl.SSLError, OSError):
            request.close()
            return
        request.settimeout(None)
        super().finish_request(request, client_address)

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, ssl.SSLError, TimeoutError)):
            super().handle_error(request, client_address)


# ---------------------------------------------------------------------- the lab's names


def context(lab: str, names: tuple[tuple[str, ...], tuple[str, ...]]):
    from . import pki
    files = pki.ensure(lab, *names)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(files["cert"]), str(files["key"]))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx, files


def write_kubeconfig(lab: str, port: int, files: dict) -> None:
    import base64
    ca = base64.b64encode(files["ca"].read_bytes()).decode()
    token = files["token"].read_text().strip()
    doc = {"apiVersion": "v1", "kind": "Config", "current-context": lab, "preferences": {},
           "clusters": [{"name": lab, "cluster": {"server": f"https://127.0.0.1:{port}",
                                                  "certificate-authority-data": ca}}],
           "users": [{"name": f"{lab}-admin", "user": {"token": token}}],
           "contexts": [{"name": lab, "context": {"cluster": lab, "user": f"{lab}-admin",
                                                  "namespace": "default"}}]}
    path = kubeconfig_path(lab)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp, path)


def serve(lab: str, loopback: bool, address: str, names: tuple[tuple[str, ...], tuple[str, ...]]) -> int:
    """Listen and answer until SIGTERM. `names` (kubeapi_daemons.cert_names): what the certificate names,
    from the agent's own cluster (four listeners reading state.json again cost a 100-pod
    lab about 25 ms of CPU at `up`, and more the bigger the lab)."""
    ctx, files = context(lab, names)
    Handler.lab = lab
    if loopback:
        Handler.token, Handler.read_only = files["token"].read_text().strip().encode(), False
        previous = (state.read_json(endpoint_file(lab)) or {}).get("port", 0)
        server = None
        for port in ([previous] if previous else []) + [0]:
            try:
                server = Server(("127.0.0.1", port), Handler, ctx)
                break
            except OSError:
                continue
        if server is None:
            raise OSError("no port on 127.0.0.1 to listen on")
        port = server.server_address[1]
        state.write_json(endpoint_file(lab), {"port": port, "pid": os.getpid()})
        write_kubeconfig(lab, port, files)
    else:
        Handler.token, Handler.read_only = b"", True
        server = Server((address, IN_CLUSTER_PORT), Handler, ctx)
    print(f"netlab apiserver for lab {lab} on https://{server.server_address[0]}:{server.server_address[1]}",
          flush=True)
    import signal
    # Stopped when the agent stops (down, restart) or restarts it: at once, not at the next
    # poll of serve_forever (up to half a second that `netlab down` waited for). A watch or
    # `logs -f` it holds ends as it would if the API server went away; kubectl reconnects.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    server.serve_forever(poll_interval=0.5)
    return 0


def serve_forked(lab: str, loopback: bool, address: str, names: tuple[tuple[str, ...], tuple[str, ...]]) -> int:
    """serve() in a child forked from the agent (runtime/daemons.py): what the agent's
    garbage collector tracks stays out of ours, so it is never scanned (and copied)."""
    import gc
    gc.freeze()
    return serve(lab, loopback, address, names)
