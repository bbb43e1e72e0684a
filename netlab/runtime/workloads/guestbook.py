"""guestbook: stands in for the guestbook example's PHP frontend, with the same HTTP API.

  GET /guestbook.php?cmd=set&key=K&value=V  SET K V on the redis master -> {"message": "Updated"}
  GET /guestbook.php?cmd=get&key=K          GET K from a redis slave    -> {"data": "V"}
  GET /                                     the page (messages are one comma-joined value)
The hosts come from argv (resolve() applies GET_HOSTS_FROM as guestbook.php does); the redis
port is 6379 for both, as in the original. Redis trouble -> HTTP 500 {"error": "..."}.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from . import resp
from .images import GUESTBOOK_PORT, REDIS_PORT
from .serving import IDLE_TIMEOUT, HTTPServer, ServerGroup, bind_all, log, parse_flags, peer, wait_for_termination

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Guestbook</title></head>
<body>
<h1>Guestbook</h1>
<form id="form"><input id="msg" placeholder="Messages" autofocus> <button>Submit</button></form>
<ul id="list"></ul>
<script>
let messages = [];
function show(value) {
  messages = value ? value.split(",") : [];
  const list = document.getElementById("list");
  list.replaceChildren(...messages.map(m => { const li = document.createElement("li"); li.textContent = m; return li; }));
}
fetch("guestbook.php?cmd=get&key=messages").then(r => r.json()).then(j => show(j.data));
document.getElementById("form").onsubmit = event => {
  event.preventDefault();
  const input = document.getElementById("msg");
  const value = [...messages, input.value].join(",");
  fetch("guestbook.php?cmd=set&key=messages&value=" + encodeURIComponent(value))
    .then(r => { if (r.ok) { show(value); input.value = ""; } });
};
</script>
</body></html>
"""


@dataclass(frozen=True)
class Backend:
    """One redis endpoint; `host` is empty when GET_HOSTS_FROM=env found no variable."""
    role: str   # "master" or "slave", for error messages
    host: str
    port: int = REDIS_PORT

    def call(self, *args: str) -> resp.Reply:
        if not self.host:
            raise resp.RedisError(f"no redis {self.role} host (is REDIS_{self.role.upper()}_SERVICE_HOST set?)")
        try:
            return resp.call(self.host, self.port, *args)
        except (OSError, resp.RedisError) as exc:
            raise resp.RedisError(f"redis {self.role} {self.host}:{self.port}: {exc}") from exc


class _Handler(BaseHTTPRequestHandler):
    server_version = "netlab-guestbook"
    timeout = IDLE_TIMEOUT
    server: _GuestbookServer

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path in ("/", "/index.html"):
            self._send(200, "text/html; charset=utf-8", PAGE)
        elif url.path == "/guestbook.php":
            status, body = self._api(parse_qs(url.query, keep_blank_values=True))
            self._send(status, "application/json", json.dumps(body))
        else:
            self._send(404, "text/plain; charset=utf-8", f"404 page not found: {url.path}")

    def _api(self, query: dict[str, list[str]]) -> tuple[int, dict[str, str]]:
        cmd, key, value = (query.get(name, [""])[0] for name in ("cmd", "key", "value"))
        if not cmd:
            return 400, {"error": "missing cmd (set or get)"}
        try:
            if cmd == "set":
                self.server.master.call("SET", key, value)
                return 200, {"message": "Updated"}
            # Like guestbook.php, any other cmd reads, from a slave.
            data = self.server.slave.call("GET", key)
        except resp.RedisError as exc:
            log(f"http:{self.server.server_port} {peer(self.client_address)} error: {exc}", fd=2)
            return 500, {"error": str(exc)}
        return 200, {"data": data.decode("utf-8", "replace") if isinstance(data, bytes) else ""}

    def _send(self, status: int, content_type: str, body: str) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:
        log(f"http:{self.server.server_port} {peer(self.client_address)} {format % args}")


class _GuestbookServer(HTTPServer):
    def __init__(self, address: tuple[str, int], master: Backend, slave: Backend) -> None:
        self.master, self.slave = master, slave
        super().__init__(address, _Handler)


def serve(address: str, port: int, master: Backend, slave: Backend) -> ServerGroup:
    """Bind and start the frontend (port 0 picks a free one); stop it with .stop()."""
    return bind_all([lambda: _GuestbookServer((address, port), master, slave)]).start()


def main(args: list[str]) -> int:
    opts = parse_flags(args, {"port": GUESTBOOK_PORT, "address": "0.0.0.0",     # listen address
                              "master": "redis-master", "slave": "redis-slave"})  # redis hosts
    group = serve(opts.address, opts.port, Backend("master", opts.master), Backend("slave", opts.slave))
    wait_for_termination()
    group.stop()
    return 0
