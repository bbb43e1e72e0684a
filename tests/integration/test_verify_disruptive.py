"""The opt-in controller checks: they pass on a healthy lab in both proxy modes, and the
workload they build to break leaves no trace."""
from __future__ import annotations

import pytest

from netlab import engine
from netlab.probe import catalog
from netlab.probe.lab import LabView
from netlab.probe.result import Status

pytestmark = pytest.mark.root

LAB = """
apiVersion: netlab/v1
kind: Lab
metadata: {name: x}
spec: {nodes: 2, dns: false, proxyMode: %s}
---
apiVersion: v1
kind: Pod
metadata: {name: app}
spec:
  containers: [{name: c, image: example/app, ports: [{containerPort: 8080}]}]
"""


def test_disruptive_checks_are_opt_in():
    ids = {c.id for c in catalog.select()}
    assert not ids & {"rc-replaces-pod", "proxy-retry", "readiness-recovers"}
    assert {"rc-replaces-pod", "proxy-retry", "readiness-recovers"} <= {c.id for c in catalog.select(disruptive=True)}


@pytest.mark.parametrize("mode, ids", [
    ("iptables", ["rc-replaces-pod", "proxy-retry", "readiness-recovers"]),
    ("userspace", ["proxy-retry"]),
])
def test_controller_checks_pass_and_clean_up(make_lab, mode, ids):
    cluster = make_lab(manifests=LAB % mode)
    before = engine.load(cluster.name).to_state()["objects"]
    for chk in catalog.select(ids):
        result = chk.run(LabView.load(cluster.name))
        assert result.status == Status.PASS, f"{chk.id}: {result.summary}"
    after = engine.load(cluster.name)
    assert "netlab-verify" not in after.namespaces
    assert [o["metadata"]["name"] for o in after.to_state()["objects"]] == [o["metadata"]["name"] for o in before]
