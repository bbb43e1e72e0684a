"""kubelet's container probes: httpGet and tcpSocket from the node, exec inside the pod.

A probe's result feeds thresholds (successThreshold/failureThreshold) exactly as kubelet
counts them; every probe is bounded by its timeoutSeconds.
"""
from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from typing import Optional

from ..kernel import netns as netns_mod
from ..model.objects import Container, Pod, Probe


@dataclass
class ProbeState:
    kind: str                 # readiness | liveness
    probe: Probe
    next_at: float
    successes: int = 0
    failures: int = 0
    ok: Optional[bool] = None  # None until the threshold decides (readiness starts "not ready")
    last: str = ""

    def record(self, passed: bool, detail: str) -> bool:
        """Count one result; return True when the decided state changed."""
        self.last = detail
        self.next_at = time.monotonic() + self.probe.period
        if passed:
            self.successes, self.failures = self.successes + 1, 0
            decided = self.successes >= self.probe.success_threshold
        else:
            self.failures, self.successes = self.failures + 1, 0
            decided = self.failures >= self.probe.failure_threshold
        if decided and self.ok is not passed:
            self.ok = passed
            return True
        return False


def probe_port(pod: Pod, container: Container, port) -> Optional[int]:
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    found = container.port_named(port) if port else None
    return found.container_port if found else None


def run_probe(probe: Probe, pod: Pod, container: Container, node_netns: str, holder_pid: int,
              lab: str = "") -> tuple[bool, str]:
    """Run one probe; (passed, what happened). An exec probe's command comes from the
    manifest: it runs confined exactly as the container is (capabilities, user)."""
    if probe.kind == "exec":
        from .pods import enter_argv, security_of
        try:
            argv = enter_argv(holder_pid, probe.command, security_of(pod, lab).container(container.name))
            result = subprocess.run(argv, capture_output=True, timeout=probe.timeout)
        except subprocess.TimeoutExpired:
            return False, f"exec {probe.command[0]}: timed out after {probe.timeout}s"
        except OSError as exc:
            return False, f"exec {probe.command[0]}: {exc}"
        return result.returncode == 0, f"exec {' '.join(probe.command)}: exit {result.returncode}"
    port = probe_port(pod, container, probe.port)
    if port is None:
        return False, f"port {probe.port!r} not found"

    def attempt() -> tuple[bool, str]:
        netns_mod.enter(node_netns)       # kubelet probes from the node, not from the pod
        try:
            with socket.create_connection((pod.pod_ip, port), timeout=probe.timeout) as s:
                if probe.kind == "tcpSocket":
                    return True, f"tcp {pod.pod_ip}:{port} connected"
                s.sendall(f"GET {probe.path} HTTP/1.0\r\nHost: {pod.pod_ip}\r\n"
                          f"User-Agent: kube-probe/netlab\r\n\r\n".encode())
                head = s.recv(256).split(b"\r\n", 1)[0].decode(errors="replace")
        except OSError as exc:
            return False, f"{probe.kind} {pod.pod_ip}:{port}: {exc.strerror or exc}"
        parts = head.split()
        code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        return 200 <= code < 400, f"GET {probe.path} on {pod.pod_ip}:{port}: {head or 'no response'}"
    return netns_mod.in_thread(attempt)
