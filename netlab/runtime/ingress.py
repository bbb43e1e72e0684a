"""The ingress controller's Go half, run by the lab's agent: render nginx.conf, reload nginx.

ingress-nginx's controller watches Ingresses, Services, Secrets and Endpoints, renders
nginx.conf and reloads the nginx master (here with SIGHUP, as `nginx -s reload` does). In
netlab the lab's agent is the only writer, so it does this on every data-plane sync
(netlab/dataplane.py): on each change and whenever the set of ready pods changes. The real
nginx runs in the controller pod (namespace ingress-nginx) and reads the directory this
module writes, /run/netlab/<lab>/ingress/, which it sees read-only.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Callable, Optional

from .. import state
from . import procs
from ..model.addons import INGRESS_CONTAINER, INGRESS_SOURCE, ingress_conf, ingress_dir
from ..plan.ingress import render

DEFAULT_CERT = "default-fake-certificate.pem"
RELOAD_TIMEOUT = 3.0


def enabled(cluster) -> bool:
    """Whether the lab runs the controller add-on."""
    return any(rc.meta.source == INGRESS_SOURCE for rc in cluster.rcs.values())


def controller_pods(cluster) -> list[str]:
    return sorted(key for key, pod in cluster.pods.items() if pod.meta.source == INGRESS_SOURCE)


def events_file(lab: str):
    return state.lab_dir(lab) / "ingress-events.json"


def reload_file(lab: str):
    """When the agent last told nginx to reload, and how long nginx took."""
    return state.lab_dir(lab) / "ingress-reload.json"


def prepare(lab: str) -> None:
    """The controller's directory, with its default certificate, before its pod starts
    (the pod mounts the directory, and nginx needs a configuration to start with)."""
    d = ingress_dir(lab)
    os.makedirs(d + "/ssl", mode=0o700, exist_ok=True)
    cert = f"{d}/ssl/{DEFAULT_CERT}"
    if not os.path.exists(cert):
        _fake_certificate(cert)


def _fake_certificate(path: str) -> None:
    """ingress-nginx's "Kubernetes Ingress Controller Fake Certificate": self-signed, for
    servers without a TLS Secret of their own."""
    tmp = path + ".tmp"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "3650", "-subj", "/O=Acme Co/CN=Kubernetes Ingress Controller Fake Certificate",
                    "-keyout", tmp + ".key", "-out", tmp + ".crt"],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with open(tmp + ".crt", "rb") as crt, open(tmp + ".key", "rb") as key:
        _write(path, crt.read() + key.read())
    os.unlink(tmp + ".crt")
    os.unlink(tmp + ".key")


def _write(path: str, data: bytes) -> bool:
    """Write atomically (nginx may read at any moment); False when it already holds data."""
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return False
    except FileNotFoundError:
        pass
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return True


def sync(cluster, eps: dict, pids_of: Optional[Callable] = None) -> bool:
    """Render the configuration; if it changed, write it and reload nginx. True if reloaded."""
    if not enabled(cluster):
        return False
    lab = cluster.name
    prepare(lab)
    d = ingress_dir(lab)
    rendered = render(cluster, eps, d)
    changed = False
    for name, pem in rendered.certs.items():
        changed |= _write(f"{d}/ssl/{name}", pem)
    for name in os.listdir(d + "/ssl"):
        if name != DEFAULT_CERT and name not in rendered.certs and name.endswith(".pem"):
            os.unlink(f"{d}/ssl/{name}")
    changed |= _write(ingress_conf(lab), rendered.text.encode())
    _record_events(lab, rendered.events)
    if changed and pids_of is not None:
        pids = [pid for key in controller_pods(cluster) for pid in pids_of(key, INGRESS_CONTAINER)]
        took = reload(pids)
        state.write_json(reload_file(lab), {"at": time.time(), "seconds": took, "pids": pids})
        return True
    return changed


def _record_events(lab: str, found: dict) -> None:
    """The controller's warnings per Ingress, [type, reason, message, first seen]; a warning
    keeps its first time for as long as it stays true."""
    before = {(key, tuple(e[:3])): e[3] for key, evs in events(lab).items() for e in evs}
    now = time.time()
    out = {key: [[*e, before.get((key, tuple(e)), now)] for e in evs] for key, evs in found.items()}
    if out != events(lab):
        state.write_json(events_file(lab), out)


def _children(pid: int) -> set[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return {int(x) for x in f.read().split()}
    except (OSError, ValueError):
        return set()


def reload(pids: list[int], timeout: float = RELOAD_TIMEOUT) -> Optional[float]:
    """SIGHUP each nginx master and wait (bounded) until it has started new workers, which
    serve the new configuration. Seconds it took, or None if some master did not reload."""
    start = time.monotonic()
    deadline = start + timeout
    before: dict[int, set[int]] = {}
    for pid in pids:
        # nginx sets its handlers only after it has read its configuration and opened its
        # ports: a SIGHUP before then kills it (exit 129) and the pod restarts. The sync that
        # follows `up`'s first pods used to land there now and then, on a busy machine.
        procs.wait_for_handler(pid, signal.SIGHUP, deadline)
        workers = _children(pid)
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            continue                 # it is being restarted: the new nginx reads the new file
        before[pid] = workers
    waiting, took = dict(before), None
    # New workers first (they serve the new configuration), then the old ones gone (until
    # then an old worker may still accept a connection and answer from the old one).
    while waiting and time.monotonic() < deadline:
        for pid, old in list(waiting.items()):
            now = _children(pid)
            if now - old and not now & old:
                del waiting[pid]
        if waiting:
            time.sleep(0.002)
    if not waiting:
        took = time.monotonic() - start
    return took


def events(lab: str) -> dict[str, list]:
    return state.read_json(events_file(lab)) or {}


def ingress_address(cluster, ing) -> str:
    """An Ingress's ADDRESS (status.loadBalancer): the controller Service's load-balancer IP,
    for the Ingresses the controller serves, as ingress-nginx's --publish-service sets it."""
    from ..model.addons import INGRESS_NAMESPACE, INGRESS_SERVICE
    from ..plan.ingress import ingresses_served
    if not enabled(cluster):
        return ""
    svc = cluster.services.get(f"{INGRESS_NAMESPACE}/{INGRESS_SERVICE}")
    if svc is None or ing not in ingresses_served(cluster):
        return ""
    ips = svc.load_balancer_ips or [n.internal_ip for n in cluster.nodes]
    return ",".join(ips)
