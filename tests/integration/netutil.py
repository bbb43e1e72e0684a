"""Real traffic from inside a lab namespace, for tests: a socket opened by a thread that
entered the namespace keeps working in it. Every call has a timeout."""
from __future__ import annotations

import socket

from netlab.kernel import netns


def http_get(ns: str, ip: str, port: int, path: str, timeout: float = 3.0) -> str:
    """GET path from ip:port, from inside namespace ns; return the body."""
    def fetch() -> str:
        netns.enter(ns)
        with socket.create_connection((ip, port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n".encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(b"\r\n")[0]:
            raise AssertionError(f"HTTP error from {ip}:{port}{path}: {head[:80]!r}")
        return body.decode().strip()
    return netns.in_thread(fetch)


def udp_request(ns: str, ip: str, port: int, payload: bytes, timeout: float = 2.0) -> bytes:
    def ask() -> bytes:
        netns.enter(ns)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(payload, (ip, port))
            return s.recvfrom(65536)[0]
    return netns.in_thread(ask)


def tcp_connects(ns: str, ip: str, port: int, timeout: float = 1.0) -> bool:
    def attempt() -> bool:
        netns.enter(ns)
        try:
            with socket.create_connection((ip, port), timeout=timeout):
                return True
        except OSError:
            return False
    return netns.in_thread(attempt)


def root_links() -> set[str]:
    """Interfaces of the namespace the tests run in: the host's, which labs must not touch."""
    return {name for _, name in socket.if_nameindex()}


_WEB_LAB = """apiVersion: netlab/v1
kind: Lab
metadata: {name: ignored}
spec: {nodes: 2, dns: false}
---
apiVersion: v1
kind: ReplicationController
metadata: {name: web}
spec:
  replicas: %(replicas)d
  selector: {app: web}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: example/web, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""


def web_lab_text(replicas: int = 2, extra: str = "") -> str:
    """The small lab many tests share: two nodes without DNS, an RC of `replicas` netexec
    pods serving 8080 behind the Service web on port 80; then `extra` manifests."""
    return _WEB_LAB % {"replicas": replicas} + (f"---\n{extra.lstrip()}" if extra else "")
