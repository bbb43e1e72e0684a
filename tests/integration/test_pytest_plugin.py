"""The pytest plugin as a user's suite meets it (pytester): the netlab_lab fixture brings a lab
up, the handle's helpers assert on it, a test that fails on purpose and one interrupted with
Ctrl-C still leave nothing behind, and labs have unique names."""
from __future__ import annotations

import subprocess
import textwrap

import pytest

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.root

LAB = """
apiVersion: netlab/v1
kind: Lab
metadata: {name: demo}
spec: {nodes: 2, dns: false}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: example/web, ports: [{containerPort: 8080, name: http}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
"""


def _netns() -> set[str]:
    """The network namespaces of labs the plugin made (others' tests may run meanwhile)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip().startswith("netlab-pt")}


@pytest.fixture
def user_suite(pytester):
    lab = pytester.mkdir("labs") / "demo"
    lab.mkdir()
    (lab / "lab.yaml").write_text(LAB)
    return pytester


def test_a_users_suite_brings_a_lab_up_asserts_and_cleans_up(user_suite):
    user_suite.makepyfile(test_user=textwrap.dedent("""
        import pytest

        NAMES = []

        def test_service_answers(netlab_lab):
            lab = netlab_lab("labs/demo")
            NAMES.append(lab.name)
            pods = lab.pods_of(app="web")
            assert len(pods) == 2
            reply = lab.http(f"pod/{pods[0].meta.name}", "svc/web", 80, "/hostname")
            assert reply.ok and reply.body in {p.meta.name for p in pods}, reply
            assert lab.tcp(f"pod/{pods[0].meta.name}", pods[1].pod_ip, 8080)
            assert not lab.tcp("client", pods[0].pod_ip, 9, timeout=1)
            out = lab.exec(f"pod/{pods[0].meta.name}", "hostname")
            assert out.stdout.strip() == pods[0].meta.name
            assert lab.rollout("deployment/web", timeout=20).endswith("successfully rolled out")
            results = lab.verify("service-clusterip", "pod-cross-node")
            results.assert_ok()
            assert results and len(results.passed) == 2

        def test_fails_on_purpose(netlab_lab):
            lab = netlab_lab("labs/demo", nodes=1)
            NAMES.append(lab.name)
            pod = lab.pods_of(app="web")[0].meta.name
            assert lab.http(f"pod/{pod}", "svc/web", 80, "/hostname").body == "not this pod"

        def test_names_are_unique():
            assert len(set(NAMES)) == len(NAMES) == 2
            assert all(n.startswith("pt") for n in NAMES)
    """))
    before = _netns()
    result = user_suite.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*test_fails_on_purpose*", "*not this pod*"])
    assert _netns() <= before, _netns() - before


def test_ctrl_c_in_a_test_still_tears_the_lab_down(user_suite):
    user_suite.makepyfile(test_interrupted=textwrap.dedent("""
        import os, signal

        def test_interrupted(netlab_lab):
            lab = netlab_lab("labs/demo", nodes=1)
            print("LAB", lab.name, flush=True)
            os.kill(os.getpid(), signal.SIGINT)
    """))
    before = _netns()
    result = user_suite.runpytest_subprocess("-p", "no:cacheprovider", "-s", timeout=120)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert any("LAB pt" in line for line in result.outlines), result.outlines
    assert _netns() <= before, _netns() - before


def test_a_verify_failure_reads_as_one_line_per_check(user_suite):
    from netlab.pytest_plugin import VerifyResults
    from netlab.probe.result import CheckResult, Probe, Status
    results = VerifyResults([CheckResult("service-clusterip", "a Service answers", "docs", Status.FAIL,
                                         "expected 2 backends, saw 1",
                                         [Probe("client", "10.96.0.5:80", "GET /", "timeout", False)])])
    assert not results
    with pytest.raises(pytest.fail.Exception, match="FAIL service-clusterip: a Service answers -- expected 2"):
        results.assert_ok()
