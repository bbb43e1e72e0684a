"""netlab's pytest plugin: bring real labs up inside a user's own test suite and assert on them.

Registered through the `pytest11` entry point, so installing netlab is all a suite needs:

    def test_guestbook(netlab_lab):
        lab = netlab_lab("labs/guestbook", nodes=3)
        assert lab.http("pod/frontend-xxxxx", "http://redis-master:6379/")...
        lab.verify("service-*").assert_ok()

Every lab gets a unique name (pytest-xdist workers never collide, and a user's own labs are
never touched) and is torn down after its test, whether the test passed, failed, was
interrupted (Ctrl-C: the session's end and an atexit hook remove what is still up) or timed out
(pytest-timeout's default signal method fails the test, then teardown runs; its thread method
kills the process without any teardown, so use timeout_method = signal).
Without root, or without the kernel features a lab needs, the test is skipped with a reason.
"""
from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import pytest

PREFIX = "pt"                 # the labs this plugin makes are named pt<12 hex>
_LIVE: set[str] = set()       # labs up and not yet torn down, in this process
_LOCK = threading.Lock()


def _missing_requirements() -> Optional[str]:
    """Why labs cannot be built here, or None."""
    if os.geteuid() != 0:
        return "netlab needs root (network namespaces, veths, iptables): run pytest with sudo"
    if not Path("/proc/self/ns/net").exists():
        return "this kernel has no network namespaces"
    if not (shutil.which("iptables-legacy") or shutil.which("iptables-legacy-restore")):
        return "iptables-legacy is not installed (scripts/setup.sh installs it)"
    if not shutil.which("nsenter"):
        return "nsenter (util-linux) is not installed"
    return None


def _teardown(name: str) -> None:
    from . import engine
    try:
        engine.teardown(name)
    finally:
        with _LOCK:
            _LIVE.discard(name)


def _teardown_all() -> None:
    for name in sorted(_LIVE):
        try:
            _teardown(name)
        except Exception:        # at exit: keep removing the others
            pass


atexit.register(_teardown_all)


# ---------------------------------------------------------------------- results


@dataclass
class Reply:
    """An HTTP exchange: status 0 when no answer came (error says why)."""
    status: int
    body: str
    error: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class VerifyResults(list):
    """verify's CheckResults; truthy when every applicable check passed; assert_ok() fails the
    test with the failed checks' claims and evidence, one line each."""

    @property
    def failed(self) -> list:
        from .probe.result import Status
        return [r for r in self if r.status == Status.FAIL]

    @property
    def passed(self) -> list:
        from .probe.result import Status
        return [r for r in self if r.status == Status.PASS]

    def __bool__(self) -> bool:
        return len(self) > 0 and not self.failed

    def summary(self) -> str:
        lines = [f"{len(self.passed)} passed, {len(self.failed)} failed, "
                 f"{len(self) - len(self.passed) - len(self.failed)} n/a"]
        for r in self.failed:
            lines.append(f"FAIL {r.id}: {r.claim} -- {r.summary}")
            lines += [f"    {p.src} -> {p.dst}: {p.sent}: {p.seen}" for p in r.probes if not p.ok][:3]
        return "\n".join(lines)

    def assert_ok(self) -> None:
        if not self:
            pytest.fail("netlab verify: " + self.summary(), pytrace=False)

    def __repr__(self) -> str:
        return f"<VerifyResults {self.summary().splitlines()[0]}>"


# ---------------------------------------------------------------------- the handle


class Lab:
    """A running lab, as a test sees it. Places are named "pod/NAME" (or "pod/NS/NAME", or a
    bare pod name), "node/NAME", "client" (outside the cluster) or "internet"."""

    def __init__(self, name: str, cluster):
        self.name = name
        self._cluster = cluster

    # -- the objects

    @property
    def cluster(self):
        """The lab's objects as stored now (re-read: controllers change them)."""
        from . import engine
        self._cluster = engine.load(self.name)
        return self._cluster

    @property
    def pods(self) -> dict:
        return self.cluster.pods

    @property
    def services(self) -> dict:
        return self.cluster.services

    def pod(self, name: str, namespace: str = "default"):
        return self.cluster.pod(name, namespace)

    def service(self, name: str, namespace: str = "default"):
        return self.cluster.service(name, namespace)

    def pods_of(self, **labels: str) -> list:
        return sorted((p for p in self.cluster.pods.values()
                       if all(p.meta.labels.get(k) == v for k, v in labels.items())), key=lambda p: p.meta.name)

    # -- places

    def _pod_of(self, where: str):
        ref = where[4:] if where.startswith("pod/") else where
        ns, _, name = ref.rpartition("/")
        return self.cluster.pod(name, ns or "default")

    def _netns(self, where: str) -> str:
        from .model import names
        if where == "client":
            return names.client_netns(self.name)
        if where == "internet":
            return names.internet_netns(self.name)
        if where.startswith("node/"):
            return self.cluster.node(where[5:]).netns
        return self.cluster.pod_netns(self._pod_of(where))

    # -- doing things there

    def exec(self, where: str, *command: str, timeout: float = 30.0, check: bool = False
             ) -> subprocess.CompletedProcess:
        """Run a command in a pod (its namespaces, root, resolv.conf; as `netlab exec`), a
        node, the outside client or the internet; output as text."""
        if not command:
            raise ValueError("give the command to run")
        if where in ("client", "internet") or where.startswith("node/"):
            return subprocess.run(["ip", "netns", "exec", self._netns(where), *command], capture_output=True,
                                  text=True, timeout=timeout, check=check)
        from .cli.exec_cmds import _close, open_pod_namespaces, pod_exec_argv
        from .kernel import netns
        from .runtime import agent_client
        from .runtime import pods as podproc
        pod = self._pod_of(where)
        st = agent_client.live_status(self.name)["pods"].get(pod.meta.key, {})
        fds = open_pod_namespaces(st.get("holderPid"), st.get("holderStartTicks"),
                                  netns.inode(self.cluster.pod_netns(pod)))
        try:
            cname = pod.spec.containers[0].name
            argv = pod_exec_argv(fds, list(command),
                                 podproc.confine_argv(podproc.security_of(pod, self.name).container(cname)))
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=check,
                                  pass_fds=tuple(fds.values()))
        finally:
            _close(fds)

    def _in(self, where: str, fn):
        from .kernel import netns
        ns = self._netns(where)

        def run():
            netns.enter(ns)
            return fn()
        return netns.in_thread(run)

    def tcp(self, where: str, host: str, port: int, timeout: float = 2.0) -> bool:
        """Whether a TCP connection from `where` to host:port is accepted within timeout."""
        host = self._address(host)

        def connect() -> bool:
            try:
                with socket.create_connection((host, port), timeout=timeout):
                    return True
            except OSError:
                return False
        return self._in(where, connect)

    def http(self, where: str, host: str, port: int = 80, path: str = "/", timeout: float = 3.0) -> Reply:
        """One HTTP/1.0 GET from `where`; host may be an address, or a Service's name (its
        ClusterIP) as "svc/NAME[.NS]". Never raises for a network error: see Reply.error."""
        host = self._address(host)

        def get() -> Reply:
            try:
                with socket.create_connection((host, port), timeout=timeout) as s:
                    s.settimeout(timeout)
                    s.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
                    data = b""
                    while chunk := s.recv(65536):
                        data += chunk
            except OSError as exc:
                return Reply(0, "", f"{type(exc).__name__}: {exc}")
            head, _, body = data.partition(b"\r\n\r\n")
            try:
                status = int(head.split(b"\r\n")[0].split()[1])
            except (IndexError, ValueError):
                return Reply(0, body.decode(errors="replace"), f"not HTTP: {head[:60]!r}")
            return Reply(status, body.decode(errors="replace").strip())
        return self._in(where, get)

    def _address(self, host: str) -> str:
        if host.startswith("svc/"):
            name, _, ns = host[4:].partition(".")
            return self.cluster.service(name, ns or "default").cluster_ip
        return host

    def resolve(self, pod: str, name: str, timeout: float = 10.0) -> list[str]:
        """The addresses a name resolves to through a pod's own resolver (getent, glibc)."""
        out = self.exec(pod if pod.startswith("pod/") else f"pod/{pod}", "getent", "ahostsv4", name,
                        timeout=timeout).stdout
        return sorted({line.split()[0] for line in out.splitlines() if line.strip()})

    def verify(self, *patterns: str, disruptive: bool = False) -> VerifyResults:
        """Run verify's checks (ids or prefixes such as "service-*"; none: all)."""
        from .probe import catalog, runner
        from .probe.lab import load_settled
        view, _ = load_settled(self.name)
        return VerifyResults(runner.run(view, catalog.select(list(patterns) or None, disruptive=disruptive)))

    def apply(self, path) -> list[str]:
        """Apply a manifest file or directory to the running lab (the agent does the rest)."""
        from . import engine
        from .model.loader import load_objects
        return engine.apply(self.name, load_objects(Path(path)))

    def rollout(self, what: str, timeout: float = 120.0, namespace: str = "default") -> str:
        """Wait for a rollout ("deployment/web", "statefulset/db", "daemonset/agent")."""
        from .rollout import wait_rollout
        kind, _, name = what.partition("/")
        res = {"deployment": "deployments", "deploy": "deployments", "statefulset": "statefulsets",
               "sts": "statefulsets", "daemonset": "daemonsets", "ds": "daemonsets"}[kind]
        return wait_rollout(self.name, res, name, namespace, timeout)

    def __repr__(self) -> str:
        return f"<netlab lab {self.name}>"


# ---------------------------------------------------------------------- fixtures


@pytest.fixture
def netlab_lab(request):
    """A factory: netlab_lab(path, nodes=None, backend=None, wait=60) -> Lab. Each lab is torn
    down after the test, pass or fail."""
    why = _missing_requirements()
    if why:
        pytest.skip(why)
    from . import engine
    made: list[str] = []

    def make(path, *, nodes: Optional[int] = None, backend: Optional[str] = None,
             proxy_mode: Optional[str] = None, wait: float = 60.0, wait_ready: bool = False) -> Lab:
        name = f"{PREFIX}{uuid.uuid4().hex[:12]}"
        with _LOCK:
            _LIVE.add(name)
        made.append(name)
        try:
            cluster = engine.up(Path(path), name=name, nodes=nodes, backend=backend, proxy_mode=proxy_mode,
                                wait=wait, wait_ready=wait_ready)
        except Exception as exc:
            if _kernel_lacks(exc):
                pytest.skip(f"the kernel lacks what this lab needs: {exc}")
            raise
        return Lab(name, cluster)

    yield make
    errors = []
    for name in made:
        try:
            _teardown(name)
        except Exception as exc:       # report, after trying every lab
            errors.append(f"{name}: {exc}")
    if errors:
        pytest.fail("netlab teardown failed: " + "; ".join(errors), pytrace=False)


def _kernel_lacks(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(w in text for w in ("module", "not supported", "operation not supported", "no such device"))


def pytest_sessionfinish(session, exitstatus):
    """Ctrl-C or an error outside a test: whatever is still up goes now."""
    _teardown_all()


def pytest_addoption(parser):
    group = parser.getgroup("netlab")
    group.addoption("--netlab-keep-failed", action="store_true", default=False,
                    help="(reserved) netlab always removes its labs; logs of a failed up are kept by netlab itself")


def pytest_configure(config):
    config.addinivalue_line("markers", "netlab: a test that builds netlab labs (needs root)")


def pytest_report_header(config) -> Sequence[str]:
    why = _missing_requirements()
    return [f"netlab: labs {'cannot be built: ' + why if why else 'enabled'}"]
