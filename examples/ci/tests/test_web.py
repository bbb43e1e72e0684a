"""An example suite for a CI runner: bring the lab up with netlab's pytest plugin (installed
with netlab: no conftest needed), then assert on the network it builds. Run as root:

    sudo .venv/bin/pytest examples/ci/tests
"""
from __future__ import annotations

from pathlib import Path

import pytest

LAB = Path(__file__).resolve().parent.parent / "labs" / "web"


@pytest.fixture
def lab(netlab_lab):
    return netlab_lab(LAB)


def test_service_answers_from_a_pod_by_name(lab):
    backends = {p.meta.name for p in lab.pods_of(app="web")}
    assert len(backends) == 2
    # Through the pod's own resolver: the Service's name is its ClusterIP.
    assert lab.resolve("shell", "web.default.svc.cluster.local") == [lab.service("web").cluster_ip]
    replies = [lab.http("pod/shell", "svc/web", 80, "/hostname") for _ in range(10)]
    assert all(r.ok for r in replies), [r.error for r in replies if not r.ok]
    assert {r.body for r in replies} <= backends


def test_nodeport_from_outside_the_cluster(lab):
    node = lab.cluster.nodes[0]
    reply = lab.http("client", node.internal_ip, 30080, "/hostname")
    assert reply.ok and reply.body.startswith("web-"), reply


def test_kubernetes_networking_claims_hold(lab):
    lab.verify("pod-*", "service-clusterip", "nodeport-outside", "dns-*").assert_ok()
