"""Node daemons the agent supervises (kube-proxy in userspace mode): restarted when they die,
stopped by `fault stop-daemon` until healed, reported by `netlab status`."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from netlab import engine
from netlab.runtime import agent_client

from .test_agent import connect_outcomes, wait_until, web_lab

pytestmark = pytest.mark.root


def _daemon(lab: str, key: str) -> dict:
    return agent_client.live_status(lab)["daemons"][key]


def test_a_killed_daemon_is_restarted_and_a_stopped_one_stays_down(make_lab):
    cluster = web_lab(make_lab, mode="userspace")
    node = cluster.pod("client").spec.node_name       # the node whose proxy the client goes through
    lab, key = cluster.name, f"kube-proxy/{node}"
    ip = cluster.service("web").cluster_ip
    first = _daemon(lab, key)
    assert first["state"] == "Running" and first["pid"]
    os.kill(first["pid"], signal.SIGKILL)
    wait_until(lambda: _daemon(lab, key)["pid"] not in (0, first["pid"]), 10, "kube-proxy to come back")
    assert _daemon(lab, key)["restartCount"] == 1
    wait_until(lambda: connect_outcomes(cluster, ip, 80, 2, timeout=1.0) == ["ok"] * 2, 10, "the portal to serve")

    line = engine.inject_fault(lab, "stop-daemon", node, container="kube-proxy")
    assert "stopped" in line
    wait_until(lambda: _daemon(lab, key)["state"] == "Stopped", 5, "kube-proxy to stop")
    # The portal rules still send the node's traffic to the proxy's port, where nobody listens now.
    assert connect_outcomes(cluster, ip, 80, 2, timeout=1.0) == ["failed"] * 2
    status = subprocess.run([sys.executable, "-m", "netlab", "status", "--lab", lab],
                            capture_output=True, text=True, timeout=30)
    assert status.returncode == 1 and f"daemon: {key} stopped" in status.stdout

    assert f"kube-proxy on node {node} runs again" in engine.heal_faults(lab)
    wait_until(lambda: _daemon(lab, key)["state"] == "Running", 10, "kube-proxy to run again")
    wait_until(lambda: connect_outcomes(cluster, ip, 80, 2, timeout=1.0) == ["ok"] * 2, 10, "the portal to serve")


def test_stop_daemon_names_what_a_node_runs(make_lab):
    cluster = web_lab(make_lab, mode="userspace")
    with pytest.raises(Exception, match='no daemon "flanneld".*kube-proxy'):
        engine.inject_fault(cluster.name, "stop-daemon", "node1", container="flanneld")
